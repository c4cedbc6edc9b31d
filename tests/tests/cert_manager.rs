//! Region identities from a cert-manager Issuer, on the control-plane rung:
//! a real cert-manager controller (v1.11.5, `tests/control-plane/build-cert-manager`)
//! runs against the test control plane, and the operator, installed with
//! the chart's `meshCA.issuerRef` and run as the chart's ServiceAccount,
//! asks it for every identity instead of keeping a CA of its own.
//!
//! kwok runs no containers, so, as in the link-state test of operator.rs,
//! the example's regions also run as processes in local mode, and the
//! operator reaches their roaming systems through `--resolve`. Their CA is
//! the one behind the cluster's Issuer, as for two clusters of one mesh:
//! the operator's link poller gets answers only with a tool identity that
//! cert-manager issued from it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use meridian_node::trust::credentials::Loaded;
use meridian_node::trust::pki::validity_of;
use meridian_node::trust::{Credentials, Identity, Verifier};
use meridian_tests::cert_manager::CertManager;
use meridian_tests::control_plane::ControlPlane;
use meridian_tests::local_mode::{LocalMode, binary, workspace_root};
use meridian_tests::operator::{Operator, RELEASE, RELEASE_NAMESPACE, service_account_kubeconfig};
use serde::Deserialize;
use serde_json::Value;
use x509_parser::extensions::GeneralName;

const NS: &str = "chat";
const REGIONS: [&str; 3] = ["eu", "us", "ap"];

fn get_json(cluster: &ControlPlane, args: &[&str]) -> Option<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = cluster.kubectl(&all);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("kubectl prints JSON"))
}

fn exists(cluster: &ControlPlane, object: &str) -> bool {
    cluster.kubectl(&["get", object, "-n", NS]).status.success()
}

/// A condition of Region `region`: (status, reason, message).
fn condition(
    cluster: &ControlPlane,
    region: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let region = get_json(cluster, &["region", region, "-n", NS])?;
    let c = region["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?
        .clone();
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str()?.to_owned(),
    ))
}

fn wait(
    cluster: &ControlPlane,
    cert_manager: &CertManager,
    what: &str,
    secs: u64,
    check: impl FnMut() -> bool,
) {
    match cluster.wait_until(what, Duration::from_secs(secs), check) {
        Ok(took) => println!("{what} after {took:?}"),
        Err(e) => {
            let log = cert_manager.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "{e}\n{}\n---- cert-manager (last lines, newest first)\n{}",
                cluster.log_tails(20),
                tail.join("\n")
            );
        }
    }
}

fn secret(cluster: &ControlPlane, name: &str) -> Option<Secret> {
    get_json(cluster, &["secret", name, "-n", NS]).map(|s| serde_json::from_value(s).unwrap())
}

fn text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// The chart, installed with `meshCA.issuerRef` naming Issuer `mesh-ca`.
fn install_chart(cluster: &ControlPlane) {
    let chart = workspace_root().join("charts/meridian");
    cluster
        .helm_ok(&[
            "install",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--set",
            "cluster=default",
            "--set",
            "meshCA.issuerRef.name=mesh-ca",
        ])
        .unwrap();
    cluster
        .wait_crds_established(&meridian_tests::operator::MERIDIAN_CRDS)
        .unwrap();
}

/// The CA keypair Secret and the `CA` Issuer on it, in the mesh namespace.
fn install_issuer(cluster: &ControlPlane, cert: &Path, key: &Path) {
    cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "tls",
            "mesh-ca",
            "-n",
            NS,
            &format!("--cert={}", cert.display()),
            &format!("--key={}", key.display()),
        ])
        .unwrap();
    cluster
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: cert-manager.io/v1\nkind: Issuer\nmetadata: {{name: mesh-ca, namespace: {NS}}}\nspec:\n  ca: {{secretName: mesh-ca}}\n"
            ),
        )
        .unwrap();
}

/// Checks Region `region`'s identity Secret: issued by cert-manager for
/// Certificate `<region>-tls` from Issuer mesh-ca, chaining to the mesh CA
/// (`mesh_ca`, read from local mode's files, not from the Secret), and
/// naming what the operator's own issuance names.
fn check_region_identity(identity: &Secret, region: &str, mesh_ca: &str) {
    let annotations = identity.metadata.annotations.clone().unwrap_or_default();
    let name = format!("{region}-tls");
    assert_eq!(
        annotations.get("cert-manager.io/certificate-name"),
        Some(&name)
    );
    assert_eq!(
        annotations
            .get("cert-manager.io/issuer-name")
            .map(String::as_str),
        Some("mesh-ca")
    );
    assert_eq!(
        annotations
            .get("cert-manager.io/issuer-kind")
            .map(String::as_str),
        Some("Issuer")
    );
    assert_eq!(
        identity.metadata.labels.clone().unwrap_or_default()["meridian.dev/region"],
        region,
        "the Certificate's secretTemplate labels the Secret"
    );
    assert_eq!(text(identity, "ca.crt").trim(), mesh_ca.trim());

    // The pods' loader takes it: a PKCS#8 ECDSA P-256 key that belongs to
    // the certificate, which names the region.
    let (cert, key) = (text(identity, "tls.crt"), text(identity, "tls.key"));
    let loaded = Loaded::from_pem(mesh_ca, &cert, &key).unwrap();
    assert_eq!(loaded.identity, Identity::Region(region.into()));
    // And the mesh CA vouches for it, as a peer's verifier sees it.
    let verifier = Verifier::new(Credentials::fixed(
        Loaded::from_pem(mesh_ca, &cert, &key).unwrap(),
    ));
    assert_eq!(
        verifier.certificate(loaded.certificate()).unwrap(),
        Identity::Region(region.into())
    );

    // What MeshCa::issue_region would have put in it.
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
    let x509 = pem.parse_x509().unwrap();
    let cn: Vec<&str> = x509
        .subject()
        .iter_common_name()
        .map(|a| a.as_str().unwrap())
        .collect();
    let o: Vec<&str> = x509
        .subject()
        .iter_organization()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!((cn, o), (vec![region], vec![NS]));
    let mut dns = Vec::new();
    let mut uris = Vec::new();
    for general in &x509
        .subject_alternative_name()
        .unwrap()
        .expect("SANs")
        .value
        .general_names
    {
        match general {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::URI(u) => uris.push(u.to_string()),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    dns.sort();
    let mut expected = vec![
        format!("{region}.region.meridian"),
        format!("{region}-roaming.{NS}.svc"),
        format!("{region}-service-center.{NS}.svc"),
    ];
    expected.sort();
    assert_eq!(dns, expected);
    assert_eq!(uris, [format!("spiffe://meridian/ns/{NS}/region/{region}")]);
    let eku = x509.extended_key_usage().unwrap().expect("EKU").value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = x509.key_usage().unwrap().expect("key usage").value;
    assert!(ku.digital_signature());
    let (start, end) = validity_of(&cert).unwrap();
    assert_eq!(end - start, 86400, "the chart's certLifetimeSeconds");
}

/// cert-manager issues every local Region's identity and the operator's
/// own; the operator makes no CA, the Regions say their identity is issued,
/// and the link poller reaches the roaming systems with the issued tool
/// identity. A Region deleted takes its Certificate and Secret along.
#[test]
fn a_cert_manager_issuer_issues_every_identity_the_operator_uses() {
    // The mesh's regions as processes, with their CA in state/pki.
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("three-regions.yaml");
    let example =
        std::fs::read_to_string(workspace_root().join("examples/three-regions.yaml")).unwrap();
    std::fs::write(&manifest, &example).unwrap();
    let _local = LocalMode::start(std::slice::from_ref(&manifest), &dir.path().join("state"));
    let endpoints: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/endpoints.json")).unwrap())
            .unwrap();
    let pki = dir.path().join("state/pki");
    let (ca_cert, ca_key) = (pki.join("ca.crt"), pki.join("ca.key"));
    let mesh_ca = std::fs::read_to_string(&ca_cert).unwrap();

    // 1. A control plane, cert-manager, and a CA Issuer on the mesh CA.
    let cluster = ControlPlane::start().expect("a control plane");
    let cert_manager = CertManager::install(&cluster).expect("cert-manager");
    install_chart(&cluster);
    cluster.kubectl_ok(&["create", "namespace", NS]).unwrap();
    install_issuer(&cluster, &ca_cert, &ca_key);
    wait(&cluster, &cert_manager, "Issuer mesh-ca Ready", 60, || {
        get_json(&cluster, &["issuer", "mesh-ca", "-n", NS]).is_some_and(|i| {
            i["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    });

    // 2. The operator as the chart's ServiceAccount, with the chart's
    // RBAC for an issuerRef (Certificates, and Secrets only read).
    let mut args = vec![
        "--link-poll-millis".to_owned(),
        "500".to_owned(),
        "--mesh-issuer".to_owned(),
        "Issuer/mesh-ca".to_owned(),
    ];
    for region in REGIONS {
        let peer = endpoints["regions"][region]["peer"].as_str().unwrap();
        args.push("--resolve".into());
        args.push(format!(
            "{region}-roaming.{NS}.svc={}",
            peer.trim_start_matches("https://")
        ));
    }
    let kubeconfig = service_account_kubeconfig(&cluster).unwrap();
    let operator =
        Operator::start_with(&kubeconfig, "default", "issuer", &cluster.log_dir(), &args);
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], &example)
        .unwrap();
    // A Region of another cluster: its own operator asks for its identity.
    cluster
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: sa, namespace: {NS}}}\nspec:\n  cluster: elsewhere\n  peerEndpoint: https://sa.example.net:7443\n"
            ),
        )
        .unwrap();

    // 3. Each local Region's Secret is cert-manager's, and right.
    wait(
        &cluster,
        &cert_manager,
        "every local Region's Secret issued by cert-manager",
        90,
        || {
            REGIONS.iter().all(|r| {
                secret(&cluster, &format!("{r}-tls")).is_some_and(|s| {
                    s.metadata
                        .annotations
                        .unwrap_or_default()
                        .contains_key("cert-manager.io/certificate-name")
                })
            })
        },
    );
    for region in REGIONS {
        let identity = secret(&cluster, &format!("{region}-tls")).unwrap();
        check_region_identity(&identity, region, &mesh_ca);
        let certificate = get_json(
            &cluster,
            &["certificate", &format!("{region}-tls"), "-n", NS],
        )
        .unwrap();
        assert_eq!(
            certificate["metadata"]["ownerReferences"][0]["kind"],
            "Region"
        );
        assert_eq!(certificate["spec"]["duration"], "86400s");
        assert_eq!(
            certificate["spec"]["renewBefore"], "57600s",
            "renewed once a third of its life is used, as the operator's own"
        );
    }
    assert!(
        !exists(&cluster, "certificate/sa-tls"),
        "a remote Region's identity is its own cluster's business"
    );
    assert!(
        !exists(&cluster, "secret/meridian-mesh-ca"),
        "with an issuer the operator makes no CA"
    );

    // 4. The Regions say so.
    wait(
        &cluster,
        &cert_manager,
        "IdentityIssued=True on every local Region",
        30,
        || {
            REGIONS.iter().all(|r| {
                condition(&cluster, r, "IdentityIssued").is_some_and(|(status, reason, _)| {
                    status == "True" && reason == "CertManagerIssued"
                })
            })
        },
    );

    // 5. The operator's tool identity is issued too, and the link poller
    // uses it: the roaming systems, which trust only the mesh CA, answer.
    let tool = secret(&cluster, "meridian-operator-tool").expect("the tool Secret");
    assert_eq!(
        tool.metadata.annotations.clone().unwrap_or_default()["cert-manager.io/certificate-name"],
        "meridian-operator-tool"
    );
    let tool_credentials =
        Loaded::from_pem(&mesh_ca, &text(&tool, "tls.crt"), &text(&tool, "tls.key")).unwrap();
    assert_eq!(
        tool_credentials.identity,
        Identity::Admin("operator".into())
    );
    wait(
        &cluster,
        &cert_manager,
        "LinkStateKnown=True on every local Region",
        60,
        || {
            REGIONS.iter().all(|r| {
                condition(&cluster, r, "LinkStateKnown").is_some_and(|(status, reason, _)| {
                    status == "True" && reason == "LinkStateReported"
                })
            })
        },
    );
    assert!(
        operator
            .log_text()
            .contains("read the tool certificate cert-manager issued"),
        "{}",
        operator.log_text()
    );

    // 6. A Region deleted takes its Certificate along (owner reference), and
    // cert-manager's owner reference on the Secret takes the Secret.
    cluster
        .kubectl_ok(&["delete", "region", "ap", "-n", NS])
        .unwrap();
    // (The garbage collector notices a new kind like Certificate at its
    // periodic resync of the API's resources, every 30 s.)
    wait(
        &cluster,
        &cert_manager,
        "ap's Certificate and Secret collected",
        120,
        || !exists(&cluster, "certificate/ap-tls") && !exists(&cluster, "secret/ap-tls"),
    );
}

/// The chart's `meshCA.issuerRef`: the operator's flag and environment, the
/// RBAC it needs (Certificates written, Secrets only read) and only then,
/// and the schema's refusals; the operator refuses a lifetime cert-manager
/// would.
#[test]
fn the_charts_issuer_ref_reaches_the_operator_with_just_the_rbac_it_needs() {
    let helm = meridian_tests::control_plane::build()
        .expect("the control plane's binaries")
        .join("helm");
    let template = |args: &[&str]| {
        Command::new(&helm)
            .args(["template", "x"])
            .arg(workspace_root().join("charts/meridian"))
            .args(args)
            .output()
            .unwrap()
    };
    let render = |args: &[&str]| -> Vec<Value> {
        let out = template(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect()
    };
    let env = |objects: &[Value]| -> serde_json::Map<String, Value> {
        let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].clone()))
            .collect()
    };
    // (resource, verbs) of every rule of the operator's main role.
    let rules = |objects: &[Value]| -> Vec<(String, Value)> {
        let role = objects
            .iter()
            .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == "x-operator")
            .unwrap();
        let mut out = Vec::new();
        for rule in role["rules"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                let group = rule["apiGroups"][0].as_str().unwrap();
                out.push((
                    format!("{}.{group}", resource.as_str().unwrap()),
                    rule["verbs"].clone(),
                ));
            }
        }
        out
    };
    let verbs = |rules: &[(String, Value)], resource: &str| -> Vec<Value> {
        rules
            .iter()
            .filter(|(r, _)| r == resource)
            .map(|(_, v)| v.clone())
            .collect()
    };

    let plain = render(&[]);
    assert!(!env(&plain).contains_key("MERIDIAN_MESH_ISSUER"));
    let plain_rules = rules(&plain);
    assert_eq!(
        verbs(&plain_rules, "certificates.cert-manager.io"),
        Vec::<Value>::new()
    );
    assert_eq!(
        verbs(&plain_rules, "secrets."),
        [serde_json::json!(["get", "create", "patch"])]
    );

    let issuer = render(&["--set", "meshCA.issuerRef.name=mesh-ca"]);
    let issuer_env = env(&issuer);
    assert_eq!(issuer_env["MERIDIAN_MESH_ISSUER"], "Issuer/mesh-ca");
    assert_eq!(issuer_env["MERIDIAN_MESH_ISSUER_GROUP"], "cert-manager.io");
    let issuer_rules = rules(&issuer);
    assert_eq!(
        verbs(&issuer_rules, "certificates.cert-manager.io"),
        [serde_json::json!(["create", "patch"])]
    );
    assert_eq!(
        verbs(&issuer_rules, "secrets."),
        [serde_json::json!(["get"])],
        "cert-manager writes the identities; the operator only reads its own"
    );
    for (_, verbs) in &issuer_rules {
        assert!(!verbs.as_array().unwrap().contains(&Value::from("*")));
    }

    let cluster_issuer = env(&render(&[
        "--set",
        "meshCA.issuerRef.name=mesh-ca",
        "--set",
        "meshCA.issuerRef.kind=ClusterIssuer",
        "--set",
        "meshCA.issuerRef.group=example.io",
    ]));
    assert_eq!(
        cluster_issuer["MERIDIAN_MESH_ISSUER"],
        "ClusterIssuer/mesh-ca"
    );
    assert_eq!(cluster_issuer["MERIDIAN_MESH_ISSUER_GROUP"], "example.io");

    for (args, named) in [
        (vec!["--set", "meshCA.issuerRef.kind=Issuer"], "issuerRef"),
        (
            vec![
                "--set",
                "meshCA.issuerRef.name=x",
                "--set",
                "meshCA.issuerRef.kind=Vault",
            ],
            "kind",
        ),
        (vec!["--set", "meshCA.issuerRef.name=Mesh_CA"], "name"),
        (
            vec![
                "--set",
                "meshCA.issuerRef.name=x",
                "--set",
                "meshCA.certLifetimeSeconds=600",
            ],
            "certLifetimeSeconds",
        ),
    ] {
        let refused = template(&args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(named), "the schema names {named}: {stderr}");
    }

    // The operator refuses what the chart refuses, before any cluster.
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(binary("meridian-operator"))
            .args(["run", "--cluster", "x"])
            .args(extra)
            .env("KUBECONFIG", dir.path().join("none"))
            .env_remove("MERIDIAN_MESH_ISSUER")
            .output()
            .unwrap()
    };
    let bad_kind = run(&["--mesh-issuer", "Vault/x"]);
    assert_eq!(bad_kind.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_kind.stderr).contains("Issuer or ClusterIssuer"));
    let short = run(&[
        "--mesh-issuer",
        "Issuer/x",
        "--cert-lifetime-seconds",
        "600",
    ]);
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(!short.status.success());
    assert!(stderr.contains("at least 3600"), "{stderr}");
}
