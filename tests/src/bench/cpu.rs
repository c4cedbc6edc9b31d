//! CPU time of the processes under test, read from `/proc` at the start and
//! the end of a measured window: which process spent the machine's cores on
//! the load. Linux only; a process that is gone reads as no time. Where
//! `perf` can count syscall tracepoints, also each group's `fsync` and
//! `fdatasync` calls over the window: what a durable send costs in flushes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Where a group's CPU time comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// One process (all its threads).
    Pid(u32),
    /// A process and its children, also those that exited and were reaped
    /// in between (their time is in the parent's `cutime`/`cstime`): a
    /// PostgreSQL server and its backends.
    Tree(u32),
    /// This process, the load generator.
    Myself,
}

/// A labelled set of processes whose times are added up.
#[derive(Clone, Debug)]
pub struct Group {
    pub label: String,
    pub sources: Vec<Source>,
}

/// What [`Probe::sample`] read.
#[derive(Clone, Debug)]
pub struct Sample {
    at: Instant,
    /// Clock ticks per group, in the probe's order.
    ticks: Vec<u64>,
    /// The whole machine's busy and total ticks (all cores), `/proc/stat`.
    machine: Option<(u64, u64)>,
}

/// Something else watched over the same window (e.g. what the database's
/// backends wait on), reported as lines.
pub trait Watch: Send + Sync {
    fn start(&self) -> Box<dyn Watching>;
}

/// A [`Watch`] under way.
pub trait Watching: Send {
    fn finish(self: Box<Self>) -> Vec<String>;
}

/// The groups to sample.
#[derive(Clone)]
pub struct Probe {
    groups: Vec<Group>,
    ticks_per_second: f64,
    watches: Vec<std::sync::Arc<dyn Watch>>,
}

/// CPU over a window.
#[derive(Clone, Debug)]
pub struct Usage {
    pub seconds: f64,
    /// CPU seconds per group.
    pub groups: Vec<(String, f64)>,
    /// Cores the whole machine kept busy, every process of every user.
    pub machine_cores: Option<f64>,
    /// `fsync` + `fdatasync` calls per group, where `perf` counted them.
    pub fsyncs: Vec<Option<u64>>,
    /// What the watches reported.
    pub watched: Vec<String>,
}

/// A window being measured: the first sample, and a `perf stat` per group
/// counting its flushes until [`Probe::finish`].
pub struct Window {
    before: Sample,
    counters: Vec<Option<std::process::Child>>,
    watching: Vec<Box<dyn Watching>>,
}

impl Probe {
    pub fn new(groups: Vec<Group>) -> Self {
        Self {
            groups,
            ticks_per_second: ticks_per_second(),
            watches: Vec::new(),
        }
    }

    /// Also runs `watch` over each window.
    pub fn watch(mut self, watch: std::sync::Arc<dyn Watch>) -> Self {
        self.watches.push(watch);
        self
    }

    pub fn sample(&self) -> Sample {
        let procs = Procs::read();
        Sample {
            at: Instant::now(),
            ticks: self
                .groups
                .iter()
                .map(|g| g.sources.iter().map(|s| procs.ticks(s)).sum())
                .collect(),
            machine: machine(),
        }
    }

    /// Starts a window: samples, and starts counting flushes.
    pub fn start(&self) -> Window {
        let procs = Procs::read();
        let counters = self
            .groups
            .iter()
            .map(|g| {
                let pids: Vec<u32> = g.sources.iter().flat_map(|s| procs.pids(s)).collect();
                count_flushes(&pids)
            })
            .collect();
        let watching = self.watches.iter().map(|w| w.start()).collect();
        Window {
            before: self.sample(),
            counters,
            watching,
        }
    }

    /// Ends a window: what each group spent since [`Probe::start`].
    pub fn finish(&self, window: Window) -> Usage {
        let after = self.sample();
        let mut usage = self.usage(&window.before, &after);
        usage.fsyncs = window.counters.into_iter().map(flushes_counted).collect();
        usage.watched = window
            .watching
            .into_iter()
            .flat_map(|w| w.finish())
            .collect();
        usage
    }

    /// The CPU each group spent from `before` to `after`.
    pub fn usage(&self, before: &Sample, after: &Sample) -> Usage {
        let hz = self.ticks_per_second;
        let groups = self
            .groups
            .iter()
            .zip(before.ticks.iter().zip(&after.ticks))
            .map(|(g, (b, a))| (g.label.clone(), a.saturating_sub(*b) as f64 / hz))
            .collect();
        let seconds = after.at.saturating_duration_since(before.at).as_secs_f64();
        let machine_cores = match (before.machine, after.machine) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                Some(busy1.saturating_sub(busy0) as f64 / (total1 - total0) as f64 * cores as f64)
            }
            _ => None,
        };
        Usage {
            seconds,
            groups,
            machine_cores,
            fsyncs: Vec::new(),
            watched: Vec::new(),
        }
    }
}

impl Usage {
    /// One line per group: cores used on average and CPU per unit of work
    /// (`units` of it done in the window, e.g. acked sends), then the
    /// machine's total.
    pub fn lines(&self, units: u64) -> Vec<String> {
        let mut lines: Vec<String> = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, (label, cpu))| {
                let per = if units > 0 {
                    format!(", {:.0} µs per send", cpu / units as f64 * 1e6)
                } else {
                    String::new()
                };
                let flushes = match self.fsyncs.get(i).copied().flatten() {
                    Some(0) => ", no fsync".to_owned(),
                    Some(n) => format!(
                        ", {n} fsyncs ({:.1} sends per fsync)",
                        units as f64 / n as f64
                    ),
                    None => String::new(),
                };
                format!(
                    "{label}: {:.2} cores ({cpu:.2} s CPU in {:.1} s{per}){flushes}",
                    cpu / self.seconds.max(1e-9),
                    self.seconds
                )
            })
            .collect();
        let ours: f64 = self.groups.iter().map(|(_, cpu)| cpu).sum();
        let mut total = format!(
            "all of the above: {:.2} cores",
            ours / self.seconds.max(1e-9)
        );
        if let Some(machine) = self.machine_cores {
            total.push_str(&format!(
                "; the whole machine (every user's processes): {machine:.2} of {} cores busy",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            ));
        }
        lines.push(total);
        lines.extend(self.watched.iter().cloned());
        lines
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails, which is
/// what Linux uses on every common architecture).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse::<f64>().ok())
        .filter(|hz| *hz > 0.0)
        .unwrap_or(100.0)
}

/// The fields of `/proc/<pid>/stat` after the command name: field 3
/// (`state`) is index 0, so `ppid` is 1, `utime` 11, `stime` 12, `cutime`
/// 13 and `cstime` 14 (proc(5)).
fn stat_fields(path: &Path) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    Some(
        after
            .split_whitespace()
            .map(|f| f.parse::<i64>().map_or(0, |n| n.max(0) as u64))
            .collect(),
    )
}

fn own_and_children(fields: &[u64]) -> (u64, u64) {
    let get = |i: usize| fields.get(i).copied().unwrap_or(0);
    (get(11) + get(12), get(13) + get(14))
}

/// Every process's parent and times, read once per sample.
struct Procs(BTreeMap<u32, Proc>);

struct Proc {
    parent: u32,
    /// Its own user+system ticks.
    own: u64,
    /// Those of its children that exited and were reaped.
    reaped: u64,
}

impl Procs {
    fn read() -> Self {
        let mut all = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
                if let Some(fields) =
                    stat_fields(&Path::new("/proc").join(pid.to_string()).join("stat"))
                {
                    let (own, reaped) = own_and_children(&fields);
                    let parent = fields.get(1).copied().unwrap_or(0) as u32;
                    all.insert(
                        pid,
                        Proc {
                            parent,
                            own,
                            reaped,
                        },
                    );
                }
            }
        }
        Self(all)
    }

    /// The processes a source names, now.
    fn pids(&self, source: &Source) -> Vec<u32> {
        match source {
            Source::Myself => vec![std::process::id()],
            Source::Pid(pid) => vec![*pid],
            Source::Tree(root) if self.0.contains_key(root) => std::iter::once(*root)
                .chain(
                    self.children(*root)
                        .flat_map(|c| self.pids(&Source::Tree(c)))
                        .collect::<Vec<_>>(),
                )
                .collect(),
            Source::Tree(_) => Vec::new(),
        }
    }

    fn children(&self, parent: u32) -> impl Iterator<Item = u32> + '_ {
        self.0
            .iter()
            .filter(move |(_, p)| p.parent == parent)
            .map(|(pid, _)| *pid)
    }

    fn ticks(&self, source: &Source) -> u64 {
        match source {
            Source::Myself => self.ticks(&Source::Pid(std::process::id())),
            Source::Pid(pid) => self.0.get(pid).map_or(0, |p| p.own),
            Source::Tree(root) => match self.0.get(root) {
                None => 0,
                Some(p) => {
                    p.own
                        + p.reaped
                        + self
                            .children(*root)
                            .map(|c| self.ticks(&Source::Tree(c)))
                            .sum::<u64>()
                }
            },
        }
    }
}

/// The live children of `parent`.
#[cfg(test)]
fn children(parent: u32) -> Vec<u32> {
    Procs::read().children(parent).collect()
}

/// The syscall tracepoints counted as flushes.
const FLUSH_EVENTS: &str = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync";

/// `perf stat` counting `pids`' flushes (and those of children they start)
/// until it is interrupted; `None` when there is no perf or no pid.
fn count_flushes(pids: &[u32]) -> Option<std::process::Child> {
    if pids.is_empty() {
        return None;
    }
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    std::process::Command::new("perf")
        .args(["stat", "-x", ",", "-e", FLUSH_EVENTS, "-p", &list.join(",")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()
}

/// Interrupts a `perf stat` and adds up the counts it prints (CSV lines
/// `count,unit,event,…`); `None` if it counted nothing readable.
fn flushes_counted(child: Option<std::process::Child>) -> Option<u64> {
    let child = child?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ok()?);
    // perf may not have attached yet if the window was very short: give it
    // a moment, as a count from an unattached perf would be no count.
    std::thread::sleep(std::time::Duration::from_millis(50));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).ok()?;
    let output = child.wait_with_output().ok()?;
    parse_perf(&String::from_utf8_lossy(&output.stderr))
}

fn parse_perf(text: &str) -> Option<u64> {
    let counts: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("syscalls:sys_enter_f"))
        .filter_map(|l| l.split(',').next()?.trim().parse().ok())
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

/// `/proc/stat`'s first line: (busy, total) ticks over every core, where
/// idle and iowait are not busy.
fn machine() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_spends_cpu_and_a_missing_one_none() {
        let probe = Probe::new(vec![
            Group {
                label: "me".into(),
                sources: vec![Source::Myself],
            },
            Group {
                label: "gone".into(),
                sources: vec![Source::Pid(u32::MAX)],
            },
        ]);
        let before = probe.sample();
        // Busy work for a few clock ticks.
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(100) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let usage = probe.usage(&before, &probe.sample());
        assert!(usage.groups[0].1 > 0.0, "{usage:?}");
        assert_eq!(usage.groups[1].1, 0.0);
        assert!(usage.machine_cores.is_some_and(|c| c > 0.0), "{usage:?}");
        let lines = usage.lines(10);
        assert!(lines[0].starts_with("me: ") && lines[0].contains("µs per send"));
        assert!(lines[2].starts_with("all of the above"), "{lines:?}");
    }

    #[test]
    fn perf_counts_are_added_up() {
        let text = "# started on …\n\n12,,syscalls:sys_enter_fsync,1000,100.00,,\n30,,syscalls:sys_enter_fdatasync,1000,100.00,,\n";
        assert_eq!(parse_perf(text), Some(42));
        let uncounted = "<not counted>,,syscalls:sys_enter_fsync,0,100.00,,\n";
        assert_eq!(parse_perf(uncounted), None);
        assert_eq!(parse_perf("perf: command not found"), None);
    }

    #[test]
    fn a_tree_counts_its_children() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let me = std::process::id();
        assert!(children(me).contains(&child.id()));
        child.wait().unwrap();
        // Reaped: its time is in this process's cutime now.
        let probe = Probe::new(vec![Group {
            label: "tree".into(),
            sources: vec![Source::Tree(me)],
        }]);
        let own = Probe::new(vec![Group {
            label: "own".into(),
            sources: vec![Source::Myself],
        }]);
        assert!(probe.sample().ticks[0] > own.sample().ticks[0]);
    }
}
