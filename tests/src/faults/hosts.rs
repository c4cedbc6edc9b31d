//! Regions as hosts: a network namespace per region, and a veth pair per
//! region pair carrying a /30 that exists only inside the two namespaces.
//!
//! - Namespace names are `mrd-<pid>-<n>-<region>`: the test process's pid and
//!   a counter, so that parallel test processes (and several harnesses in one
//!   process) never collide. Namespaces left by a test process that no longer
//!   runs (killed with `kill -9`) are removed by the next harness.
//! - The veth end in region `a`'s namespace that leads to `b` is named `to-<b>`
//!   (created directly inside the namespaces, so names never meet in the root
//!   namespace). Link number `k` (pairs in sorted order) carries
//!   `10.201.<k>.1/30` at the lower region code and `.2/30` at the higher one.
//! - [`Hosts::cut`] and [`Hosts::heal`] set both ends of a veth down or up.
//! - Dropping [`Hosts`] deletes every namespace it created, also on panic.
//!
//! When namespaces cannot be created (not root, no `ip`, no permission), the
//! harness falls back to [`Mode::Loopback`]: every region listens on
//! 127.0.0.1 and links are cut by the proxies. `MERIDIAN_FAULTS_LOOPBACK=1`
//! forces that mode, to test the fallback on a machine that has namespaces.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::proxy::Connector;

/// How regions are separated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One network namespace per region, veth pairs between them.
    Namespaces,
    /// Every region on the test's own loopback; the proxies cut links.
    Loopback,
}

/// The veth pair between two regions.
#[derive(Clone, Debug)]
pub struct Link {
    /// The lower region code, and its end.
    pub a: String,
    pub a_addr: Ipv4Addr,
    /// The higher region code, and its end.
    pub b: String,
    pub b_addr: Ipv4Addr,
}

pub struct Hosts {
    mode: Mode,
    /// Region code to namespace name (empty in loopback mode).
    namespaces: BTreeMap<String, String>,
    /// Keyed by the two region codes in sorted order.
    links: BTreeMap<(String, String), Link>,
}

/// How long a TCP connection made by the harness may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const PREFIX: &str = "mrd-";
static HARNESSES: AtomicU32 = AtomicU32::new(0);

fn key(a: &str, b: &str) -> (String, String) {
    if a < b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// Runs `ip` with `args`; its stderr becomes the error.
fn ip<I, S>(args: I) -> io::Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let output = Command::new("ip")
        .args(&args)
        .stdin(Stdio::null())
        .output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Deletes namespaces of this harness's naming whose test process is gone.
fn sweep_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(["netns", "del", name]);
        }
    }
}

impl Hosts {
    /// One host per region, fully linked: namespaces when this machine allows
    /// it, otherwise loopback (with a note on stderr).
    pub fn create(regions: &[&str]) -> Hosts {
        if std::env::var_os("MERIDIAN_FAULTS_LOOPBACK").is_some_and(|v| v != "0") {
            eprintln!("faults: MERIDIAN_FAULTS_LOOPBACK is set; regions run on loopback");
            return Hosts::loopback();
        }
        match Hosts::namespaces(regions) {
            Ok(hosts) => hosts,
            Err(err) => {
                eprintln!(
                    "faults: cannot create network namespaces ({err}); regions run on loopback \
                     and the proxies cut links"
                );
                Hosts::loopback()
            }
        }
    }

    /// Every region on 127.0.0.1.
    pub fn loopback() -> Hosts {
        Hosts {
            mode: Mode::Loopback,
            namespaces: BTreeMap::new(),
            links: BTreeMap::new(),
        }
    }

    /// A namespace per region and a veth pair per region pair.
    pub fn namespaces(regions: &[&str]) -> io::Result<Hosts> {
        sweep_stale();
        let n = HARNESSES.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{PREFIX}{}-{n}", std::process::id());
        let mut hosts = Hosts {
            mode: Mode::Namespaces,
            namespaces: BTreeMap::new(),
            links: BTreeMap::new(),
        };
        let mut sorted: Vec<&str> = regions.to_vec();
        sorted.sort_unstable();
        // On error, dropping `hosts` removes what was made so far.
        for region in &sorted {
            let name = format!("{tag}-{region}");
            ip(["netns", "add", &name])?;
            hosts.namespaces.insert(region.to_string(), name.clone());
            ip(["-n", &name, "link", "set", "lo", "up"])?;
        }
        let mut k = 0u8;
        for (i, a) in sorted.iter().enumerate() {
            for b in &sorted[i + 1..] {
                let (ns_a, ns_b) = (&hosts.namespaces[*a], &hosts.namespaces[*b]);
                let (if_a, if_b) = (format!("to-{b}"), format!("to-{a}"));
                ip([
                    "link", "add", &if_a, "netns", ns_a, "type", "veth", "peer", "name", &if_b,
                    "netns", ns_b,
                ])?;
                let link = Link {
                    a: a.to_string(),
                    a_addr: Ipv4Addr::new(10, 201, k, 1),
                    b: b.to_string(),
                    b_addr: Ipv4Addr::new(10, 201, k, 2),
                };
                ip([
                    "-n",
                    ns_a,
                    "addr",
                    "add",
                    &format!("{}/30", link.a_addr),
                    "dev",
                    &if_a,
                ])?;
                ip([
                    "-n",
                    ns_b,
                    "addr",
                    "add",
                    &format!("{}/30", link.b_addr),
                    "dev",
                    &if_b,
                ])?;
                ip(["-n", ns_a, "link", "set", &if_a, "up"])?;
                ip(["-n", ns_b, "link", "set", &if_b, "up"])?;
                hosts.links.insert(key(a, b), link);
                k = k
                    .checked_add(1)
                    .ok_or_else(|| io::Error::other("too many region pairs"))?;
            }
        }
        Ok(hosts)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The namespace of `region`, in namespace mode.
    pub fn namespace(&self, region: &str) -> Option<&str> {
        self.namespaces.get(region).map(String::as_str)
    }

    /// The address at which `region` reaches `peer` directly.
    pub fn peer_address(&self, region: &str, peer: &str) -> IpAddr {
        match self.links.get(&key(region, peer)) {
            Some(link) if link.a == peer => IpAddr::V4(link.a_addr),
            Some(link) => IpAddr::V4(link.b_addr),
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// A command that runs `program` on `region`'s host.
    pub fn command(&self, region: &str, program: impl AsRef<OsStr>) -> Command {
        match self.namespace(region) {
            Some(ns) => {
                // `ip netns exec` enters the namespace and execs the program,
                // so the child's pid is the program's.
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// Listens at `addr` on `region`'s host.
    pub fn bind(&self, region: &str, addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = socket_in(self.namespace(region))?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    }

    /// Connects from `region`'s host to `addr`.
    pub async fn connect(&self, region: &str, addr: SocketAddr) -> io::Result<TcpStream> {
        connect_in(self.namespace(region).map(str::to_owned), addr).await
    }

    /// Makes connections from `region`'s host to `addr`, for a proxy.
    pub fn connector(&self, region: &str, addr: SocketAddr) -> Connector {
        let ns = self.namespace(region).map(str::to_owned);
        Arc::new(move || Box::pin(connect_in(ns.clone(), addr)))
    }

    /// The regions whose direct link is `a`–`b`, checked.
    fn link(&self, a: &str, b: &str) -> io::Result<&Link> {
        self.links.get(&key(a, b)).ok_or_else(|| {
            io::Error::other(format!(
                "no veth between {a} and {b} (in {:?} mode)",
                self.mode
            ))
        })
    }

    fn set(&self, a: &str, b: &str, state: &str) -> io::Result<()> {
        let link = self.link(a, b)?.clone();
        ip([
            "-n",
            &self.namespaces[&link.a],
            "link",
            "set",
            &format!("to-{}", link.b),
            state,
        ])?;
        ip([
            "-n",
            &self.namespaces[&link.b],
            "link",
            "set",
            &format!("to-{}", link.a),
            state,
        ])
    }

    /// Takes the veth between `a` and `b` down at both ends.
    pub fn cut(&self, a: &str, b: &str) -> io::Result<()> {
        self.set(a, b, "down")
    }

    /// Brings the veth between `a` and `b` up at both ends.
    pub fn heal(&self, a: &str, b: &str) -> io::Result<()> {
        self.set(a, b, "up")
    }
}

/// A socket made inside network namespace `ns` (`None`: this process's
/// own). A socket stays in the namespace it was made in, whichever thread
/// uses it later; so a short-lived thread enters the namespace, makes the
/// socket and ends (a pooled thread must never change namespace).
fn socket_in(ns: Option<&str>) -> io::Result<TcpSocket> {
    let Some(ns) = ns else {
        return TcpSocket::new_v4();
    };
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        TcpSocket::new_v4()
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

async fn connect_in(ns: Option<String>, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = socket_in(ns.as_deref())?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in self.namespaces.values() {
            if let Err(err) = ip(["netns", "del", ns]) {
                eprintln!("faults: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_reach_each_other_on_localhost() {
        let hosts = Hosts::loopback();
        assert_eq!(hosts.mode(), Mode::Loopback);
        assert_eq!(
            hosts.peer_address("a", "b"),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert!(hosts.cut("a", "b").is_err(), "loopback has no veth to cut");
    }
}
