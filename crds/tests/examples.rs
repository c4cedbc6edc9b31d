//! The manifests in `examples/` must load, so that a newcomer can run them.

use std::path::PathBuf;

#[test]
fn three_regions_example_loads() {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/three-regions.yaml"
    ));
    let m = meridian_crds::manifest::load_files(&[path]).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = m
        .regions
        .iter()
        .map(|r| r.metadata.name.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(names, ["eu", "us", "ap"]);
    assert_eq!(m.namespace(), "chat");
    assert_eq!(m.links.len(), 1);
    assert_eq!(m.links[0].spec.pair(), Some(("eu", "us")));
    assert_eq!(m.links[0].spec.cost, Some(10));
}
