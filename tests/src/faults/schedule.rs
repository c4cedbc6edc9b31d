//! Random fault schedules (issue 4, §5 scenario 7). A [`Schedule`] is made
//! from a seed alone, so printing the seed is enough to replay it: the same
//! seed gives the same faults, on the same targets, at the same offsets and
//! for the same lengths (the system's own timing still varies from run to
//! run).
//!
//! A schedule is one to [`MAX_FAULTS`] faults, each starting within
//! [`START_WITHIN`] of the schedule's start and undone after a hold of its
//! own:
//! - cut one link, then heal it;
//! - isolate one region (cut all its links) briefly, then rejoin it;
//! - `kill -9` a service center or a roaming system, then restart it;
//! - `SIGSTOP` a service center or a roaming system, then `SIGCONT` it;
//! - on a cluster with two service-center replicas per region on PostgreSQL
//!   ([`Schedule::random_replicated`]), either replica is a target too, and
//!   the PostgreSQL server may crash (`SIGQUIT`) and start again.
//!
//! Faults may overlap. A link is down while any fault wants it down (so an
//! isolation and a cut of one of its links compose); a process gets at most
//! one process fault per schedule. When [`run`] returns, every fault of the
//! schedule has been undone: every link it cut is up and every process it hit
//! runs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::cluster::{Cluster, Process};

/// At most this many faults in one schedule.
pub const MAX_FAULTS: usize = 3;
/// Every fault starts within this of the schedule's start.
pub const START_WITHIN: Duration = Duration::from_millis(1500);

/// One fault, and what undoes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Cut the link `a`–`b`; heal it after the hold.
    Cut { a: String, b: String },
    /// Cut every link of `region`; heal them after the hold.
    Isolate { region: String },
    /// `kill -9` the process; restart it after the hold.
    Kill { region: String, process: Process },
    /// `SIGSTOP` the process; `SIGCONT` it after the hold.
    Stop { region: String, process: Process },
    /// Crash the regions' PostgreSQL; start it again after the hold.
    RestartDatabase,
}

impl Fault {
    fn process(&self) -> Option<(&str, Process)> {
        match self {
            Fault::Kill { region, process } | Fault::Stop { region, process } => {
                Some((region, *process))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Cut { a, b } => write!(f, "cut {a}-{b}"),
            Fault::Isolate { region } => write!(f, "isolate {region}"),
            Fault::Kill { region, process } => write!(f, "kill -9 {region} {process}"),
            Fault::Stop { region, process } => write!(f, "SIGSTOP {region} {process}"),
            Fault::RestartDatabase => f.write_str("crash PostgreSQL"),
        }
    }
}

/// A fault at an offset from the schedule's start, undone `hold` later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub hold: Duration,
    pub fault: Fault,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let undo = match self.fault {
            Fault::Cut { .. } | Fault::Isolate { .. } => "heal",
            Fault::Kill { .. } | Fault::RestartDatabase => "restart",
            Fault::Stop { .. } => "SIGCONT",
        };
        write!(
            f,
            "+{:.2}s {}, {undo} after {:.2}s",
            self.at.as_secs_f64(),
            self.fault,
            self.hold.as_secs_f64()
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    /// In start order.
    pub steps: Vec<Step>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<String> = self.steps.iter().map(Step::to_string).collect();
        f.write_str(&steps.join("; "))
    }
}

fn millis(rng: &mut StdRng, from: u64, to: u64) -> Duration {
    Duration::from_millis(rng.random_range(from..=to))
}

impl Schedule {
    /// The schedule of `seed` on a mesh of `regions` (at least two).
    pub fn random(seed: u64, regions: &[String]) -> Schedule {
        Self::random_on(seed, regions, false)
    }

    /// The schedule of `seed` on a mesh of `regions` that run two
    /// service-center replicas each on one PostgreSQL server.
    pub fn random_replicated(seed: u64, regions: &[String]) -> Schedule {
        Self::random_on(seed, regions, true)
    }

    fn random_on(seed: u64, regions: &[String], replicated: bool) -> Schedule {
        assert!(regions.len() >= 2, "faults need two regions");
        let mut regions = regions.to_vec();
        regions.sort();
        let mut rng = StdRng::seed_from_u64(seed);
        let count = rng.random_range(1..=MAX_FAULTS);
        let mut steps: Vec<Step> = Vec::with_capacity(count);
        while steps.len() < count {
            let at = millis(&mut rng, 0, START_WITHIN.as_millis() as u64);
            let roll = rng.random_range(0..100);
            let region = regions.choose(&mut rng).expect("regions").clone();
            let processes = [Process::ServiceCenter, Process::Replica, Process::Roaming];
            // (Two targets take one coin, as schedules made before replicas.)
            let process = if replicated {
                *processes.choose(&mut rng).expect("processes")
            } else if rng.random_bool(0.5) {
                Process::ServiceCenter
            } else {
                Process::Roaming
            };
            let (fault, hold) = match roll {
                // Some cuts end before the detection bound (1.45 s), some after.
                0..35 => {
                    let others: Vec<&String> = regions.iter().filter(|r| **r != region).collect();
                    let other = (*others.choose(&mut rng).expect("another region")).clone();
                    let (a, b) = if region < other {
                        (region, other)
                    } else {
                        (other, region)
                    };
                    (Fault::Cut { a, b }, millis(&mut rng, 200, 2500))
                }
                35..50 => (Fault::Isolate { region }, millis(&mut rng, 500, 3000)),
                50..75 => (Fault::Kill { region, process }, millis(&mut rng, 100, 1500)),
                // A crash of the database, down for a moment.
                88.. if replicated => (Fault::RestartDatabase, millis(&mut rng, 0, 1000)),
                _ => (Fault::Stop { region, process }, millis(&mut rng, 200, 2500)),
            };
            if fault == Fault::RestartDatabase
                && steps.iter().any(|s| s.fault == Fault::RestartDatabase)
            {
                continue;
            }
            // One process fault per process and schedule.
            if let Some(target) = fault.process()
                && steps.iter().any(|s| s.fault.process() == Some(target))
            {
                continue;
            }
            steps.push(Step { at, hold, fault });
        }
        steps.sort_by_key(|s| s.at);
        Schedule { seed, steps }
    }

    /// How long the schedule runs: until its last fault is undone (not
    /// counting the time a restart takes).
    pub fn length(&self) -> Duration {
        self.steps
            .iter()
            .map(|s| s.at + s.hold)
            .max()
            .unwrap_or_default()
    }

    /// How many faults of each kind: cuts, isolations, kills, stops,
    /// database crashes.
    pub fn kinds(&self) -> [usize; 5] {
        let mut kinds = [0; 5];
        for step in &self.steps {
            kinds[match step.fault {
                Fault::Cut { .. } => 0,
                Fault::Isolate { .. } => 1,
                Fault::Kill { .. } => 2,
                Fault::Stop { .. } => 3,
                Fault::RestartDatabase => 4,
            }] += 1;
        }
        kinds
    }
}

/// Links cut by the faults in progress: a link is down while its count is
/// above zero.
struct Links<'a> {
    cluster: &'a Cluster,
    down: Mutex<BTreeMap<(String, String), u32>>,
}

impl Links<'_> {
    fn key(a: &str, b: &str) -> (String, String) {
        if a < b {
            (a.to_owned(), b.to_owned())
        } else {
            (b.to_owned(), a.to_owned())
        }
    }

    fn cut(&self, a: &str, b: &str) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        let count = down.entry(Self::key(a, b)).or_default();
        *count += 1;
        if *count == 1 {
            self.cluster.cut(a, b);
        }
    }

    fn heal(&self, a: &str, b: &str) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        let count = down.entry(Self::key(a, b)).or_default();
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.cluster.heal(a, b);
        }
    }
}

/// Applies every fault of `schedule` to `cluster` at its offset and undoes
/// it after its hold; returns when all are undone (restarted processes
/// listen again).
pub async fn run(cluster: &Cluster, schedule: &Schedule) {
    let links = Links {
        cluster,
        down: Mutex::default(),
    };
    let started = Instant::now();
    let codes = cluster.codes();
    let steps = schedule.steps.iter().map(|step| {
        let (links, codes) = (&links, &codes);
        async move {
            tokio::time::sleep_until(started + step.at).await;
            match &step.fault {
                Fault::Cut { a, b } => {
                    links.cut(a, b);
                    tokio::time::sleep(step.hold).await;
                    links.heal(a, b);
                }
                Fault::Isolate { region } => {
                    let others: Vec<&String> = codes.iter().filter(|o| *o != region).collect();
                    for other in &others {
                        links.cut(region, other);
                    }
                    tokio::time::sleep(step.hold).await;
                    for other in &others {
                        links.heal(region, other);
                    }
                }
                Fault::Kill { region, process } => {
                    cluster.kill9(region, *process);
                    tokio::time::sleep(step.hold).await;
                    cluster.restart(region, *process).await;
                }
                Fault::Stop { region, process } => {
                    cluster.stop(region, *process);
                    tokio::time::sleep(step.hold).await;
                    cluster.cont(region, *process);
                }
                Fault::RestartDatabase => cluster.restart_database(step.hold).await,
            }
        }
    });
    futures::future::join_all(steps).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<String> {
        ["a", "b", "c"].iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn a_seed_gives_the_same_schedule_every_time() {
        for seed in 0..50 {
            assert_eq!(
                Schedule::random(seed, &regions()),
                Schedule::random(seed, &regions())
            );
        }
        assert_ne!(
            Schedule::random(1, &regions()),
            Schedule::random(2, &regions())
        );
    }

    #[test]
    fn schedules_are_bounded_and_hit_a_process_once() {
        let mut kinds = [0; 5];
        for seed in 0..500 {
            let schedule = Schedule::random(seed, &regions());
            assert!((1..=MAX_FAULTS).contains(&schedule.steps.len()));
            assert!(schedule.steps.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(schedule.steps.iter().all(|s| s.at <= START_WITHIN));
            assert!(schedule.length() <= START_WITHIN + Duration::from_secs(3));
            let targets: Vec<_> = schedule
                .steps
                .iter()
                .filter_map(|s| s.fault.process())
                .collect();
            let mut unique = targets.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(targets.len(), unique.len(), "{schedule}");
            for (k, n) in schedule.kinds().iter().enumerate() {
                kinds[k] += n;
            }
        }
        assert!(
            kinds[..4].iter().all(|n| *n > 50),
            "every kind occurs: {kinds:?}"
        );
        assert_eq!(kinds[4], 0, "no database to crash");
    }

    #[test]
    fn replicated_schedules_hit_either_replica_and_the_database_at_most_once() {
        let (mut replicas, mut crashes) = (0, 0);
        for seed in 0..500 {
            let schedule = Schedule::random_replicated(seed, &regions());
            let kinds = schedule.kinds();
            assert!(kinds[4] <= 1, "{schedule}");
            crashes += kinds[4];
            replicas += schedule
                .steps
                .iter()
                .filter(|s| {
                    s.fault
                        .process()
                        .is_some_and(|(_, p)| p == Process::Replica)
                })
                .count();
        }
        assert!(
            replicas > 50 && crashes > 50,
            "{replicas} replica faults, {crashes} crashes"
        );
    }
}
