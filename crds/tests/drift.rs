//! The committed CRD YAML must be what the Rust types generate.

#[test]
fn committed_crds_match_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds.yaml");
    let committed =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let generated = meridian_crds::crd_yaml();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "crds/crds.yaml is out of date with the Rust types (first difference at line {}).\n\
             Regenerate it from the workspace root with:\n\n    \
             cargo run -p meridian-operator -- crd > crds/crds.yaml\n",
            line + 1
        );
    }
}

/// The Helm chart ships the same CRDs.
#[test]
fn the_charts_crds_match_the_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/meridian/crds/crds.yaml"
    );
    let shipped =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    assert!(
        shipped == meridian_crds::crd_yaml(),
        "charts/meridian/crds/crds.yaml differs from the Rust types. Regenerate it from the \
         workspace root with:\n\n    cargo run -p meridian-operator -- crd > charts/meridian/crds/crds.yaml\n"
    );
}
