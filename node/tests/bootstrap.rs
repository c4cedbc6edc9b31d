//! The gRPC code under `src/gen/` is generated from `proto/` and committed, so
//! that building Meridian needs no protoc. This test regenerates it with the
//! vendored protoc and fails when the committed copy has drifted. So it does
//! for the client API's encoded descriptor set, which the client port's
//! server reflection serves (`src/reflection.rs`).
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
    // The client API alone, for reflection: only its code is generated
    // again (and thrown away), its descriptor set kept.
    let client_only = tempfile::tempdir().expect("temporary directory");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path().expect("vendored protoc"));
    tonic_prost_build::configure()
        .build_transport(true)
        .out_dir(client_only.path())
        .file_descriptor_set_path(fresh.path().join("meridian.client.v1.descriptor.bin"))
        .emit_rerun_if_changed(false)
        .compile_with_config(config, &protos[..1], &[root.join("proto")])
        .expect("client.proto compiles");

    let mut drifted = Vec::new();
    for entry in std::fs::read_dir(fresh.path()).expect("generated files") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().expect("file name").to_owned();
        let generated = std::fs::read(&path).expect("generated file");
        let target = committed.join(&name);
        if std::fs::read(&target).ok().as_deref() != Some(generated.as_slice()) {
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
