//! The fault-injection harness (docs/ARCHITECTURE.md §7, rung 4), shared by every
//! fault test.
//!
//! - [`hosts`]: each region is a host, a network namespace of its own, with a
//!   veth pair per region pair (a /30 that exists only inside the two
//!   namespaces). Cutting a link is `ip link set … down` on both ends. When
//!   namespaces cannot be made (not root), the same API runs every region on
//!   loopback and cuts links in the proxies instead.
//! - [`proxy`]: a userspace TCP proxy on every directed peer link (this machine
//!   has no `tc netem`): delay, stall and reset, settable while it runs.
//! - [`cluster`]: each region's service center and roaming system as separate
//!   `meridian-node` processes, with `kill -9`, `SIGSTOP`, `SIGCONT` and
//!   restart.
//! - [`workload`]: senders and subscribers that record what was acknowledged
//!   and what was delivered.
//! - [`checker`]: the invariant checker over those records.
//! - [`schedule`]: random fault schedules from a seed (cuts, isolations,
//!   `kill -9` and restart, `SIGSTOP` and `SIGCONT`), printable and
//!   replayable, and their execution on a [`cluster::Cluster`].
//!
//! Addresses used: `10.201.<link>.1/30` and `.2/30`, only inside namespaces
//! the harness created; they go with the namespaces when the harness drops
//! (also on panic). Clients (the test process) reach a region's service
//! center and its roaming system's admin API through a bridge: a listener on
//! the test's 127.0.0.1 whose upstream sockets are made inside the region's
//! namespace (see [`hosts::Hosts::connect`]). So nothing is added to the
//! root namespace's addresses or routes.

pub mod checker;
pub mod cluster;
pub mod hosts;
pub mod proxy;
pub mod schedule;
pub mod workload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Fault scenarios start real processes and time link failures to the
/// heartbeat; on a small machine they run one at a time, also when the test
/// runner runs tests in parallel threads. Held by a [`cluster::Cluster`].
pub struct Serial(());

static BUSY: AtomicBool = AtomicBool::new(false);

impl Serial {
    /// Waits until no other fault scenario of this process runs.
    pub async fn acquire() -> Serial {
        while BUSY
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Serial(())
    }
}

impl Drop for Serial {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
    }
}
