//! The reconciler against the fake API server of [`super::fixtures`]:
//! apply, status, errors and deletion, each in milliseconds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use meridian_crds::{Region, RegionLink, RegionStatus, manifest};
use meridian_node::mesh::MeshConfig;

use super::fixtures::{self, ApiServer};
use super::{Error, error_policy, reconcile};

const MANIFESTS: &str = "
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: eu, namespace: chat}
spec: {cluster: a}
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: us, namespace: chat}
spec: {cluster: a}
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: ap, namespace: chat}
spec: {cluster: b, peerEndpoint: 'roaming.ap.example.net:7443'}
---
apiVersion: meridian.dev/v1alpha1
kind: RegionLink
metadata: {name: eu-us, namespace: chat}
spec: {regions: [eu, us], cost: 7}
";

const NS: &str = "/namespaces/chat";
const EU: &str = "/apis/meridian.dev/v1alpha1/namespaces/chat/regions/eu";

/// The manifests' Regions and RegionLinks as the API server holds them.
fn objects() -> (Vec<Region>, Vec<RegionLink>) {
    let mut m = manifest::parse(&[(PathBuf::from("m.yaml"), MANIFESTS.to_owned())]).unwrap();
    for (i, region) in m.regions.iter_mut().enumerate() {
        region.metadata.uid = Some(format!("region-{i}"));
        region.metadata.generation = Some(1);
    }
    for link in &mut m.links {
        link.metadata.uid = Some("link".into());
        link.metadata.generation = Some(1);
    }
    (m.regions, m.links)
}

/// A fake API server holding `regions` and `links`, and a context whose
/// caches hold them too.
fn cluster(regions: &[Region], links: &[RegionLink]) -> (ApiServer, Arc<super::Context>) {
    let server = ApiServer::start();
    for region in regions {
        server.put(region);
    }
    for link in links {
        server.put(link);
    }
    let ctx = Arc::new(fixtures::context(server.client(), regions, links));
    (server, ctx)
}

fn eu(regions: &[Region]) -> Arc<Region> {
    Arc::new(regions[0].clone())
}

/// The status the fake API server holds for `path`.
fn status(server: &ApiServer, path: &str) -> RegionStatus {
    serde_json::from_value(server.get(path).unwrap()["status"].clone()).unwrap()
}

fn condition(status: &RegionStatus, type_: &str) -> (String, String) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {status:?}"));
    (c.status.clone(), c.reason.clone())
}

/// The reasons of the Events recorded, in order.
fn event_reasons(server: &ApiServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/events") && r.method == Method::POST)
        .map(|r| r.body["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_local_region_is_applied_from_the_caches_with_one_field_manager() {
    let started = std::time::Instant::now();
    let (regions, links) = objects();
    let (server, ctx) = cluster(&regions, &links);

    let action = reconcile(eu(&regions), ctx.clone()).await.unwrap();
    assert!(action != Action::await_change(), "requeued to renew");

    // Its identity first (the mesh CA made, then the Region's Secret), the
    // mesh configuration before the workloads that mount it, the peer
    // Service last, then the status and an Event.
    let writes = server.writes();
    let applied: Vec<&str> = writes
        .iter()
        .filter(|w| !w.contains("/events"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        applied,
        [
            format!("POST /api/v1{NS}/secrets").as_str(),
            &format!("PATCH /api/v1{NS}/secrets/eu-tls"),
            &format!("PATCH /api/v1{NS}/configmaps/eu-mesh"),
            &format!("PATCH /apis/networking.k8s.io/v1{NS}/networkpolicies/eu-meridian"),
            &format!("PATCH /api/v1{NS}/services/eu-service-center"),
            &format!("PATCH /api/v1{NS}/services/eu-roaming"),
            &format!("PATCH /apis/apps/v1{NS}/statefulsets/eu-service-center"),
            &format!("PATCH /apis/apps/v1{NS}/deployments/eu-roaming"),
            &format!("PATCH /api/v1{NS}/services/eu-roaming-peer"),
            &format!("PATCH {EU}/status"),
        ]
    );
    for write in server
        .requests()
        .iter()
        .filter(|r| r.method == Method::PATCH && !r.path.contains("/events/"))
    {
        assert!(
            write.query.contains("fieldManager=meridian-operator")
                && write.query.contains("force=true"),
            "server-side apply, one field manager: {} ?{}",
            write.path,
            write.query
        );
    }
    assert_eq!(event_reasons(&server), ["Reconciled"]);

    // The namespace came from the caches: no LIST of Regions or RegionLinks.
    let listed: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| {
            r.method == Method::GET
                && (r.path.ends_with("/regions") || r.path.ends_with("/regionlinks"))
        })
        .map(|r| r.line())
        .collect();
    assert_eq!(listed, Vec::<String>::new());
    let config_map = server
        .get(&format!("/api/v1{NS}/configmaps/eu-mesh"))
        .unwrap();
    let mesh = MeshConfig::from_yaml(config_map["data"]["mesh.yaml"].as_str().unwrap()).unwrap();
    let peers: Vec<(&str, &str, Option<u32>)> = mesh
        .peers
        .iter()
        .map(|p| (p.region.as_str(), p.endpoint.as_str(), p.cost))
        .collect();
    assert_eq!(
        peers,
        [
            ("ap", "https://roaming.ap.example.net:7443", None),
            ("us", "https://us-roaming.chat.svc:7443", Some(7)),
        ]
    );

    // Status: observed, applied, not Ready (kwok is not here: no pod runs).
    let written = status(&server, EU);
    assert_eq!(written.observed_generation, Some(1));
    assert_eq!(condition(&written, "MeshConfigured").0, "True");
    assert_eq!(condition(&written, "Ready").0, "False");
    println!(
        "one reconcile against the fake API server: {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_status_is_written_once_though_the_cache_has_not_seen_the_write() {
    let (regions, links) = objects();
    let (server, ctx) = cluster(&regions, &links);
    reconcile(eu(&regions), ctx.clone()).await.unwrap();
    let status_writes = |server: &ApiServer| {
        server
            .writes()
            .iter()
            .filter(|w| w.ends_with("/regions/eu/status"))
            .count()
    };
    assert_eq!(status_writes(&server), 1);

    // Again at once, with the Region as the cache still holds it (no
    // status): nothing new is written or recorded.
    reconcile(eu(&regions), ctx.clone()).await.unwrap();
    assert_eq!(status_writes(&server), 1, "{:#?}", server.writes());
    assert_eq!(event_reasons(&server), ["Reconciled"]);

    // And once the cache holds the written status, the same.
    let mut caught_up = regions[0].clone();
    caught_up.status = Some(status(&server, EU));
    reconcile(Arc::new(caught_up), ctx.clone()).await.unwrap();
    assert_eq!(status_writes(&server), 1);
    assert_eq!(event_reasons(&server), ["Reconciled"]);
}

#[tokio::test]
async fn a_failed_apply_is_an_error_with_a_status_and_a_warning() {
    let (regions, links) = objects();
    let (server, ctx) = cluster(&regions, &links);
    let sts = format!("/apis/apps/v1{NS}/statefulsets/eu-service-center");
    server.fail(Method::PATCH, &sts, 500);

    let region = eu(&regions);
    let err = reconcile(region.clone(), ctx.clone()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Apply { kind: "StatefulSet", name, .. } if name == "eu-service-center"),
        "{err}"
    );
    assert_eq!(err.metric_label(), "apply");
    assert_eq!(
        error_policy(region, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5)),
        "tried again soon"
    );
    let writes = server.writes();
    assert!(
        !writes
            .iter()
            .any(|w| w.contains("eu-roaming-peer") || w.contains("deployments")),
        "nothing after the failure is applied: {writes:#?}"
    );
    let written = status(&server, EU);
    assert_eq!(
        condition(&written, "Degraded"),
        ("True".to_owned(), "ApplyFailed".to_owned())
    );
    let degraded = written.conditions.iter().find(|c| c.type_ == "Degraded");
    assert!(
        degraded.is_some_and(|c| c
            .message
            .contains("cannot apply StatefulSet eu-service-center")),
        "{written:?}"
    );
    assert_eq!(event_reasons(&server), ["ApplyFailed"]);

    // The status cannot be written either: that error is the reconcile's.
    let (server, ctx) = cluster(&regions, &links);
    server.fail(Method::PATCH, &sts, 500);
    server.fail(Method::PATCH, &format!("{EU}/status"), 409);
    let err = reconcile(eu(&regions), ctx).await.unwrap_err();
    assert!(matches!(err, Error::Status { .. }), "{err}");
}

#[tokio::test]
async fn an_invalid_region_gets_a_status_and_a_warning_and_nothing_applied() {
    let (mut regions, links) = objects();
    regions[0].spec.service_center.replicas = 2;
    let (server, ctx) = cluster(&regions, &links);

    let region = eu(&regions);
    let err = reconcile(region.clone(), ctx.clone()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("spec.serviceCenter.replicas")),
        "{err}"
    );
    assert_eq!(
        error_policy(region, &err, ctx),
        Action::await_change(),
        "only a change of the spec helps"
    );
    let writes = server.writes();
    assert_eq!(
        writes
            .iter()
            .filter(|w| !w.contains("/events"))
            .collect::<Vec<_>>(),
        [&format!("PATCH {EU}/status")],
        "nothing applied"
    );
    assert_eq!(condition(&status(&server, EU), "Ready").0, "False");
    assert_eq!(event_reasons(&server), ["InvalidSpec"]);
}

#[tokio::test]
async fn a_region_being_deleted_or_of_another_cluster_is_left_alone() {
    let (mut regions, links) = objects();
    regions[0].metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    let (server, ctx) = cluster(&regions, &links);
    assert_eq!(
        reconcile(eu(&regions), ctx.clone()).await.unwrap(),
        Action::await_change()
    );
    let ap = Arc::new(regions[2].clone());
    assert_eq!(reconcile(ap, ctx).await.unwrap(), Action::await_change());
    assert!(server.requests().is_empty(), "{:#?}", server.requests());
}

#[tokio::test]
async fn a_deleted_region_leaves_the_mesh_of_the_others() {
    let (regions, links) = objects();
    let (server, ctx) = cluster(&regions, &links);
    reconcile(eu(&regions), ctx).await.unwrap();
    let peers = |server: &ApiServer| {
        let cm = server
            .get(&format!("/api/v1{NS}/configmaps/eu-mesh"))
            .unwrap();
        MeshConfig::from_yaml(cm["data"]["mesh.yaml"].as_str().unwrap())
            .unwrap()
            .peers
            .into_iter()
            .map(|p| p.region)
            .collect::<Vec<_>>()
    };
    assert_eq!(peers(&server), ["ap", "us"]);

    // us is deleted: gone from the cache (its watch saw the delete).
    let remaining = [regions[0].clone(), regions[2].clone()];
    let ctx = Arc::new(fixtures::context(server.client(), &remaining, &links));
    reconcile(eu(&regions), ctx).await.unwrap();
    assert_eq!(peers(&server), ["ap"]);
}

/// eu with its data center on PostgreSQL, `replicas` replicas.
fn eu_on_postgres(regions: &mut [Region], replicas: i32) {
    let sc = &mut regions[0].spec.service_center;
    sc.replicas = replicas;
    sc.data_center = Some(
        serde_yaml::from_str("{type: postgres, postgres: {secretName: chat-db-app}}").unwrap(),
    );
}

/// A workload `kind` (`statefulsets`, `deployments`,
/// `poddisruptionbudgets` or `services`) named eu-service-center,
/// controlled by `owner`, as the API server would hold it, with `ready`
/// ready pods.
fn workload(kind: &str, owner: &str, ready: i32) -> serde_json::Value {
    let (api_version, kind) = match kind {
        "statefulsets" => ("apps/v1", "StatefulSet"),
        "deployments" => ("apps/v1", "Deployment"),
        "services" => ("v1", "Service"),
        _ => ("policy/v1", "PodDisruptionBudget"),
    };
    serde_json::json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": "eu-service-center",
            "namespace": "chat",
            "uid": format!("{kind}-uid"),
            "ownerReferences": [{
                "apiVersion": "meridian.dev/v1alpha1", "kind": "Region", "name": "eu",
                "uid": owner, "controller": true,
            }],
        },
        "spec": {"selector": {"matchLabels": {"meridian.dev/region": "eu"}}, "template": {}},
        "status": {"readyReplicas": ready},
    })
}

#[tokio::test]
async fn moving_to_postgres_replaces_the_statefulset_with_a_deployment_and_its_budget() {
    let (mut regions, links) = objects();
    eu_on_postgres(&mut regions, 2);
    let (server, ctx) = cluster(&regions, &links);
    server.put(&workload("statefulsets", "region-0", 1));
    // The Deployment as a previous reconcile left it, its two pods ready.
    server.put(&workload("deployments", "region-0", 2));

    reconcile(eu(&regions), ctx.clone()).await.unwrap();
    let sts = format!("/apis/apps/v1{NS}/statefulsets/eu-service-center");
    let deployment = format!("/apis/apps/v1{NS}/deployments/eu-service-center");
    let budget = format!("/apis/policy/v1{NS}/poddisruptionbudgets/eu-service-center");
    let writes: Vec<String> = server
        .writes()
        .into_iter()
        .filter(|w| w.contains("eu-service-center") && !w.contains("/services/"))
        .collect();
    assert_eq!(
        writes,
        [
            format!("DELETE {sts}"),
            format!("PATCH {deployment}"),
            format!("PATCH {budget}"),
        ],
        "the StatefulSet goes before the Deployment is applied, the budget after it"
    );
    let delete = server
        .requests()
        .into_iter()
        .find(|r| r.method == Method::DELETE)
        .unwrap();
    assert_eq!(delete.body["propagationPolicy"], "Background");
    assert_eq!(delete.body["preconditions"]["uid"], "StatefulSet-uid");
    assert!(server.get(&sts).is_none());
    let applied = server.get(&deployment).unwrap();
    assert_eq!(applied["spec"]["replicas"], 2);
    assert!(server.get(&budget).is_some());
    // The replicas' headless Service, which the mesh configuration names.
    let pods = server
        .get(&format!("/api/v1{NS}/services/eu-service-center-pods"))
        .expect("the headless Service is applied");
    assert_eq!(pods["spec"]["clusterIP"], "None");

    // The status counts the Deployment's pods, and the switch is recorded.
    let written = status(&server, EU);
    assert_eq!(written.service_center.ready_replicas, 2);
    let ready = written
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.starts_with("service center 2/2 ready"),
        "{}",
        ready.message
    );
    assert_eq!(event_reasons(&server), ["DataCenterSwitched", "Reconciled"]);
    let note = server
        .requests()
        .into_iter()
        .find(|r| r.body["reason"] == "DataCenterSwitched")
        .unwrap()
        .body["note"]
        .clone();
    assert_eq!(
        note,
        "deleted StatefulSet eu-service-center: the data center is on PostgreSQL now (a Deployment); \
         the SQLite claims are kept"
    );

    // Again: nothing left to delete.
    reconcile(eu(&regions), ctx).await.unwrap();
    let deletes = server
        .requests()
        .iter()
        .filter(|r| r.method == Method::DELETE)
        .count();
    assert_eq!(deletes, 1);
}

#[tokio::test]
async fn moving_back_to_sqlite_deletes_the_budget_then_the_deployment() {
    let (regions, links) = objects();
    let (server, ctx) = cluster(&regions, &links);
    server.put(&workload("deployments", "region-0", 2));
    server.put(&workload("poddisruptionbudgets", "region-0", 0));
    // The replicas' headless Service goes with them.
    let mut pods_service = workload("services", "region-0", 0);
    pods_service["metadata"]["name"] = "eu-service-center-pods".into();
    pods_service["spec"] =
        serde_json::json!({"clusterIP": "None", "selector": {"meridian.dev/region": "eu"}});
    pods_service["status"] = serde_json::json!({});
    server.put(&pods_service);

    reconcile(eu(&regions), ctx).await.unwrap();
    let deletes: Vec<String> = server
        .writes()
        .into_iter()
        .filter(|w| w.starts_with("DELETE"))
        .collect();
    assert_eq!(
        deletes,
        [
            format!("DELETE /apis/policy/v1{NS}/poddisruptionbudgets/eu-service-center"),
            format!("DELETE /apis/apps/v1{NS}/deployments/eu-service-center"),
            format!("DELETE /api/v1{NS}/services/eu-service-center-pods"),
        ]
    );
    assert!(
        server
            .get(&format!("/apis/apps/v1{NS}/statefulsets/eu-service-center"))
            .is_some()
    );
    assert_eq!(event_reasons(&server), ["DataCenterSwitched", "Reconciled"]);
    let note = server
        .requests()
        .into_iter()
        .find(|r| r.body["reason"] == "DataCenterSwitched")
        .unwrap()
        .body["note"]
        .clone();
    assert_eq!(
        note,
        "deleted PodDisruptionBudget and Deployment eu-service-center and \
         Service eu-service-center-pods: the data center is on SQLite now (a StatefulSet of one pod)"
    );
    // No pod of the fake is ready: the StatefulSet's count, not the
    // Deployment's 2.
    assert_eq!(status(&server, EU).service_center.ready_replicas, 0);
}

#[tokio::test]
async fn a_workload_of_the_other_kind_that_the_region_does_not_control_is_left_alone() {
    let (mut regions, links) = objects();
    eu_on_postgres(&mut regions, 2);
    let (server, ctx) = cluster(&regions, &links);
    server.put(&workload("statefulsets", "someone-else", 1));

    reconcile(eu(&regions), ctx).await.unwrap();
    assert!(
        !server.writes().iter().any(|w| w.starts_with("DELETE")),
        "{:#?}",
        server.writes()
    );
    assert!(
        server
            .get(&format!("/apis/apps/v1{NS}/statefulsets/eu-service-center"))
            .is_some()
    );
}

#[tokio::test]
async fn a_failed_delete_is_an_apply_error_and_the_new_workload_waits() {
    let (mut regions, links) = objects();
    eu_on_postgres(&mut regions, 2);
    let (server, ctx) = cluster(&regions, &links);
    server.put(&workload("statefulsets", "region-0", 1));
    let sts = format!("/apis/apps/v1{NS}/statefulsets/eu-service-center");
    server.fail(Method::DELETE, &sts, 403);

    let err = reconcile(eu(&regions), ctx).await.unwrap_err();
    assert!(
        matches!(&err, Error::Delete { kind: "StatefulSet", name, .. } if name == "eu-service-center"),
        "{err}"
    );
    assert_eq!(err.metric_label(), "apply");
    assert!(
        !server
            .writes()
            .iter()
            .any(|w| w.contains("deployments/eu-service-center")),
        "no Deployment while the StatefulSet is still there: {:#?}",
        server.writes()
    );
    assert_eq!(event_reasons(&server), ["ApplyFailed"]);
}
