//! Where the CPU went during a measured run: CPU time by process group (each service,
//! each PostgreSQL cluster, RabbitMQ, pgpool-II, this tool), from `/proc/<pid>/stat` at the
//! start and the end of the window. Divided by the operations the run completed, it says
//! what one request costs each process, which is what decides throughput when everything
//! shares the same cores.
//!
//! Processes that end inside the window lose their time and processes that start in it count
//! all of theirs; the services and the pools' database sessions live through a run, so the
//! figures hold for them.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

use crate::load::Throughput;

/// CPU time by process group over one window.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    pub seconds: f64,
    /// CPU seconds (user and system) by group.
    pub by_group: BTreeMap<String, f64>,
}

impl CpuUse {
    /// CPU microseconds per operation for `group` (0 when it used none).
    pub fn micros_per_op(&self, group: &str, ops: u64) -> f64 {
        match (self.by_group.get(group), ops) {
            (Some(seconds), 1..) => seconds * 1e6 / ops as f64,
            _ => 0.0,
        }
    }

    /// Busy cores on average over the window.
    pub fn busy_cores(&self) -> f64 {
        if self.seconds > 0.0 {
            self.by_group.values().sum::<f64>() / self.seconds
        } else {
            0.0
        }
    }
}

/// The CPU time of every process at one moment.
pub struct Snapshot {
    at: Instant,
    /// pid → (group, clock ticks used so far).
    processes: HashMap<u32, (String, u64)>,
}

impl Snapshot {
    /// Reads every process's CPU time; `None` where `/proc` cannot be read.
    pub fn take() -> Option<Self> {
        let at = Instant::now();
        let mut processes = HashMap::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(process) = read_process(pid) {
                processes.insert(pid, process);
            }
        }
        Some(Self { at, processes })
    }

    /// CPU time by group between `self` and the later `end`.
    pub fn until(&self, end: &Snapshot) -> CpuUse {
        let tick = 1.0 / ticks_per_second() as f64;
        let mut by_group: BTreeMap<String, f64> = BTreeMap::new();
        for (pid, (group, ticks)) in &end.processes {
            let before = self.processes.get(pid).map_or(0, |(_, t)| *t);
            let used = ticks.saturating_sub(before);
            if used > 0 {
                *by_group.entry(group.clone()).or_default() += used as f64 * tick;
            }
        }
        CpuUse {
            seconds: end.at.duration_since(self.at).as_secs_f64(),
            by_group,
        }
    }
}

/// A Markdown table of CPU microseconds per operation, one row per run that has CPU figures
/// and one column per process group that used any; empty when no run has them.
pub fn table(runs: &[(String, &Throughput)]) -> String {
    let runs: Vec<(&str, &Throughput, &CpuUse)> = runs
        .iter()
        .filter_map(|(name, t)| t.cpu.as_ref().map(|cpu| (name.as_str(), *t, cpu)))
        .filter(|(_, t, _)| t.ok > 0)
        .collect();
    if runs.is_empty() {
        return String::new();
    }
    let mut groups: Vec<&str> = runs
        .iter()
        .flat_map(|(_, _, cpu)| cpu.by_group.keys().map(String::as_str))
        .collect();
    groups.sort_by_key(|g| (column_rank(g), *g));
    groups.dedup();
    let mut md = format!("| Run | ops/s | busy cores | {} |\n", groups.join(" | "));
    md.push_str(&"|---".repeat(groups.len() + 3));
    md.push_str("|\n");
    for (name, t, cpu) in runs {
        let cells: Vec<String> = groups
            .iter()
            .map(|g| match cpu.micros_per_op(g, t.ok) {
                // Less than half a microsecond: idle upkeep, not part of the request.
                us if us < 0.5 => "–".to_owned(),
                us => format!("{us:.0}"),
            })
            .collect();
        let _ = writeln!(
            md,
            "| {name} | {:.0} | {:.2} | {} |",
            t.rps,
            cpu.busy_cores(),
            cells.join(" | ")
        );
    }
    md
}

/// Services first, then the databases, the broker and the proxy, then the load generator.
fn column_rank(group: &str) -> u8 {
    match group {
        "write-api" => 0,
        "read-api" => 1,
        "replicator" => 2,
        g if g.starts_with("PostgreSQL") => 3,
        "RabbitMQ" => 4,
        "pgpool-II" => 5,
        "bench (load)" => 6,
        _ => 7,
    }
}

fn read_process(pid: u32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = cpu_ticks(&stat)?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    Some((group(comm.trim(), &cmdline), ticks))
}

/// utime + stime from a `/proc/<pid>/stat` line (fields 14 and 15; the command name in
/// field 2 may hold spaces and parentheses, so fields are counted after its last `)`).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The report's name for a process: the service by its command name, a PostgreSQL
/// process by its cluster (`postgres: 15/replica-1: …`, or the postmaster's `-D` directory).
fn group(comm: &str, cmdline: &str) -> String {
    match comm {
        "write-api" | "read-api" | "replicator" => return comm.to_owned(),
        "bench" => return "bench (load)".to_owned(),
        "beam.smp" | "erl_child_setup" | "epmd" | "inet_gethost" => return "RabbitMQ".to_owned(),
        _ => {}
    }
    if comm.starts_with("pgpool") {
        return "pgpool-II".to_owned();
    }
    if comm == "postgres" || cmdline.starts_with("postgres: ") {
        let cluster = cmdline
            .strip_prefix("postgres: ")
            .and_then(|title| title.split(':').next())
            .or_else(|| {
                let mut words = cmdline.split_whitespace();
                words.find(|w| *w == "-D").and_then(|_| words.next())
            })
            .and_then(|name| name.trim_end_matches('/').rsplit('/').next())
            .unwrap_or("?");
        return format!("PostgreSQL {cluster}");
    }
    "other".to_owned()
}

/// The kernel's clock tick (`USER_HZ`), in which `/proc` counts CPU time: 100 on Linux's
/// common architectures; `getconf` says for sure.
fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_time_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (odd ) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(stat), Some(42));
    }

    #[test]
    fn groups_processes_by_service_and_cluster() {
        assert_eq!(group("read-api", "target/release/read-api"), "read-api");
        assert_eq!(
            group(
                "postgres",
                "postgres: 15/replica-1: catalogue bench 127.0.0.1(5000) idle"
            ),
            "PostgreSQL replica-1"
        );
        assert_eq!(
            group(
                "postgres",
                "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/bench-primary -c x"
            ),
            "PostgreSQL bench-primary"
        );
        assert_eq!(
            group("beam.smp", "/usr/lib/erlang/erts/bin/beam.smp"),
            "RabbitMQ"
        );
        assert_eq!(group("sshd", "sshd: root"), "other");
    }

    #[test]
    fn the_table_shows_microseconds_per_operation_services_first() {
        let run = Throughput {
            concurrency: 64,
            seconds: 2.0,
            rps: 1000.0,
            ok: 2000,
            errors: 0,
            error_kinds: BTreeMap::new(),
            latency: crate::load::Latency::default(),
            per_second: Vec::new(),
            target_rps: None,
            served_by: BTreeMap::new(),
            ids: Vec::new(),
            window: None,
            cpu: Some(CpuUse {
                seconds: 2.0,
                by_group: BTreeMap::from([
                    ("bench (load)".to_owned(), 0.1),
                    ("PostgreSQL replica-1".to_owned(), 0.5),
                    ("read-api".to_owned(), 0.3),
                ]),
            }),
        };
        let unmeasured = Throughput {
            cpu: None,
            ..run.clone()
        };
        let table = table(&[("by id".to_owned(), &run), ("old".to_owned(), &unmeasured)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| Run | ops/s | busy cores | read-api | PostgreSQL replica-1 | bench (load) |"
        );
        assert_eq!(lines[2], "| by id | 1000 | 0.45 | 150 | 250 | 50 |");
        assert_eq!(
            lines.len(),
            3,
            "a run without CPU figures has no row: {table}"
        );
        assert!(super::table(&[("old".to_owned(), &unmeasured)]).is_empty());
    }

    #[test]
    fn busy_work_shows_up_in_this_process_group() {
        let start = Snapshot::take().expect("/proc is readable");
        let spin_until = Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < spin_until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let end = Snapshot::take().expect("/proc is readable");
        let used = start.until(&end);
        let own = used.by_group.get("other").copied().unwrap_or(0.0)
            + used.by_group.get("bench (load)").copied().unwrap_or(0.0);
        // The test binary's name is neither a service nor a cluster: it counts as other.
        assert!(own >= 0.1, "spun 0.3 s but saw {own} s: {used:?}");
        assert!(used.micros_per_op("other", 1000) > 0.0);
        assert_eq!(used.micros_per_op("write-api", 0), 0.0);
    }
}
