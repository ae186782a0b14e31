//! Throw-away PostgreSQL clusters of the test's own, for failover: a primary on a free port
//! and streaming standbys of it, promoted and stopped at will. The machine's shared cluster
//! is never touched. Each cluster lives in a directory of its own under the system's temp
//! directory; dropping the value stops the server at once and removes the directory, so a
//! failing test leaves nothing behind.
//!
//! PostgreSQL refuses to run as root: as root, the server's commands run as the `postgres`
//! OS user (`runuser`), as `deploy/local/lib.sh`'s `as_postgres` does; as anyone else they
//! run as that user. The binaries are found in `TEST_PG_BIN`, else the newest
//! `/usr/lib/postgresql/<version>/bin`. Logins are `trust` for `catalogue` on 127.0.0.1,
//! the cluster's superuser.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{free_port, unique_name};

/// One running cluster.
#[derive(Debug)]
pub struct PgCluster {
    root: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl PgCluster {
    /// A new primary (`wal_level = replica`, standbys welcome), started.
    pub async fn primary() -> Self {
        let cluster = Self::prepare();
        let data = cluster.data();
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    path(&data),
                    "-U",
                    "catalogue",
                    "--auth=trust",
                    "--no-sync",
                ],
            )
            .await;
        cluster.start().await;
        cluster
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started and replaying.
    pub async fn standby_of(primary: &PgCluster) -> Self {
        let cluster = Self::prepare();
        let data = cluster.data();
        let port = primary.port.to_string();
        cluster
            .run(
                "pg_basebackup",
                &[
                    "-D",
                    path(&data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "catalogue",
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "--no-sync",
                ],
            )
            .await;
        cluster.start().await;
        cluster
    }

    /// `host:port` of the server.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's URL, database `postgres`: for [`crate::TestDatabase::create_on`].
    pub fn admin_url(&self) -> String {
        format!("postgres://catalogue:catalogue@{}/postgres", self.host())
    }

    /// Promotes a standby and waits until it accepts writes.
    pub async fn promote(&self) {
        self.run(
            "pg_ctl",
            &["promote", "-w", "-t", "60", "-D", path(&self.data())],
        )
        .await;
    }

    /// A fast shutdown: sessions are ended (SQLSTATE 57P01) and, on a primary, every WAL
    /// record is sent to the standbys before the server exits.
    pub async fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "stop",
                "-w",
                "-t",
                "60",
                "-m",
                "fast",
                "-D",
                path(&self.data()),
            ],
        )
        .await;
    }

    /// Creates the cluster's own directory, owned by whoever runs the server.
    fn prepare() -> Self {
        let cluster = Self {
            root: std::env::temp_dir().join(unique_name("pgcluster")),
            port: free_port(),
            bin: binaries(),
        };
        let status = as_server_user("mkdir")
            .arg("-m")
            .arg("700")
            .arg(&cluster.root)
            .status()
            .expect("mkdir");
        assert!(status.success(), "mkdir {}", cluster.root.display());
        cluster
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    async fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c wal_level=replica -c fsync=off \
             -c max_connections=200",
            self.port,
            self.root.display()
        );
        let log = self.root.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                path(&self.data()),
                "-l",
                path(&log),
                "-o",
                &options,
            ],
        )
        .await;
    }

    /// Runs one of the server's programs to completion; panics with its output on failure.
    async fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut command =
            tokio::process::Command::from(as_server_user(path(&self.bin.join(program))));
        let output = command
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?}: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        output
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: nothing of this cluster is worth a clean shutdown, and a frozen client
        // must not delay it.
        let _ = as_server_user(path(&self.bin.join("pg_ctl")))
            .args(["stop", "-w", "-t", "30", "-m", "immediate", "-D"])
            .arg(self.data())
            .output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `program`, run as the `postgres` OS user when we are root.
fn as_server_user(program: &str) -> Command {
    // `id -u`: this crate has no binding to libc's `geteuid`.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    } else {
        Command::new(program)
    }
}

/// The directory of `initdb`, `pg_ctl` and `pg_basebackup`.
fn binaries() -> PathBuf {
    if let Ok(dir) = std::env::var("TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL's server programs: set TEST_PG_BIN to the directory of initdb")
}
