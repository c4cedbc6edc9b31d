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

#[test]
fn postgres_example_loads_with_two_replicas_on_cloudnativepg_secrets() {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/postgres.yaml"
    ));
    let m = meridian_crds::manifest::load_files(&[path]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.regions.len(), 1);
    let sc = &m.regions[0].spec.service_center;
    assert_eq!(sc.replicas, 2);
    assert!(sc.on_postgres());
    assert_eq!(sc.storage, None);
    let postgres = sc.postgres().unwrap();
    assert_eq!(
        (postgres.secret_name.as_str(), postgres.key.as_str()),
        ("chat-db-app", "uri")
    );
    let tls = postgres.tls.as_ref().unwrap();
    assert_eq!(
        (tls.ca_secret_name.as_str(), tls.ca_key.as_str()),
        ("chat-db-ca", "ca.crt")
    );
}
