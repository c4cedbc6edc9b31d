//! The watch caches the reconciler reads, instead of listing a namespace's
//! Regions and RegionLinks on every reconcile: one reflector store per kind,
//! each filled by one watch. The reconciles a change causes come from that
//! same watch, after the change is in the store, so a reconcile always finds
//! the change that caused it.
//!
//! Two kinds of reconcile come from them ([`Watches`]):
//! - every change of a Region (its spec, status or metadata) reconciles that
//!   Region, as a controller's own watch does; the Region cache is a shared
//!   store whose subscribers hear of each change once it is stored;
//! - a change that reshapes a namespace's mesh reconciles every Region of
//!   the namespace: a Region or RegionLink that appears, changes its spec
//!   (a new `metadata.generation`), or disappears. A status write changes no
//!   generation, so the statuses this operator writes cause no storm of
//!   reconciles. That is `kube::runtime`'s generation predicate, combined
//!   with one that tells a deleted object: a delete keeps the last
//!   generation, which the generation predicate alone would drop.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, Resource, ResourceExt};
use meridian_crds::{Region, RegionLink};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// The Regions and RegionLinks, as their watches last saw them.
#[derive(Clone)]
pub struct Caches {
    pub regions: Store<Region>,
    pub links: Store<RegionLink>,
    /// True once both have done their first LIST. A watch channel, which
    /// wakes every waiter: a store's own readiness wakes only the task that
    /// polled it last.
    synced: watch::Receiver<bool>,
}

/// The changes that reshape a mesh, as [`Caches::watch`] yields them.
pub type Changes<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// How many Region changes the shared store holds for its subscriber.
const SHARED_BUFFER: usize = 1024;

/// The streams that fill the caches and say what to reconcile; the
/// controller polls them.
pub struct Watches {
    /// Every Region stored (on any change, and all of them at the end of a
    /// LIST): each is reconciled.
    pub regions: ReflectHandle<Region>,
    /// The Regions that reshape their namespace's mesh.
    pub region_changes: Changes<Region>,
    /// The RegionLinks that reshape their namespace's mesh.
    pub link_changes: Changes<RegionLink>,
}

impl Caches {
    /// Starts nothing yet: returns the caches and the streams that fill
    /// them, to be polled.
    pub fn watch(regions: Api<Region>, links: Api<RegionLink>) -> (Self, Watches) {
        let (region_store, region_writer) = reflector::store_shared(SHARED_BUFFER);
        let stored = region_writer
            .subscribe()
            .expect("a shared store has subscribers");
        let (link_store, link_writer) = reflector::store();
        let (synced_tx, synced) = watch::channel(false);
        let first_lists = Arc::new(FirstLists {
            done: [AtomicBool::new(false), AtomicBool::new(false)],
            synced: synced_tx,
        });
        let region_changes = mesh_changes(events(regions), region_writer, first_lists.clone(), 0);
        let link_changes = mesh_changes(events(links), link_writer, first_lists, 1);
        let caches = Caches {
            regions: region_store,
            links: link_store,
            synced,
        };
        let watches = Watches {
            regions: stored,
            region_changes,
            link_changes,
        };
        (caches, watches)
    }

    /// Caches over `regions` and `links`, filled by the caller, taken as
    /// synced.
    #[cfg(test)]
    pub(super) fn synced_with(regions: Store<Region>, links: Store<RegionLink>) -> Self {
        Caches {
            regions,
            links,
            synced: watch::channel(true).1,
        }
    }

    /// Waits until both caches have done their first LIST, empty or not;
    /// fails if their watches were dropped before.
    pub async fn synced(&self) -> Result<(), watch::error::RecvError> {
        self.synced
            .clone()
            .wait_for(|synced| *synced)
            .await
            .map(drop)
    }

    /// The Regions and RegionLinks of `namespace`, each sorted by name as a
    /// LIST returns them (the first RegionLink of a pair sets the link).
    pub fn namespace(&self, namespace: &str) -> (Vec<Region>, Vec<RegionLink>) {
        (
            in_namespace(&self.regions, namespace),
            in_namespace(&self.links, namespace),
        )
    }

    /// Every cached Region of `namespace`, to reconcile.
    pub fn region_refs(&self, namespace: Option<&str>) -> Vec<ObjectRef<Region>> {
        self.regions
            .state_filter(|r| r.namespace().as_deref() == namespace)
            .iter()
            .map(|r| ObjectRef::from_obj(&**r))
            .collect()
    }
}

fn in_namespace<K>(store: &Store<K>, namespace: &str) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut objects: Vec<K> = store
        .state_filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .into_iter()
        .map(|o| (*o).clone())
        .collect();
    objects.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    objects
}

/// Which caches have done their first LIST.
struct FirstLists {
    done: [AtomicBool; 2],
    synced: watch::Sender<bool>,
}

impl FirstLists {
    fn done(&self, cache: usize) {
        self.done[cache].store(true, Ordering::Relaxed);
        if self.done.iter().all(|d| d.load(Ordering::Relaxed)) {
            self.synced
                .send_if_modified(|synced| !std::mem::replace(synced, true));
        }
    }

    fn is_done(&self, cache: usize) -> bool {
        self.done[cache].load(Ordering::Relaxed)
    }
}

/// The watch of every object of `api`.
fn events<K>(api: Api<K>) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(api, watcher::Config::default()).default_backoff()
}

/// Stores `events` in `writer` and yields the objects that appeared,
/// changed their spec, or were deleted.
fn mesh_changes<K>(
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    writer: reflector::store::Writer<K>,
    first_lists: Arc<FirstLists>,
    cache: usize,
) -> Changes<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    let deleted = Deleted {
        store: writer.as_reader(),
        first_lists: first_lists.clone(),
        cache,
    };
    // `reflector` also tells a shared store's subscribers.
    reflector::reflector(writer, events)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                first_lists.done(cache);
            }
        })
        .touched_objects()
        .predicate_filter(
            predicates::generation.combine(move |o: &K| deleted.hash(o)),
            Default::default(),
        )
        .boxed()
}

/// A predicate that tells a deleted object from the same object before: the
/// store drops an object as the watch reports its deletion, before the
/// object reaches the predicate. During the first LIST the store is not
/// filled yet, and nothing is taken for deleted.
struct Deleted<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    first_lists: Arc<FirstLists>,
    cache: usize,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Deleted<K> {
    fn hash(&self, object: &K) -> Option<u64> {
        let in_store = || {
            self.store
                .get(&ObjectRef::from_obj(object))
                .is_some_and(|cached| cached.meta().uid == object.meta().uid)
        };
        let deleted = self.first_lists.is_done(self.cache) && !in_store();
        Some(u64::from(deleted))
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;
    use kube::api::ObjectMeta;
    use meridian_crds::RegionSpec;

    use super::*;

    fn region(name: &str, uid: &str, generation: i64) -> Region {
        Region {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("chat".into()),
                uid: Some(uid.into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: serde_json::from_value::<RegionSpec>(serde_json::json!({"cluster": "a"}))
                .unwrap(),
            status: None,
        }
    }

    /// What the Region watch makes of `events`: the names of the Regions
    /// that reshape the mesh, the names of those stored (each reconciled),
    /// and whether the cache synced.
    async fn watched(events: Vec<watcher::Event<Region>>) -> (Vec<String>, Vec<String>, bool) {
        let (_, writer) = reflector::store_shared(SHARED_BUFFER);
        let stored = writer.subscribe().unwrap();
        let (synced_tx, synced) = watch::channel(false);
        let first_lists = Arc::new(FirstLists {
            // Only the Region cache here: the RegionLink one counts as done.
            done: [AtomicBool::new(false), AtomicBool::new(true)],
            synced: synced_tx,
        });
        let changes = mesh_changes(
            stream::iter(events.into_iter().map(Ok)),
            writer,
            first_lists,
            0,
        );
        let changed = changes.map(|r| r.unwrap().name_any()).collect().await;
        // The writer is gone with the stream: the subscriber ends too.
        let stored = stored.map(|r| r.name_any()).collect().await;
        let synced = *synced.borrow();
        (changed, stored, synced)
    }

    #[tokio::test]
    async fn new_changed_and_deleted_objects_pass_status_writes_do_not() {
        use watcher::Event::*;
        let mut status_written = region("eu", "1", 1);
        status_written.status = Some(Default::default());
        let (names, stored, synced) = watched(vec![
            Init,
            InitApply(region("eu", "1", 1)),
            InitApply(region("us", "2", 1)),
            InitDone,
            // eu's status: the same generation.
            Apply(status_written),
            // us's spec.
            Apply(region("us", "2", 2)),
            // A new Region.
            Apply(region("ap", "3", 1)),
            // eu deleted: the last generation, but gone from the store.
            Delete(region("eu", "1", 1)),
            // eu again, a new object under the old name.
            Apply(region("eu", "4", 1)),
        ])
        .await;
        assert_eq!(names, ["eu", "us", "us", "ap", "eu", "eu"]);
        assert!(synced, "the first LIST is done");
        // Each Region stored is reconciled, its status write too: all at
        // the end of the LIST (in any order), then each change but deletes.
        assert_eq!(stored.len(), 6, "{stored:?}");
        let mut listed = stored[..2].to_vec();
        listed.sort();
        assert_eq!(listed, ["eu", "us"]);
        assert_eq!(stored[2..], ["eu", "us", "ap", "eu"]);
    }

    #[tokio::test]
    async fn an_empty_first_list_syncs() {
        use watcher::Event::*;
        let (names, stored, synced) = watched(vec![Init, InitDone]).await;
        assert!(names.is_empty() && stored.is_empty());
        assert!(synced, "nothing to reconcile is synced all the same");
        let (_, _, synced) = watched(vec![Init]).await;
        assert!(!synced, "not before the LIST ends");
    }

    /// Unlike a store's own readiness, which wakes only the task that
    /// polled it last.
    #[tokio::test]
    async fn synced_wakes_every_waiter_in_every_task() {
        let (regions, _) = reflector::store();
        let (links, _) = reflector::store();
        let (synced_tx, synced) = watch::channel(false);
        let first_lists = FirstLists {
            done: [AtomicBool::new(false), AtomicBool::new(false)],
            synced: synced_tx,
        };
        let caches = Caches {
            regions,
            links,
            synced,
        };
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let caches = caches.clone();
                tokio::spawn(async move { caches.synced().await.is_ok() })
            })
            .collect();
        tokio::task::yield_now().await;
        first_lists.done(1);
        tokio::task::yield_now().await;
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "the Region cache has not synced"
        );
        first_lists.done(0);
        for waiter in waiters {
            let woke = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
            assert!(matches!(woke, Ok(Ok(true))), "{woke:?}");
        }
    }

    #[tokio::test]
    async fn a_relist_passes_only_what_changed_meanwhile() {
        use watcher::Event::*;
        let (names, _, _) = watched(vec![
            Init,
            InitApply(region("eu", "1", 1)),
            InitApply(region("us", "2", 1)),
            InitDone,
            // The watch lost its place and lists again: eu unchanged, us
            // changed, and ap new.
            Init,
            InitApply(region("eu", "1", 1)),
            InitApply(region("us", "2", 3)),
            InitApply(region("ap", "3", 1)),
            InitDone,
        ])
        .await;
        assert_eq!(names, ["eu", "us", "us", "ap"]);
    }
}
