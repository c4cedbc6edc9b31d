//! The Region and RegionLink manifest parser of local mode:
//! `meridian_crds::manifest::parse` on arbitrary text. A NUL character splits
//! the input into several files (at most four), read as one mesh.

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use meridian_crds::manifest::{self, ManifestError};
use meridian_crds::validate;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files: Vec<(PathBuf, String)> = text
        .splitn(4, '\0')
        .enumerate()
        .map(|(i, part)| (PathBuf::from(format!("fuzz-{i}.yaml")), part.to_owned()))
        .collect();
    match manifest::parse(&files) {
        Ok(manifests) => {
            // What parse accepts is valid, object by object and as a mesh.
            for region in &manifests.regions {
                assert!(validate::region(region).is_empty(), "{region:?}");
                assert!(region.metadata.namespace.is_some());
            }
            for link in &manifests.links {
                assert!(validate::region_link(link).is_empty(), "{link:?}");
                assert!(link.metadata.namespace.is_some());
            }
            assert!(validate::mesh(&manifests.regions, &manifests.links).is_empty());
            let _ = manifests.namespace();
        }
        Err(err) => {
            let message = err.to_string();
            assert!(!message.is_empty());
            if let ManifestError::Many(errors) = &err {
                assert!(errors.len() > 1);
            }
        }
    }
});
