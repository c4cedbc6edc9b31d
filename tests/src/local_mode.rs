//! Local mode, driven as a user would: `meridian-operator local` running real
//! node processes, and the `meridian` CLI talking to them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A binary of this workspace, from the same target directory as the test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let mut dir = exe.parent().expect("the test's directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing; build the workspace's binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// The workspace root, where `examples/` lives.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub struct LocalMode {
    pub state_dir: PathBuf,
    child: Option<Child>,
    files: Vec<PathBuf>,
    args: Vec<String>,
}

impl LocalMode {
    /// Starts local mode on `files` in `state_dir` and waits for endpoints.json.
    pub fn start(files: &[PathBuf], state_dir: &Path) -> LocalMode {
        Self::start_with(files, state_dir, &[])
    }

    /// Starts local mode with further arguments (`--cert-lifetime 6`).
    pub fn start_with(files: &[PathBuf], state_dir: &Path, args: &[&str]) -> LocalMode {
        let mut local = LocalMode {
            state_dir: state_dir.to_path_buf(),
            child: None,
            files: files.to_vec(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        local.restart();
        local
    }

    fn endpoints(&self) -> PathBuf {
        self.state_dir.join("endpoints.json")
    }

    /// Starts local mode on `files` in `state_dir`, without waiting for
    /// anything (to watch or interrupt its startup).
    pub fn launch(files: &[PathBuf], state_dir: &Path, args: &[&str]) -> LocalMode {
        let mut local = LocalMode {
            state_dir: state_dir.to_path_buf(),
            child: None,
            files: files.to_vec(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        local.spawn();
        local
    }

    /// The operator process's pid.
    pub fn operator_pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits (at most `within`) for local mode to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "local mode did not exit within {within:?}; see {}",
                self.log().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let _ = std::fs::remove_file(self.endpoints());
        let mut command = Command::new(binary("meridian-operator"));
        command.arg("local").arg("--state-dir").arg(&self.state_dir);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command.args(&self.args);
        let log = std::fs::File::create(self.state_dir.with_extension("operator.log"))
            .expect("operator log");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start meridian-operator local");
        self.child = Some(child);
    }

    /// (Re)starts the operator process and waits until every region serves.
    pub fn restart(&mut self) {
        self.spawn();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.endpoints().exists() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "local mode exited early with {status}; see {}",
                    self.log().display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "local mode did not serve within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> PathBuf {
        self.state_dir.with_extension("operator.log")
    }

    /// Runs the CLI against this local mode.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("run meridian")
    }

    /// The CLI command, for running it in the background.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary("meridian"));
        command
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// The pid of a region's process (`service-center` or `roaming`).
    pub fn pid(&self, region: &str, process: &str) -> u32 {
        let path = self.state_dir.join(region).join(format!("{process}.pid"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .expect("a pid")
    }

    /// Stops local mode with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "local mode did not stop within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalMode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            std::thread::sleep(Duration::from_millis(500));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`) to a process.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// The live processes whose command line mentions `dir` (local mode's
/// node processes name their state directory in `--config`).
pub fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes().to_vec();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// A manifest of `n` Regions (`r0`, `r1`, …) in one namespace.
pub fn regions_manifest(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: meridian.dev/v1alpha1\nkind: Region\n\
                 metadata: {{name: r{i}, namespace: many}}\nspec: {{cluster: default}}\n"
            )
        })
        .collect()
}

/// Whether a process exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// The CLI's stdout, asserting that it succeeded.
pub fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "meridian failed: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// CLI arguments as `user`, with the password every test user has.
pub fn as_user<'a>(user: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--user", user, "--password", "secret-pass"];
    all.extend_from_slice(args);
    all
}
