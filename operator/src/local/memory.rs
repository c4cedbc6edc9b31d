//! Local mode runs every region on this machine, so before it starts them
//! all it measures what one region takes and checks the total against the
//! memory the machine has available. Too many regions are refused with the
//! numbers, instead of filling the machine until the OOM killer picks
//! processes.

use std::fmt;

use anyhow::Context;

const MIB: u64 = 1024 * 1024;

/// What a region's data center may add to its resident memory under load,
/// beyond what it holds when it has just started: the page caches of its
/// writer and four readers, SQLite's default 2 MiB each.
pub const DATA_CENTER_CACHE_BYTES: u64 = 10 * MIB;

/// The share of the available memory local mode plans to use; the rest is
/// left to everything else on the machine (the CLI, the page cache of the
/// regions' own files).
const USABLE_PERCENT: u64 = 90;

/// The memory `MemAvailable` in `/proc/meminfo` reports: what the kernel
/// can give to new processes without swapping.
pub fn available() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("cannot read /proc/meminfo")?;
    parse_meminfo(&text).context("/proc/meminfo has no MemAvailable line")
}

fn parse_meminfo(text: &str) -> Option<u64> {
    kib_field(text, "MemAvailable:")
}

/// The resident memory of a process (`VmRSS` in `/proc/PID/status`).
pub fn resident(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    kib_field(&text, "VmRSS:").with_context(|| format!("{path} has no VmRSS line"))
}

/// A `Name:   1234 kB` line's value, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Where the memory local mode may use comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// `MemAvailable`, in bytes.
    Available(u64),
    /// `--memory-budget`, in bytes.
    Given(u64),
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Available(b) => write!(
                f,
                "this machine has {} available (MemAvailable in /proc/meminfo), of which local mode plans to use {USABLE_PERCENT}%",
                Size(*b)
            ),
            Budget::Given(b) => write!(f, "--memory-budget allows {}", Size(*b)),
        }
    }
}

/// What one started region was measured to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measured {
    /// The region measured.
    pub region: String,
    /// The resident memory of its processes, just after it started serving.
    pub resident: u64,
}

impl Measured {
    /// What each region is planned to take: the measured resident memory
    /// plus what its data center may grow by.
    pub fn per_region(&self) -> u64 {
        self.resident + DATA_CENTER_CACHE_BYTES
    }
}

/// Whether `more` further regions fit, each taking [`Measured::per_region`].
/// `in_use` is what the regions already running take: `MemAvailable`
/// already counts it, a given budget does not. `total` is the number of
/// regions asked for, for the message.
pub fn check(
    measured: &Measured,
    in_use: u64,
    more: usize,
    total: usize,
    budget: Budget,
) -> anyhow::Result<()> {
    let per_region = measured.per_region();
    let need = per_region.saturating_mul(more as u64);
    let usable = match budget {
        Budget::Available(b) => b / 100 * USABLE_PERCENT,
        Budget::Given(b) => b.saturating_sub(in_use),
    };
    if need <= usable {
        return Ok(());
    }
    anyhow::bail!(
        "not enough memory for {total} regions: each takes about {} ({} measured resident in region {}'s processes \
         after it started, plus up to {} of data center cache), so the other {more} need {}, and {budget}; \
         run fewer regions or free memory",
        Size(per_region),
        Size(measured.resident),
        measured.region,
        Size(DATA_CENTER_CACHE_BYTES),
        Size(need),
    )
}

/// Bytes, as MiB or GiB with one decimal.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = self.0 as f64 / MIB as f64;
        if mib >= 1024.0 {
            write!(f, "{:.1} GiB", mib / 1024.0)
        } else {
            write!(f, "{mib:.1} MiB")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24683520 kB\nMemFree:         3858432 kB\nMemAvailable:   23211008 kB\nBuffers:          102400 kB\n";

    #[test]
    fn reads_mem_available_and_vm_rss_in_bytes() {
        assert_eq!(parse_meminfo(MEMINFO), Some(23_211_008 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        let status = "Name:\tmeridian-node\nVmPeak:\t  900 kB\nVmRSS:\t   26624 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(26 * MIB));
        assert!(available().unwrap() > 0, "this machine's /proc/meminfo");
        assert!(
            resident(std::process::id()).unwrap() > MIB,
            "this test's own RSS"
        );
    }

    #[test]
    fn a_thousand_regions_are_refused_naming_the_numbers() {
        let measured = Measured {
            region: "r0".into(),
            resident: 24 * MIB,
        };
        let machine = Budget::Available(22 * 1024 * MIB);
        let in_use = measured.resident;
        assert!(
            check(&measured, in_use, 63, 64, machine).is_ok(),
            "64 regions fit in 22 GiB"
        );
        let err = check(&measured, in_use, 999, 1000, machine)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "not enough memory for 1000 regions: each takes about 34.0 MiB (24.0 MiB measured resident in \
             region r0's processes after it started, plus up to 10.0 MiB of data center cache), so the other \
             999 need 33.2 GiB, and this machine has 22.0 GiB available (MemAvailable in /proc/meminfo), of \
             which local mode plans to use 90%; run fewer regions or free memory"
        );
        // The budget counts what the measured region already takes.
        let given = Budget::Given(24 * MIB + 2 * 34 * MIB);
        assert!(check(&measured, in_use, 2, 3, given).is_ok());
        let err = check(&measured, in_use, 3, 4, given)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--memory-budget allows 92.0 MiB"), "{err}");
    }
}
