//! Real `meridian-node` processes of a one-region mesh (region `eu`), for
//! the tests of what a process does with its flags and its environment:
//! the region's identity and mesh config, and the processes, which log to
//! a file and are killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meridian_node::trust::pki::{self, MeshCa};

use crate::local_mode::binary;

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Region `eu` of mesh `mesh`: its CA, certificate, key and mesh config,
/// written to a directory, and the pair addresses the config names.
pub struct Region {
    /// Where the service center takes its roaming system's calls.
    pub sc_pair: SocketAddr,
    /// Where the roaming system takes its service center's calls.
    pub roaming_pair: SocketAddr,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    config: PathBuf,
}

impl Region {
    /// Issues region `eu`'s identity from a new CA of mesh `mesh` and
    /// writes it, with a mesh config naming free pair addresses, to `dir`.
    pub fn new(dir: &Path, mesh: &str) -> Self {
        let ca = MeshCa::generate(mesh).expect("mesh CA");
        let eu = ca
            .issue_region("eu", mesh, &[], Duration::from_secs(3600))
            .expect("region eu's certificate");
        let (ca_file, cert, key) = (dir.join("ca.crt"), dir.join("eu.crt"), dir.join("eu.key"));
        std::fs::write(&ca_file, &ca.cert_pem).expect("write ca.crt");
        std::fs::write(&cert, &eu.cert_pem).expect("write eu.crt");
        pki::write_private(&key, &eu.key_pem).expect("write eu.key");
        let (sc_pair, roaming_pair) = (free_addr(), free_addr());
        let config = dir.join("mesh.yaml");
        std::fs::write(
            &config,
            format!(
                "region: eu\nserviceCenter: {{pair: 'https://{sc_pair}'}}\nroaming: {{pair: 'https://{roaming_pair}'}}\n"
            ),
        )
        .expect("write mesh.yaml");
        Self {
            sc_pair,
            roaming_pair,
            ca: ca_file,
            cert,
            key,
            config,
        }
    }

    /// The arguments every process of the region takes, for `role`
    /// (`service-center`, `roaming` or `both`): its config and identity.
    pub fn args(&self, role: &str) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--role".into(),
            role.into(),
            "--config".into(),
            path(&self.config),
            "--tls-ca".into(),
            path(&self.ca),
            "--tls-cert".into(),
            path(&self.cert),
            "--tls-key".into(),
            path(&self.key),
        ]
    }

    /// A service center's flags beyond [`Region::args`]: its data in
    /// `data`, its client API at `client`, and the pair address the
    /// config names.
    pub fn service_center_args(&self, data: &Path, client: SocketAddr) -> Vec<String> {
        vec![
            "--data-dir".into(),
            data.display().to_string(),
            "--listen-client".into(),
            client.to_string(),
            "--listen-pair".into(),
            self.sc_pair.to_string(),
        ]
    }

    /// A roaming system's flags beyond [`Region::args`]: the pair address
    /// the config names, and the other regions' calls at `peer`.
    pub fn roaming_args(&self, peer: SocketAddr) -> Vec<String> {
        vec![
            "--listen-roaming-pair".into(),
            self.roaming_pair.to_string(),
            "--listen-peer".into(),
            peer.to_string(),
        ]
    }
}

/// `meridian-node` with `args`, no input and uncoloured output: a caller
/// adds the environment its test is about.
pub fn command(args: &[String]) -> Command {
    let mut command = Command::new(binary("meridian-node"));
    command.args(args).env("NO_COLOR", "1").stdin(Stdio::null());
    command
}

/// A node process, killed when dropped.
pub struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    /// Starts `command` (see [`command`]), its output to `<dir>/<name>.log`.
    pub fn start(dir: &Path, name: &str, command: &mut Command) -> Node {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start meridian-node");
        Node { child, log }
    }

    /// What the process has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
