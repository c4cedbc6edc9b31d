//! A fake API server for the controller's tests, in the manner of
//! kube-rs/controller-rs's `fixtures.rs`: a `tower_test` mock service behind
//! a real `kube::Client`, answered by a task. Rather than a fixed script of
//! requests, the task keeps objects in memory the way the API server does
//! for what the operator does with them — server-side apply stores the
//! object, a status apply merges its status, a merge patch merges, GET
//! answers the object or 404, a GET of a collection lists it, POST creates,
//! DELETE removes (checking a uid precondition) —
//! and records every request. A test runs the reconciler against it and
//! asserts what was written, in milliseconds. [`ApiServer::fail`] makes
//! chosen requests fail as the API server would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use meridian_crds::{Region, RegionLink};
use serde_json::{Value, json};

use super::caches::Caches;
use super::metrics::Metrics;
use super::{Context, Settings, mesh_status, pki, written};

/// One request the operator made.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// Without the query.
    pub path: String,
    pub query: String,
    pub body: Value,
}

impl Recorded {
    /// `METHOD path`, for comparing sequences.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    /// (method, path, status code): requests answered with that error.
    failures: Vec<(Method, String, u16)>,
    resource_version: u64,
}

/// The fake API server; dropping it stops its task.
pub struct ApiServer {
    client: kube::Client,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiServer {
    /// Starts answering; [`ApiServer::client`] makes the requests.
    pub fn start() -> ApiServer {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let state = Arc::new(Mutex::new(State::default()));
        let answering = state.clone();
        let task = tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let recorded = Recorded {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    body,
                };
                let (status, answer) = answering.lock().unwrap().answer(recorded);
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                respond.send_response(response);
            }
        });
        let client = kube::Client::new(service, "default");
        ApiServer {
            client,
            state,
            task,
        }
    }

    /// A client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Stores `object` as the API server would hold it.
    pub fn put(&self, object: &impl serde::Serialize) {
        let object = serde_json::to_value(object).unwrap();
        self.lock().objects.insert(object_path(&object), object);
    }

    /// The object at `path`, if any.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Answers `method path` with `code` from now on.
    pub fn fail(&self, method: Method, path: &str, code: u16) {
        self.lock().failures.push((method, path.to_owned(), code));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Every request but reads, as `METHOD path`.
    pub fn writes(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.method != Method::GET)
            .map(Recorded::line)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

impl State {
    fn answer(&mut self, request: Recorded) -> (StatusCode, Value) {
        self.requests.push(request.clone());
        let Recorded {
            method, path, body, ..
        } = request;
        if let Some((_, _, code)) = self
            .failures
            .iter()
            .find(|(m, p, _)| *m == method && *p == path)
        {
            return failure(*code, &format!("injected failure of {method} {path}"));
        }
        self.resource_version += 1;
        let version = self.resource_version.to_string();
        match method {
            Method::GET if is_collection(&path) => {
                let prefix = format!("{path}/");
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|(p, _)| p.starts_with(&prefix) && !p[prefix.len()..].contains('/'))
                    .map(|(_, o)| o.clone())
                    .collect();
                let list = json!({"metadata": {"resourceVersion": version}, "items": items});
                (StatusCode::OK, list)
            }
            Method::GET => match self.objects.get(&path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => not_found(&path),
            },
            Method::POST => {
                let mut object = body;
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let path = format!("{path}/{name}");
                if self.objects.contains_key(&path) {
                    return failure(409, &format!("{path} already exists"));
                }
                stamp(&mut object, &version);
                self.objects.insert(path, object.clone());
                (StatusCode::CREATED, object)
            }
            Method::PATCH => {
                if let Some(owner) = path.strip_suffix("/status") {
                    let Some(object) = self.objects.get_mut(owner) else {
                        return not_found(owner);
                    };
                    object["status"] = body["status"].clone();
                    stamp(object, &version);
                    return (StatusCode::OK, object.clone());
                }
                let apply = body.get("apiVersion").is_some();
                let object = match (self.objects.get_mut(&path), apply) {
                    (Some(existing), _) => {
                        merge(existing, &body);
                        existing
                    }
                    // Server-side apply creates; a merge patch does not.
                    (None, true) => self.objects.entry(path).or_insert(body),
                    (None, false) => return not_found(&path),
                };
                stamp(object, &version);
                (StatusCode::OK, object.clone())
            }
            // A delete of one object, with its uid precondition.
            Method::DELETE => {
                let Some(object) = self.objects.get(&path) else {
                    return not_found(&path);
                };
                let wanted = &body["preconditions"]["uid"];
                if !wanted.is_null() && *wanted != object["metadata"]["uid"] {
                    return failure(409, &format!("{path}: precondition failed: uid {wanted}"));
                }
                (
                    StatusCode::OK,
                    self.objects.remove(&path).unwrap_or_default(),
                )
            }
            _ => failure(405, &format!("{method} is not faked")),
        }
    }
}

/// Where the API serves `object`.
fn object_path(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let plural = format!("{}s", kind.to_lowercase());
    let plural = plural.replace("policys", "policies");
    let group = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let meta = &object["metadata"];
    format!(
        "{group}/namespaces/{}/{plural}/{}",
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default()
    )
}

/// `/api/v1/namespaces/NS/RESOURCE` or `/apis/G/V/namespaces/NS/RESOURCE`.
fn is_collection(path: &str) -> bool {
    let segments = path.trim_start_matches('/').split('/').count();
    if path.starts_with("/api/") {
        segments == 5
    } else {
        segments == 6
    }
}

/// Gives `object` a uid (once) and `version`, as every write does.
fn stamp(object: &mut Value, version: &str) {
    let meta = &mut object["metadata"];
    if meta["uid"].is_null() {
        meta["uid"] = json!(format!("uid-{version}"));
    }
    meta["resourceVersion"] = json!(version);
}

/// JSON merge patch (RFC 7386), which is also how an apply of the same
/// fields by the one field manager comes out.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (key, value) in fields {
                if value.is_null() {
                    target.as_object_mut().unwrap().remove(key);
                } else {
                    merge(&mut target[key], value);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn not_found(path: &str) -> (StatusCode, Value) {
    failure(404, &format!("{path} not found"))
}

fn failure(code: u16, message: &str) -> (StatusCode, Value) {
    let reason = match code {
        404 => "NotFound",
        409 => "AlreadyExists",
        422 => "Invalid",
        _ => "InternalError",
    };
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), status)
}

/// A Context against `client`, whose caches hold `regions` and `links`
/// (synced), for cluster `a`.
pub(super) fn context(client: kube::Client, regions: &[Region], links: &[RegionLink]) -> Context {
    let caches = caches(regions, links);
    Context {
        client: client.clone(),
        written: written::Written::new(caches.regions.clone()),
        caches,
        settings: Settings {
            cluster: "a".into(),
            image: "example/node:1".into(),
        },
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "meridian-operator".into(),
                instance: Some("test".into()),
            },
        ),
        metrics: Arc::new(Metrics::default()),
        observations: mesh_status::Observations::default(),
        authorities: pki::Authorities::new(pki::Issuing {
            ca_secret: "meridian-mesh-ca".into(),
            lifetime: Duration::from_secs(24 * 60 * 60),
            issuer: None,
        }),
        node_log_level: None,
    }
}

/// Synced caches holding `regions` and `links`.
pub(super) fn caches(regions: &[Region], links: &[RegionLink]) -> Caches {
    let (region_store, mut region_writer) = reflector::store();
    let (link_store, mut link_writer) = reflector::store();
    region_writer.apply_watcher_event(&Event::Init);
    for region in regions {
        region_writer.apply_watcher_event(&Event::InitApply(region.clone()));
    }
    region_writer.apply_watcher_event(&Event::InitDone);
    link_writer.apply_watcher_event(&Event::Init);
    for link in links {
        link_writer.apply_watcher_event(&Event::InitApply(link.clone()));
    }
    link_writer.apply_watcher_event(&Event::InitDone);
    Caches::synced_with(region_store, link_store)
}
