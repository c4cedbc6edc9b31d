//! The health of one link, from heartbeats: declared down after a number of
//! consecutive misses, and up again only after consecutive successes. A link
//! that flaps needs more successes each time (damping), so routes do not
//! thrash; the penalty decays while the link stays up.

use std::time::Duration;

/// How links are probed and judged.
#[derive(Clone, Copy, Debug)]
pub struct HealthPolicy {
    /// Time between heartbeats on a link.
    pub interval: Duration,
    /// A heartbeat without an answer within this time is a miss.
    pub timeout: Duration,
    /// Consecutive misses that take an up link down.
    pub down_after: u32,
    /// Consecutive successes that bring a down link up, before damping.
    pub up_after: u32,
    /// How long the flap penalty takes to halve.
    pub penalty_half_life: Duration,
}

impl HealthPolicy {
    /// The longest a cut can go unnoticed: it lands just after an answered
    /// heartbeat, and the `down_after`-th heartbeat sent after it times out.
    pub fn detection_bound(&self) -> Duration {
        self.interval * self.down_after + self.timeout
    }
}

impl Default for HealthPolicy {
    /// Three missed heartbeats, sent every 350 ms and each given 400 ms: a
    /// cut is declared within 1.45 s.
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(350),
            timeout: Duration::from_millis(400),
            down_after: 3,
            up_after: 3,
            penalty_half_life: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

#[derive(Clone, Debug)]
pub struct LinkHealth {
    pub health: Health,
    misses: u32,
    successes: u32,
    /// Smoothed round-trip time.
    pub rtt: Option<Duration>,
    /// Grows by one per down transition, halves every half-life.
    penalty: f64,
}

impl Default for LinkHealth {
    /// A new link is trusted until heartbeats say otherwise, so a node that
    /// just started routes directly at once; a dead peer is found within
    /// `down_after` heartbeats.
    fn default() -> Self {
        Self {
            health: Health::Up,
            misses: 0,
            successes: 0,
            rtt: None,
            penalty: 0.0,
        }
    }
}

impl LinkHealth {
    /// Successes needed to come up now.
    pub fn needed_to_come_up(&self, policy: &HealthPolicy) -> u32 {
        let factor = 1 + self.penalty.round() as u32;
        (policy.up_after * factor).min(policy.up_after * 10)
    }

    /// Records an answered heartbeat; returns whether the health changed.
    pub fn success(&mut self, rtt: Duration, policy: &HealthPolicy) -> bool {
        self.misses = 0;
        self.successes = self.successes.saturating_add(1);
        self.rtt = Some(match self.rtt {
            Some(old) => old.mul_f64(0.8) + rtt.mul_f64(0.2),
            None => rtt,
        });
        self.decay(policy);
        if self.health == Health::Down && self.successes >= self.needed_to_come_up(policy) {
            self.health = Health::Up;
            return true;
        }
        false
    }

    /// Records a missed heartbeat; returns whether the health changed.
    pub fn miss(&mut self, policy: &HealthPolicy) -> bool {
        self.successes = 0;
        self.misses = self.misses.saturating_add(1);
        self.decay(policy);
        if self.health == Health::Up && self.misses >= policy.down_after {
            self.health = Health::Down;
            self.penalty += 1.0;
            return true;
        }
        false
    }

    /// Takes the link down at once (disabled by configuration).
    pub fn disable(&mut self) -> bool {
        self.successes = 0;
        let changed = self.health == Health::Up;
        self.health = Health::Down;
        changed
    }

    fn decay(&mut self, policy: &HealthPolicy) {
        let per_probe = policy.interval.as_secs_f64() / policy.penalty_half_life.as_secs_f64();
        self.penalty *= 0.5f64.powf(per_probe);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(2);

    fn up(policy: &HealthPolicy) -> LinkHealth {
        let mut link = LinkHealth::default();
        link.success(RTT, policy);
        assert_eq!(link.health, Health::Up);
        link
    }

    #[test]
    fn a_cut_is_declared_after_three_misses_within_one_and_a_half_seconds() {
        // Heartbeats overlap (each runs on its own), so the bound is
        // interval × misses + timeout, not the misses' timeouts in a row.
        let policy = HealthPolicy::default();
        let mut link = up(&policy);
        assert!(!link.miss(&policy));
        assert!(!link.miss(&policy));
        assert!(link.miss(&policy), "the third miss takes it down");
        assert_eq!(link.health, Health::Down);
        assert!(policy.detection_bound() <= Duration::from_millis(1500));
    }

    #[test]
    fn a_single_miss_does_not_take_a_link_down() {
        let policy = HealthPolicy::default();
        let mut link = up(&policy);
        link.miss(&policy);
        link.success(RTT, &policy);
        link.miss(&policy);
        link.miss(&policy);
        assert_eq!(link.health, Health::Up);
    }

    #[test]
    fn a_flapping_link_needs_more_successes_each_time() {
        let policy = HealthPolicy::default();
        let mut link = up(&policy);
        let mut needed = Vec::new();
        for _ in 0..3 {
            for _ in 0..policy.down_after {
                link.miss(&policy);
            }
            needed.push(link.needed_to_come_up(&policy));
            while !link.success(RTT, &policy) {}
        }
        assert!(needed.windows(2).all(|w| w[1] > w[0]), "{needed:?}");
        assert!(needed.iter().all(|n| *n <= policy.up_after * 10));
    }

    #[test]
    fn round_trip_time_is_smoothed() {
        let policy = HealthPolicy::default();
        let mut link = up(&policy);
        link.rtt = None;
        link.success(Duration::from_millis(10), &policy);
        link.success(Duration::from_millis(20), &policy);
        assert_eq!(link.rtt, Some(Duration::from_millis(12)));
    }
}
