//! The gRPC code under `src/gen/` is generated from `proto/` and committed, so
//! that building Meridian needs no protoc. This test regenerates it with the
//! vendored protoc and fails when the committed copy has drifted.
//!
//! To update after changing a .proto file: `MERIDIAN_BLESS=1 cargo test -p meridian-node --test bootstrap`.

use std::path::{Path, PathBuf};

#[test]
fn generated_code_matches_the_protos() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed = root.join("src/gen");
    let fresh = tempfile::tempdir().expect("temporary directory");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    let protos: Vec<PathBuf> = ["client", "pair", "peer"]
        .iter()
        .map(|name| root.join(format!("proto/meridian/{name}.proto")))
        .collect();
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_transport(true)
        .out_dir(fresh.path())
        .emit_rerun_if_changed(false)
        .compile_with_config(config, &protos, &[root.join("proto")])
        .expect("protos compile");

    let mut drifted = Vec::new();
    for entry in std::fs::read_dir(fresh.path()).expect("generated files") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().expect("file name").to_owned();
        let generated = std::fs::read_to_string(&path).expect("generated file");
        let target = committed.join(&name);
        if std::fs::read_to_string(&target).ok().as_deref() != Some(generated.as_str()) {
            if std::env::var_os("MERIDIAN_BLESS").is_some() {
                std::fs::create_dir_all(&committed).expect("src/gen");
                std::fs::write(&target, generated).expect("write generated file");
            } else {
                drifted.push(name.to_string_lossy().into_owned());
            }
        }
    }
    assert!(
        drifted.is_empty(),
        "generated gRPC code is out of date: {drifted:?}; run \
         `MERIDIAN_BLESS=1 cargo test -p meridian-node --test bootstrap` and commit src/gen/"
    );
}
