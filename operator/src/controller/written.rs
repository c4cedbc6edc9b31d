//! The Region statuses this operator wrote that the Region cache may not
//! show yet.
//!
//! A reconcile reads its Region from the watch cache, which learns of a
//! status write only when the watch delivers it: milliseconds later, or
//! seconds on a busy API server. A reconcile of the same Region that runs
//! in between (a link change right after, say) would compare its status
//! with the one from before the write, write the same status again, and
//! record its Events twice. So each write is remembered with the status it
//! replaced, and while the cache still shows that one, reconciles see the
//! written status instead. Once the cache shows anything else (the write, or
//! a later change), the cache is right and the memory is dropped.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::reflector::{ObjectRef, Store};
use meridian_crds::{Region, RegionStatus};

pub struct Written {
    regions: Store<Region>,
    writes: Mutex<HashMap<ObjectRef<Region>, Write>>,
}

struct Write {
    uid: Option<String>,
    before: Option<RegionStatus>,
    after: RegionStatus,
}

impl Written {
    /// Remembers writes to the Regions of `regions`, and no others.
    pub fn new(regions: Store<Region>) -> Self {
        Self {
            regions,
            writes: Mutex::new(HashMap::new()),
        }
    }

    /// `status` was written over `region`'s (as the reconcile read it).
    pub fn record(&self, region: &Region, status: &RegionStatus) {
        let mut writes = self.lock();
        // Bounded by the cached Regions: a deleted one is forgotten.
        writes.retain(|key, _| self.regions.get(key).is_some());
        writes.insert(
            ObjectRef::from_obj(region),
            Write {
                uid: region.metadata.uid.clone(),
                before: region.status.clone(),
                after: status.clone(),
            },
        );
    }

    /// `cached`, with the status this operator last wrote if the cache
    /// still shows the one that write replaced.
    pub fn latest(&self, cached: &Region) -> Region {
        let mut region = cached.clone();
        let key = ObjectRef::from_obj(cached);
        let mut writes = self.lock();
        match writes.get(&key) {
            Some(write) if write.uid == cached.metadata.uid && write.before == cached.status => {
                region.status = Some(write.after.clone());
            }
            Some(_) => {
                writes.remove(&key);
            }
            None => {}
        }
        region
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<Region>, Write>> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    use super::*;

    fn region(uid: &str, status: Option<RegionStatus>) -> Region {
        Region {
            metadata: ObjectMeta {
                name: Some("eu".into()),
                namespace: Some("chat".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: serde_json::from_value(serde_json::json!({"cluster": "a"})).unwrap(),
            status,
        }
    }

    fn status(generation: i64) -> RegionStatus {
        RegionStatus {
            observed_generation: Some(generation),
            ..Default::default()
        }
    }

    #[test]
    fn a_write_shows_until_the_cache_catches_up_then_the_cache_rules() {
        let (store, mut writer) = reflector::store();
        let old = region("1", Some(status(1)));
        writer.apply_watcher_event(&Event::Apply(old.clone()));
        let written = Written::new(store);

        assert_eq!(written.latest(&old), old, "nothing written yet");
        written.record(&old, &status(2));
        assert_eq!(
            written.latest(&old).status,
            Some(status(2)),
            "the cache is behind"
        );
        let caught_up = region("1", Some(status(2)));
        assert_eq!(written.latest(&caught_up), caught_up);
        assert_eq!(
            written.latest(&old),
            old,
            "forgotten once the cache caught up: an old status now is a later change"
        );
    }

    #[test]
    fn another_object_under_the_name_is_not_mixed_up_and_a_deleted_region_is_forgotten() {
        let (store, mut writer) = reflector::store();
        let old = region("1", None);
        writer.apply_watcher_event(&Event::Apply(old.clone()));
        let written = Written::new(store);
        written.record(&old, &status(1));
        let recreated = region("2", None);
        assert_eq!(written.latest(&recreated), recreated);

        let mut us = region("3", None);
        us.metadata.name = Some("us".into());
        writer.apply_watcher_event(&Event::Apply(us.clone()));
        written.record(&old, &status(1));
        writer.apply_watcher_event(&Event::Delete(old.clone()));
        written.record(&us, &status(1));
        let kept: Vec<ObjectRef<Region>> = written.lock().keys().cloned().collect();
        assert_eq!(kept, [ObjectRef::from_obj(&us)], "eu is no longer cached");
    }
}
