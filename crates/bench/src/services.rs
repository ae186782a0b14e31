//! The services under test as processes: their ids (from pid files that `bench.sh` writes),
//! their memory, and stopping and starting the replicator for the catch-up measurement.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

/// The services, in the order they are reported.
pub const SERVICES: [&str; 3] = ["write-api", "read-api", "replicator"];

/// Where each service's pid is kept: `<dir>/<service>.pid`.
#[derive(Debug, Clone)]
pub struct PidFiles {
    dir: Option<PathBuf>,
}

impl PidFiles {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    fn path(&self, service: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{service}.pid")))
    }

    /// The pid of a running service, if its file names a live process.
    pub fn pid(&self, service: &str) -> Option<u32> {
        let text = std::fs::read_to_string(self.path(service)?).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        is_running(pid).then_some(pid)
    }

    fn record(&self, service: &str, pid: u32) -> anyhow::Result<()> {
        if let Some(path) = self.path(service) {
            std::fs::write(&path, format!("{pid}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// True while `pid` exists and is not a zombie (a service stopped by us stays a zombie until
/// `bench.sh`, its parent, reaps it).
pub fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => !status.lines().any(|l| {
            l.starts_with("State:") && matches!(l.split_whitespace().nth(1), Some("Z" | "X"))
        }),
        Err(_) => false,
    }
}

/// Resident set size now and its high-water mark, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub now_kib: u64,
    pub peak_kib: u64,
}

pub fn rss(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(Rss {
        now_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// Memory of one service over the run, in MiB.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// Right after start-up, before any load.
    pub idle_start_mb: Option<f64>,
    /// The most seen by sampling every 250 ms during the load phases.
    pub load_max_mb: Option<f64>,
    /// The kernel's high-water mark (VmHWM), over every process of the service.
    pub peak_mb: Option<f64>,
    /// After the load, once things settled.
    pub idle_end_mb: Option<f64>,
    /// Set when the replicator was restarted: the figures span both processes.
    pub restarted: bool,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn max_opt(a: Option<f64>, b: f64) -> Option<f64> {
    Some(a.map_or(b, |a| a.max(b)))
}

/// Samples the services' memory in the background.
#[derive(Clone)]
pub struct MemoryWatch {
    pids: PidFiles,
    figures: Arc<Mutex<BTreeMap<String, Memory>>>,
    under_load: Arc<std::sync::atomic::AtomicBool>,
}

impl MemoryWatch {
    pub fn start(pids: PidFiles) -> Self {
        let watch = Self {
            pids,
            figures: Arc::new(Mutex::new(BTreeMap::new())),
            under_load: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        watch.update(|memory, rss| memory.idle_start_mb = Some(mib(rss.now_kib)));
        let sampler = watch.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let loaded = sampler
                    .under_load
                    .load(std::sync::atomic::Ordering::Relaxed);
                sampler.update(|memory, rss| {
                    if loaded {
                        memory.load_max_mb = max_opt(memory.load_max_mb, mib(rss.now_kib));
                    }
                });
            }
        });
        watch
    }

    /// Whether samples from now on count as under load.
    pub fn set_under_load(&self, loaded: bool) {
        self.under_load
            .store(loaded, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reads every service's memory, records its high-water mark, then applies `f`.
    fn update(&self, f: impl Fn(&mut Memory, Rss)) {
        let mut figures = self.figures.lock().unwrap_or_else(PoisonError::into_inner);
        for service in SERVICES {
            if let Some(rss) = self.pids.pid(service).and_then(rss) {
                let memory = figures.entry(service.to_owned()).or_default();
                memory.peak_mb = max_opt(memory.peak_mb, mib(rss.peak_kib));
                f(memory, rss);
            }
        }
    }

    /// Marks a service as restarted (its figures now span two processes).
    pub fn note_restart(&self, service: &str) {
        self.update(|_, _| {});
        let mut figures = self.figures.lock().unwrap_or_else(PoisonError::into_inner);
        figures.entry(service.to_owned()).or_default().restarted = true;
    }

    /// Takes the idle-at-end figure and returns everything.
    pub fn finish(&self) -> BTreeMap<String, Memory> {
        self.update(|memory, rss| memory.idle_end_mb = Some(mib(rss.now_kib)));
        self.figures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Sends SIGTERM to `pid` (through kill(1): this crate forbids unsafe code) and waits up to
/// `patience` for it to exit.
pub async fn terminate(pid: u32, patience: Duration) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .context("running kill")?;
    if !status.success() {
        bail!("kill -TERM {pid} failed ({status})");
    }
    let deadline = Instant::now() + patience;
    while is_running(pid) {
        if Instant::now() >= deadline {
            bail!("process {pid} still runs {patience:?} after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Starts the replicator binary again with this process's environment (the URLs `bench.sh`
/// exported) on `port`, in its own process group, logging to `log`; records its pid so that
/// `bench.sh` stops it at the end.
pub fn start_replicator(
    binary: &Path,
    port: u16,
    log: &Path,
    pids: &PidFiles,
) -> anyhow::Result<u32> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = std::process::Command::new(binary);
    command
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id();
    // Not waited for here: bench.sh stops it by its pid file. Dropping the handle leaves the
    // process running.
    drop(child);
    pids.record("replicator", pid)?;
    Ok(pid)
}
