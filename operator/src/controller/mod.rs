//! The Kubernetes controller (`meridian-operator run`). For every Region of
//! its cluster it reconciles the paired workloads and the node configuration;
//! every other Region of the namespace is a peer in that configuration.
//!
//! Each reconcile is a pipeline: fetch the namespace's Regions and
//! RegionLinks from the watch caches ([`caches`]), validate, build the
//! desired objects (pure), apply them server-side, then write the status.

mod apply;
pub mod build;
mod caches;
pub mod cert_manager;
mod error;
#[cfg(test)]
mod fixtures;
mod health;
mod leader;
mod log_level;
pub mod mesh_status;
mod metrics;
pub mod nudge;
pub mod pki;
mod policy;
mod prune;
mod status;
mod storage;
#[cfg(test)]
mod tests;
mod written;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Service};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use meridian_crds::{Region, RegionLink, RegionStatus, validate};

pub use build::Settings;
pub use error::Error;
use metrics::Metrics;
use status::Outcome;

/// Arguments of `meridian-operator run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// This operator's cluster: it deploys the Regions whose spec.cluster matches.
    #[arg(long, env = "MERIDIAN_CLUSTER")]
    pub cluster: String,
    /// The meridian-node image for Regions that do not set their own.
    #[arg(long, env = "MERIDIAN_NODE_IMAGE", default_value = concat!("ghcr.io/meridian-dev/meridian-node:", env!("CARGO_PKG_VERSION")))]
    pub node_image: String,
    /// Only watch this namespace (default: all namespaces).
    #[arg(long, env = "MERIDIAN_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "MERIDIAN_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader with a Lease so that several replicas are safe.
    #[arg(long, env = "MERIDIAN_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// The namespace of the Lease (default: the pod's namespace, or "default").
    #[arg(long, env = "MERIDIAN_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's name in the Lease (default: the host name).
    #[arg(long, env = "MERIDIAN_IDENTITY")]
    pub identity: Option<String>,
    /// How often each local Region's roaming system is asked for its link state.
    #[arg(long, env = "MERIDIAN_LINK_POLL_MILLIS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub link_poll_millis: u64,
    /// Reach HOST at ADDR instead of resolving it (HOST=ADDR, repeatable), as in
    /// eu-roaming.chat.svc=127.0.0.1:7443: for an operator run outside the
    /// cluster that reaches the roaming Services through forwarded ports.
    #[arg(long = "resolve", env = "MERIDIAN_RESOLVE", value_delimiter = ',')]
    pub resolve: Vec<String>,
    /// The Secret holding the mesh CA in each namespace; created with a new
    /// CA when absent. Clusters of one mesh share it (copy it to each).
    #[arg(
        long,
        env = "MERIDIAN_MESH_CA_SECRET",
        default_value = "meridian-mesh-ca"
    )]
    pub mesh_ca_secret: String,
    /// Issue the Regions' identities (and the operator's own) from this
    /// cert-manager issuer instead of the CA Secret, which is then neither
    /// created nor read: KIND/NAME, as in Issuer/mesh-ca (an Issuer in each
    /// Region's namespace) or ClusterIssuer/mesh-ca. Clusters of one mesh
    /// need issuers backed by the same CA.
    #[arg(long, env = "MERIDIAN_MESH_ISSUER", value_parser = cert_manager::parse_issuer)]
    pub mesh_issuer: Option<(String, String)>,
    /// The API group of --mesh-issuer's kind.
    #[arg(long, env = "MERIDIAN_MESH_ISSUER_GROUP", default_value = cert_manager::DEFAULT_GROUP)]
    pub mesh_issuer_group: String,
    /// How long the certificates issued to Regions live; each is renewed
    /// once it has used a third of its life. At least 3600 with
    /// --mesh-issuer (cert-manager's shortest).
    #[arg(long, env = "MERIDIAN_CERT_LIFETIME_SECONDS", default_value_t = 24 * 60 * 60, value_parser = clap::value_parser!(u64).range(60..))]
    pub cert_lifetime_seconds: u64,
    /// The log filter of the node pods (RUST_LOG in their containers): a
    /// level such as info or debug, optionally with per-module levels, as
    /// in info,meridian_node=debug. Unset, the pods get none and log at info.
    /// (The operator's own comes from RUST_LOG.)
    #[arg(long, env = "MERIDIAN_NODE_LOG_LEVEL", value_parser = log_level::parse)]
    pub node_log_level: Option<String>,
}

struct Context {
    client: Client,
    caches: caches::Caches,
    /// Status writes the Region cache may not show yet.
    written: written::Written,
    settings: Settings,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    observations: mesh_status::Observations,
    authorities: pki::Authorities,
    /// `--node-log-level`.
    node_log_level: Option<String>,
}

/// Runs the controller until the process is stopped.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let resolver = mesh_status::Resolver::parse(&args.resolve)?;
    let lifetime = Duration::from_secs(args.cert_lifetime_seconds);
    let issuer = args
        .mesh_issuer
        .clone()
        .map(|(kind, name)| cert_manager::IssuerRef {
            kind,
            name,
            group: args.mesh_issuer_group.clone(),
        });
    if issuer.is_some() && lifetime < cert_manager::MIN_LIFETIME {
        anyhow::bail!(
            "--cert-lifetime-seconds is {}: with --mesh-issuer it must be at least {} (cert-manager refuses shorter Certificates)",
            args.cert_lifetime_seconds,
            cert_manager::MIN_LIFETIME.as_secs()
        );
    }
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {}", args.metrics_addr))?;
    tokio::spawn(metrics::serve(listener, metrics.clone()));
    let health = &metrics.health;

    let identity = args.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| format!("meridian-operator-{}", std::process::id()))
    });
    let election = args.leader_election.then(|| {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| {
                std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                    .ok()
            })
            .unwrap_or_else(|| "default".into());
        leader::LeaderElection::new(
            client.clone(),
            namespace.trim(),
            "meridian-operator",
            &identity,
            Duration::from_secs(15),
        )
    });
    if let Some(election) = &election {
        tokio::select! {
            () = election.acquire(health) => {}
            () = health.beating() => unreachable!("the beat never ends"),
        }
    }
    metrics
        .leading
        .store(true, std::sync::atomic::Ordering::Relaxed);
    health.leading();

    let (regions_api, links_api): (Api<Region>, Api<RegionLink>) = match &args.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let namespaced = |c: &Client| -> (
        Api<StatefulSet>,
        Api<Deployment>,
        Api<Service>,
        Api<ConfigMap>,
    ) {
        match &args.namespace {
            Some(ns) => (
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
            ),
            None => (
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
            ),
        }
    };
    let (statefulsets, deployments, services, config_maps) = namespaced(&client);
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=meridian-operator");

    // Bursts (50 Regions applied at once) collapse into one reconcile per
    // Region, and a few run at a time so the API server is not flooded.
    let config = kube::runtime::controller::Config::default()
        .debounce(Duration::from_millis(300))
        .concurrency(16);
    let (caches, watches) = caches::Caches::watch(regions_api, links_api);
    // Ready once both caches the reconciler reads have done their first
    // LIST, empty or not.
    let synced = async {
        if caches.synced().await.is_ok() {
            tracing::info!("caches synced; ready");
            health.synced();
        }
        std::future::pending::<()>().await;
    };
    let reporter = Reporter {
        controller: "meridian-operator".into(),
        instance: Some(identity.clone()),
    };
    let observations = mesh_status::Observations::default();
    match &issuer {
        Some(issuer) => tracing::info!(%issuer, "identities come from cert-manager"),
        None => {
            tracing::info!(secret = %args.mesh_ca_secret, "identities come from the mesh CA Secret")
        }
    }
    let authorities = pki::Authorities::new(pki::Issuing {
        ca_secret: args.mesh_ca_secret.clone(),
        lifetime,
        issuer,
    });
    let (link_states, changed_regions) = futures::channel::mpsc::unbounded();
    tokio::spawn(
        mesh_status::Poller {
            regions: caches.regions.clone(),
            cluster: args.cluster.clone(),
            resolver,
            observations: observations.clone(),
            interval: Duration::from_millis(args.link_poll_millis),
            changed: link_states,
            authorities: authorities.clone(),
        }
        .run(),
    );
    let context = Arc::new(Context {
        client: client.clone(),
        caches: caches.clone(),
        written: written::Written::new(caches.regions.clone()),
        settings: Settings {
            cluster: args.cluster.clone(),
            image: args.node_image.clone(),
        },
        recorder: Recorder::new(client.clone(), reporter),
        metrics: metrics.clone(),
        observations,
        authorities,
        node_log_level: args.node_log_level.clone(),
    });
    tracing::info!(cluster = %args.cluster, "reconciling the Regions of this cluster");

    // Every reconcile comes from a watch below: a Region changed; a Region
    // or RegionLink added, removed or given a new spec reshapes its
    // namespace's mesh (a status write does not: see `caches`); a workload
    // the operator owns changed; or a roaming system reported a new link
    // state.
    let namespace_of_region = caches.clone();
    let namespace_of_link = caches.clone();
    let controller = Controller::for_shared_stream(watches.regions, caches.regions.clone())
        .with_config(config)
        .watches_stream(watches.region_changes, move |region: Region| {
            // The Region itself too: during the first LIST the cache is
            // not filled yet.
            let mut refs = namespace_of_region.region_refs(region.namespace().as_deref());
            let own = ObjectRef::from_obj(&region);
            if !refs.contains(&own) {
                refs.push(own);
            }
            refs
        })
        .watches_stream(watches.link_changes, move |link: RegionLink| {
            namespace_of_link.region_refs(link.namespace().as_deref())
        })
        .owns(statefulsets, owned.clone())
        .owns(deployments, owned.clone())
        .owns(services, owned.clone())
        .owns(config_maps, owned)
        .reconcile_on(changed_regions)
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "reconcile did not complete");
            }
        });
    // The controller and its beat share one task: a controller that blocks
    // its thread stops the beat, and /healthz fails.
    let controller = async {
        tokio::select! {
            () = controller => {}
            () = health.beating() => unreachable!("the beat never ends"),
            () = synced => unreachable!("pending once synced"),
        }
        health.stopped();
    };
    match &election {
        Some(election) => {
            tokio::select! {
                () = controller => {
                    // Stopped (SIGTERM or Ctrl-C) with every reconcile
                    // done: hand the lease over now rather than leave the
                    // cluster without a leader until it expires.
                    metrics
                        .leading
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    election.release().await;
                }
                () = election.hold() => {
                    // Another replica may lead now: stop at once rather than write.
                    health.stopped();
                    anyhow::bail!("lost the leader lease; exiting so that only the leader writes");
                }
            }
        }
        None => controller.await,
    }
    Ok(())
}

async fn reconcile(region: Arc<Region>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_region(&region, &ctx).await;
    ctx.metrics.reconciled(
        started.elapsed().as_secs_f64(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

async fn reconcile_region(region: &Region, ctx: &Context) -> Result<Action, Error> {
    if region.spec.cluster != ctx.settings.cluster || region.meta().deletion_timestamp.is_some() {
        // A remote peer: its own cluster's operator deploys it.
        return Ok(Action::await_change());
    }
    let name = region.name_any();
    let namespace = region.namespace();
    // Fetch: the namespace's Regions and RegionLinks from the watch caches.
    // The change that caused this reconcile is in them (see `caches`); the
    // RegionLinks' may not have done their first LIST yet.
    let ns = namespace.clone().unwrap_or_default();
    ctx.caches.synced().await.map_err(|_| Error::Fetch {
        namespace: ns.clone(),
    })?;
    let (regions, links) = ctx.caches.namespace(&ns);
    // With the status this operator last wrote, which the cache may not
    // show yet: comparing with the one before would write and record the
    // same change twice.
    let region = &ctx.written.latest(region);

    // Validate.
    let valid = match build::ValidRegion::check(region) {
        Ok(valid) => valid,
        Err(violations) => {
            let message = violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            write_status(ctx, region, Outcome::Invalid(&message)).await?;
            event(ctx, region, EventType::Warning, "InvalidSpec", &message).await;
            return Err(Error::Invalid(message));
        }
    };
    // A mesh has at most MAX_REGIONS: the Regions created first are served,
    // a later one is refused here and left out of every region's mesh
    // configuration (docs/ARCHITECTURE.md §10).
    let beyond = validate::regions_beyond_limit(&regions);
    if let Some((_, position)) = beyond.iter().find(|(r, _)| r.uid() == region.uid()) {
        let message = validate::too_many_regions_message(&name, *position, regions.len(), &ns);
        write_status(ctx, region, Outcome::Invalid(&message)).await?;
        event(ctx, region, EventType::Warning, "TooManyRegions", &message).await;
        return Err(Error::Invalid(message));
    }
    let beyond: Vec<Option<String>> = beyond.iter().map(|(r, _)| r.uid()).collect();
    let regions: Vec<Region> = regions
        .iter()
        .filter(|r| !beyond.contains(&r.uid()))
        .cloned()
        .collect();

    // Build, then apply; the identity first, so the pods find it.
    let owner = region
        .controller_owner_ref(&())
        .expect("a Region from the API has a uid");
    let hosts = build::region_hosts(region, &ns);
    let identity = match ctx
        .authorities
        .ensure_region(&ctx.client, &ns, &name, &hosts, owner.clone())
        .await
    {
        Ok(identity) => identity,
        Err(err) => {
            let message = err.to_string();
            write_status(ctx, region, Outcome::Failed(&message)).await?;
            event(ctx, region, EventType::Warning, "IdentityFailed", &message).await;
            return Err(err);
        }
    };
    let mut desired = build::desired(valid, &regions, &links, &ctx.settings, owner);
    log_level::apply(&mut desired, ctx.node_log_level.as_deref());
    // The data volume first: it keeps the StatefulSet's claim template as
    // created, so the apply below never touches it, and grows the claims
    // where the spec asks and their class allows. A refused resize leaves
    // the claims alone and the rest of the Region is applied all the same.
    let storage = match desired.service_center.statefulset_mut() {
        Some(sts) => storage::check(&ctx.client, region, &ns, sts).await,
        // On PostgreSQL there is no volume (validation refuses `storage`).
        None => Ok(storage::Checked::no_volume()),
    };
    let storage = match storage {
        Ok(storage) => storage,
        Err(err) => return Err(failed(ctx, region, err).await),
    };
    for note in &storage.expanded {
        event(
            ctx,
            region,
            EventType::Normal,
            status::STORAGE_RESIZING,
            note,
        )
        .await;
    }
    let applied = match apply::apply_all(&ctx.client, &desired).await {
        Ok(applied) => applied,
        Err(err) => return Err(failed(ctx, region, err).await),
    };
    if let Some(note) = &applied.pruned {
        event(ctx, region, EventType::Normal, "DataCenterSwitched", note).await;
    }
    let observed = ctx.observations.get(&ObjectRef::from_obj(region));
    let (next, changed) = write_status(
        ctx,
        region,
        Outcome::Applied {
            applied: &applied,
            mesh: &desired.mesh,
            observed: &observed,
            storage: &storage.state,
            identity: &identity.certificate,
        },
    )
    .await?;
    if changed
        && let Some((warning, reason, note)) =
            status::storage_event(region.status.as_ref(), &storage.state)
    {
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        event(ctx, region, type_, reason, &note).await;
    }
    // Link changes have Events of their own.
    let reconciled = changed
        && region.status.as_ref().is_none_or(|before| {
            (&before.conditions, &before.service_center, &before.roaming)
                != (&next.conditions, &next.service_center, &next.roaming)
        });
    let changes = status::peer_changes(region.status.as_ref(), &next);
    for change in &changes {
        link_event(ctx, change, &name, &region.object_ref(&()), &regions).await;
    }
    write_link_statuses(ctx, &name, &regions, &links, &next, &changes).await?;
    if reconciled {
        let message = format!(
            "{} peers; service center {}/{} ready, roaming {}/{} ready",
            desired.mesh.peers.len(),
            applied.service_center_ready,
            applied.service_center_wanted,
            applied.roaming_ready,
            applied.roaming_wanted
        );
        event(ctx, region, EventType::Normal, "Reconciled", &message).await;
    }
    tracing::debug!(region = %name, "reconciled");
    let mut requeue = identity.recheck_in.min(Duration::from_secs(300));
    if matches!(
        storage.state,
        storage::StorageState::Resizing(_) | storage::StorageState::Refused(_)
    ) {
        // Claims and StorageClasses are not watched: look again soon.
        requeue = requeue.min(storage::RECHECK);
    }
    Ok(Action::requeue(requeue))
}

/// Writes a failed reconcile's status and Event (`ApplyFailed`), and
/// returns its error; or the error writing the status.
async fn failed(ctx: &Context, region: &Region, err: Error) -> Error {
    let message = err.to_string();
    if let Err(status_err) = write_status(ctx, region, Outcome::Failed(&message)).await {
        return status_err;
    }
    event(ctx, region, EventType::Warning, "ApplyFailed", &message).await;
    err
}

/// Builds the status and writes it when it differs; returns it and whether it
/// was written.
async fn write_status(
    ctx: &Context,
    region: &Region,
    outcome: Outcome<'_>,
) -> Result<(RegionStatus, bool), Error> {
    let next = status::status(
        region.meta().generation,
        outcome,
        region.status.as_ref(),
        Timestamp::now(),
    );
    if region.status.as_ref() == Some(&next) {
        return Ok((next, false));
    }
    apply::apply_status(&ctx.client, region, &next).await?;
    ctx.written.record(region, &next);
    Ok((next, true))
}

/// Copies `region`'s view of each RegionLink it observes (see
/// [`status::link_observer`]) into that RegionLink's status, with an Event
/// for each of `changes` on it.
async fn write_link_statuses(
    ctx: &Context,
    region: &str,
    regions: &[Region],
    links: &[RegionLink],
    status: &RegionStatus,
    changes: &[status::PeerChange],
) -> Result<(), Error> {
    let is_local = |code: &str| {
        regions
            .iter()
            .any(|r| r.name_any() == code && r.spec.cluster == ctx.settings.cluster)
    };
    for link in links {
        if status::link_observer(&link.spec, is_local) != Some(region) {
            continue;
        }
        let Some((a, b)) = link.spec.pair() else {
            continue;
        };
        let peer = if a == region { b } else { a };
        // Unreported, the link's status says nothing rather than something stale.
        let next = status
            .peers
            .iter()
            .find(|p| p.region == peer)
            .and_then(|p| status::link_status(region, p))
            .unwrap_or_default();
        if link.status.clone().unwrap_or_default() == next {
            continue;
        }
        apply::apply_status(&ctx.client, link, &next).await?;
        for change in changes.iter().filter(|c| c.peer == peer) {
            link_event(ctx, change, region, &link.object_ref(&()), regions).await;
        }
    }
    Ok(())
}

/// Records a link's change of state or path, seen from region `from`, about
/// `object` and related to the peer's Region: one Event series per link and
/// state, whose count grows each time the link enters that state again.
async fn link_event(
    ctx: &Context,
    change: &status::PeerChange,
    from: &str,
    object: &ObjectReference,
    regions: &[Region],
) {
    let event = Event {
        type_: if change.is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: change.reason().into(),
        note: Some(change.note(from)),
        action: "ObserveLink".into(),
        secondary: regions
            .iter()
            .find(|r| r.name_any() == change.peer)
            .map(|r| r.object_ref(&())),
    };
    record(ctx, &event, object).await;
}

async fn event(ctx: &Context, region: &Region, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    record(ctx, &event, &region.object_ref(&())).await;
}

async fn record(ctx: &Context, event: &Event, object: &ObjectReference) {
    if let Err(err) = ctx.recorder.publish(event, object).await {
        tracing::warn!(%err, "cannot record an event");
    }
}

fn error_policy(region: Arc<Region>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(region = %region.name_any(), %error, "reconcile failed");
    match error {
        Error::Invalid(_) => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}
