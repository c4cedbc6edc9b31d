//! What the operator's `/healthz` (liveness) and `/readyz` (readiness)
//! answer; the chart's probes ask both.
//!
//! - **Live**: the task that does this replica's work — waiting for the
//!   leader Lease, or running the controller — beats every [`BEAT`]. No beat
//!   for [`STALE_AFTER`] means that task is wedged (a reconcile blocking its
//!   thread, say), and a controller that stopped does nothing more: either
//!   way `/healthz` answers 503, so the kubelet restarts the pod.
//! - **Ready**: live, and one of
//!   - leading, with the controller's caches synced: every reflector store
//!     the reconciler reads has done its first LIST. A namespace with no
//!     Region yet is synced all the same (the LIST came back empty):
//!     nothing to reconcile is a state the operator handles, and `helm
//!     install --wait` installs the chart before anyone writes a Region;
//!   - standing by: another replica holds the Lease. The standby is ready
//!     by choice. It is healthy and leads within a retry period of the
//!     Lease coming free; and an unready standby would block every rollout
//!     of the Deployment: a second replica would never count as available,
//!     and in a rolling update of one replica the new pod (standing by,
//!     since the old one still leads) must be Ready before the old one is
//!     stopped, so neither would ever happen.
//!
//!   Not ready: starting (the Lease not asked yet, or the API server not
//!   answering), leading before the caches have synced, and stopped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the working task beats.
pub const BEAT: Duration = Duration::from_secs(2);
/// How long without a beat before the operator is not live: well above a
/// beat, so a busy machine does not restart a working operator.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// Where a replica is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Started; it does not know yet whether it leads.
    Starting,
    /// Another replica holds the Lease; this one waits for it.
    Standby,
    /// Leading: the controller runs. `synced` once its caches have done
    /// their first LIST.
    Leading { synced: bool },
    /// The controller stopped (a signal, or the Lease lost); the process is
    /// on its way out.
    Stopped,
}

/// The replica's phase and its last beat, shared by the working task and
/// the HTTP handlers.
#[derive(Debug)]
pub struct Health {
    state: Mutex<(Phase, Instant)>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(Instant::now())
    }
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

    /// The working task is alive at `now`.
    pub fn beat(&self, now: Instant) {
        let mut state = self.lock();
        state.1 = state.1.max(now);
    }

    /// Beats every [`BEAT`] and never returns: run it beside the work (in
    /// the same task, with `select!`), so that it stops when the work blocks.
    pub async fn beating(&self) {
        let mut beat = tokio::time::interval(BEAT);
        loop {
            beat.tick().await;
            self.beat(Instant::now());
        }
    }

    /// Another replica leads. Only from `Starting`: a replica that led
    /// never goes back to standing by (it exits when it loses the Lease).
    pub fn standing_by(&self) {
        let mut state = self.lock();
        if state.0 == Phase::Starting {
            state.0 = Phase::Standby;
        }
    }

    /// This replica leads; its controller starts, its caches not synced.
    pub fn leading(&self) {
        let mut state = self.lock();
        if matches!(state.0, Phase::Starting | Phase::Standby) {
            state.0 = Phase::Leading { synced: false };
        }
    }

    /// The leader's caches have done their first LIST.
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
                "the controller's task has not run for {} s",
                silent.as_secs()
            ));
        }
        Ok(())
    }

    /// `/readyz`: Ok with what the replica does, or why it is not ready.
    pub fn ready(&self, now: Instant) -> Result<&'static str, String> {
        self.live(now)?;
        match self.phase() {
            Phase::Leading { synced: true } => Ok("leading; caches synced"),
            Phase::Standby => Ok("standing by for the leader Lease"),
            Phase::Leading { synced: false } => Err("leading; caches not synced yet".into()),
            Phase::Starting => Err("starting: the leader Lease not read yet".into()),
            Phase::Stopped => Err("the controller stopped".into()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Phase, Instant)> {
        // The state is two plain values: a panic elsewhere cannot leave it
        // half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_is_ready_once_its_caches_synced_and_a_standby_at_once() {
        let t0 = Instant::now();
        let health = Health::new(t0);
        assert_eq!(health.live(t0), Ok(()), "live while starting");
        assert!(health.ready(t0).is_err(), "not ready while starting");

        health.standing_by();
        assert_eq!(health.ready(t0), Ok("standing by for the leader Lease"));

        health.leading();
        assert_eq!(
            health.ready(t0),
            Err("leading; caches not synced yet".to_owned())
        );
        health.synced();
        assert_eq!(health.ready(t0), Ok("leading; caches synced"));
        health.standing_by();
        assert_eq!(
            health.phase(),
            Phase::Leading { synced: true },
            "a leader never stands by again"
        );

        health.stopped();
        assert!(health.live(t0).is_err());
        assert!(health.ready(t0).is_err());
        health.leading();
        health.synced();
        assert_eq!(health.phase(), Phase::Stopped, "stopped stays stopped");
    }

    #[test]
    fn caches_synced_before_leading_do_not_count() {
        let t0 = Instant::now();
        let health = Health::new(t0);
        health.synced();
        health.leading();
        assert!(health.ready(t0).is_err());
    }

    #[test]
    fn a_silent_task_is_neither_live_nor_ready() {
        let t0 = Instant::now();
        let health = Health::new(t0);
        health.leading();
        health.synced();
        let later = t0 + STALE_AFTER + Duration::from_secs(1);
        assert!(health.live(later).unwrap_err().contains("has not run"));
        assert!(health.ready(later).is_err());
        health.beat(later);
        assert_eq!(health.live(later), Ok(()));
        assert!(health.ready(later).is_ok());
        // A late beat carrying an older time does not turn the clock back.
        health.beat(t0);
        assert_eq!(health.live(later), Ok(()));
    }
}
