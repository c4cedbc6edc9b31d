//! The operator's liveness (`/healthz`) and readiness (`/readyz`).
//!
//! - **Live**: the task that runs the controller (or waits for the Lease)
//!   beats every [`BEAT`]; `/healthz` fails once no beat came for
//!   [`STALE_AFTER`], or after the controller stopped. A wedged loop gets
//!   the pod restarted.
//! - **Ready**: live, and either leading with the controller running and the
//!   Region cache synced (its first LIST done), or a standby replica waiting
//!   for the Lease. A standby is ready by choice: it is healthy and takes
//!   over as soon as the Lease is free, and an unready standby would hold a
//!   rollout of two replicas forever. A leader whose caches are not synced
//!   yet, a replica still starting, and a stopped controller are not ready.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the controller's task beats.
pub const BEAT: Duration = Duration::from_secs(2);
/// How long without a beat before the operator is not live.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// Where the replica is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Started, not yet leading nor standing by.
    Starting,
    /// Another replica holds the Lease; this one waits.
    Standby,
    /// Leading: the controller runs; `synced` says whether its Region cache
    /// has done its first LIST.
    Leading { synced: bool },
    /// The controller stopped (signal, or the Lease lost).
    Stopped,
}

pub struct Health {
    state: Mutex<(Phase, Instant)>,
}

impl Health {
    pub fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new((Phase::Starting, now)),
        }
    }

    pub fn phase(&self) -> Phase {
        self.lock().0
    }

    /// The controller's task is alive at `now`.
    pub fn beat(&self, now: Instant) {
        let mut state = self.lock();
        state.1 = state.1.max(now);
    }

    pub fn standing_by(&self) {
        let mut state = self.lock();
        if state.0 == Phase::Starting {
            state.0 = Phase::Standby;
        }
    }

    /// Leading: the controller starts, its caches not synced yet.
    pub fn leading(&self) {
        let mut state = self.lock();
        if matches!(state.0, Phase::Starting | Phase::Standby) {
            state.0 = Phase::Leading { synced: false };
        }
    }

    /// The leader's Region cache has done its first LIST.
    pub fn synced(&self) {
        let mut state = self.lock();
        if state.0 == (Phase::Leading { synced: false }) {
            state.0 = Phase::Leading { synced: true };
        }
    }

    pub fn stopped(&self) {
        self.lock().0 = Phase::Stopped;
    }

    /// `/healthz`: Ok, or why not.
    pub fn live(&self, now: Instant) -> Result<(), String> {
        let (phase, beat) = *self.lock();
        if phase == Phase::Stopped {
            return Err("the controller stopped".into());
        }
        let silent = now.saturating_duration_since(beat);
        if silent > STALE_AFTER {
            return Err(format!(
                "the controller loop has not run for {}s",
                silent.as_secs()
            ));
        }
        Ok(())
    }

    /// `/readyz`: Ok with what the replica does, or why it is not ready.
    pub fn ready(&self, now: Instant) -> Result<&'static str, String> {
        self.live(now)?;
        match self.phase() {
            Phase::Leading { synced: true } => Ok("leading, caches synced"),
            Phase::Standby => Ok("standing by for the leader lease"),
            Phase::Leading { synced: false } => Err("leading, caches not synced yet".into()),
            Phase::Starting => Err("starting".into()),
            Phase::Stopped => Err("the controller stopped".into()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Phase, Instant)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_leading_with_synced_caches_or_standing_by() {
        let t0 = Instant::now();
        let health = Health::new(t0);
        assert!(health.live(t0).is_ok(), "live while starting");
        assert!(health.ready(t0).is_err(), "not ready while starting");

        health.standing_by();
        assert_eq!(health.ready(t0), Ok("standing by for the leader lease"));

        health.leading();
        assert_eq!(
            health.ready(t0),
            Err("leading, caches not synced yet".to_owned())
        );
        health.synced();
        assert_eq!(health.ready(t0), Ok("leading, caches synced"));
        // A leader never goes back to standing by.
        health.standing_by();
        assert_eq!(health.phase(), Phase::Leading { synced: true });

        health.stopped();
        assert!(health.live(t0).is_err());
        assert!(health.ready(t0).is_err());
        health.leading();
        health.synced();
        assert_eq!(
            health.phase(),
            Phase::Stopped,
            "a stopped controller stays stopped"
        );
    }

    #[test]
    fn synced_before_leading_does_not_count() {
        let t0 = Instant::now();
        let health = Health::new(t0);
        health.synced();
        health.leading();
        assert!(health.ready(t0).is_err());
    }

    #[test]
    fn a_silent_loop_is_neither_live_nor_ready() {
        let t0 = Instant::now();
        let health = Health::new(t0);
        health.leading();
        health.synced();
        let later = t0 + STALE_AFTER + Duration::from_secs(1);
        assert!(health.live(later).unwrap_err().contains("has not run"));
        assert!(health.ready(later).is_err());
        health.beat(later);
        assert!(health.live(later).is_ok());
        assert!(health.ready(later).is_ok());
        // A late beat with an older time does not turn the clock back.
        health.beat(t0);
        assert!(health.live(later).is_ok());
    }
}
