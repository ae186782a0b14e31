//! The project's binaries as real processes, for end-to-end and fault tests.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::unique_name;

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The path of a workspace binary, built (or found fresh) by `cargo build` once per test
/// process: a package's tests only build that package's own binaries, and a binary left
/// over from an earlier build may be stale.
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<HashSet<String>>> = OnceLock::new();
    let target_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(PathBuf::from))
        .expect("test binary under target/<profile>/deps");
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if built.insert(name.to_owned()) {
        // The profile directory `debug` is the `dev` profile; the others carry its name.
        let profile = match target_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--locked", "--workspace", "--profile", profile])
            .args(["--bin", name])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    target_dir.join(name)
}

/// A running service process, killed when dropped. Its output goes to a log file that is
/// printed when the test fails (or always with `TEST_LOG=1`) and removed afterwards.
pub struct ServiceProcess {
    pub name: String,
    pub port: u16,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub log_path: PathBuf,
    /// How often a first start moved to another port; `None` once it was ready or restarted
    /// (a restart keeps its port: clients hold its URL).
    moved_ports: Option<u32>,
}

impl ServiceProcess {
    /// Starts `binary` with `args` and `env` (plus `PORT`, `HOST` and a log level).
    pub fn start(binary: PathBuf, args: &[&str], env: &[(&str, String)]) -> Self {
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut process = Self {
            port: free_port(),
            log_path: std::env::temp_dir().join(format!("{}.log", unique_name(&name))),
            name,
            binary,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            child: None,
            moved_ports: Some(0),
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let mut command = Command::new(&self.binary);
        command
            .args(&self.args)
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string())
            .env("LOG_FORMAT", "text")
            .env(
                "RUST_LOG",
                std::env::var("TEST_SERVICE_LOG")
                    .unwrap_or_else(|_| "info,write_api=debug,replicator=debug,amqprs=off".into()),
            )
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(command.spawn().expect("starting the service binary"));
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until `/readyz` answers 200. A first start whose port was taken between
    /// [`free_port`] and the bind (by any process's outgoing connection) moves to another
    /// port; a process that exits before it is ready fails the test with its log.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ready = client
                .get(format!("{}/readyz", self.url()))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                self.moved_ports = None;
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                let port_taken = self.log().contains("Address already in use");
                match self.moved_ports {
                    Some(moves) if moves < 5 && port_taken => {
                        self.moved_ports = Some(moves + 1);
                        self.port = free_port();
                        let _ = std::fs::remove_file(&self.log_path);
                        self.spawn();
                    }
                    _ => panic!(
                        "{} exited ({status}) before it was ready; its log:\n{}",
                        self.name,
                        self.log()
                    ),
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {} to be ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no chance to finish anything.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// `kill -9` without waiting for the exit, for use while `&self` is borrowed elsewhere.
    pub fn kill_now(&self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully.
    pub async fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => {
                let _ = child.kill().await;
                false
            }
        }
    }

    /// Starts the same command again (same port, same log).
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "stop the process before restarting it"
        );
        self.moved_ports = None;
        self.spawn();
    }

    /// Replaces the environment the next [`ServiceProcess::restart`] starts with.
    pub fn set_env(&mut self, env: &[(&str, String)]) {
        self.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() || std::env::var_os("TEST_LOG").is_some() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log());
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}
