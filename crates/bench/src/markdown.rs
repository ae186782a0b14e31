//! The report as Markdown: the targets first, then each figure beside its baseline.

use std::fmt::Write as _;

use crate::load::Throughput;
use crate::report::{Figure, Report};

fn met(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "✅ met",
        Some(false) => "❌ not met",
        None => "— n/a",
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn errors(t: &Throughput) -> String {
    if t.errors == 0 {
        "0".into()
    } else {
        let kinds: Vec<String> = t
            .error_kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        cell(&kinds.join(", "))
    }
}

fn throughput_cells(figure: &Figure<Throughput>) -> String {
    match figure {
        Figure::Measured(t) => format!(
            "{:.0} | {:.2} | {:.2} | {}",
            t.rps,
            t.latency.p50_ms,
            t.latency.p99_ms,
            errors(t)
        ),
        Figure::Unavailable { reason } => format!("unavailable: {} | | |", cell(reason)),
    }
}

fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or("—".into(), |r| format!("{r:.2}"))
}

fn mb(value: Option<f64>) -> String {
    value.map_or("—".into(), |v| format!("{v:.1}"))
}

/// The report as Markdown.
pub fn render(report: &Report) -> String {
    let mut md = String::new();
    let s = &report.meta.settings;
    let _ = writeln!(
        md,
        "# Benchmark {} ({} mode)\n",
        report.meta.started_at,
        if s.quick { "quick" } else { "full" }
    );
    let _ = writeln!(
        md,
        "{} cores · git {} · broker: {} · finished {} · warm-up {} s, measured {} s per run · \
         lag at half load for {} s, polled every {} ms · catch-up of {} changes\n",
        report.meta.cores,
        report.meta.git.as_deref().unwrap_or("unknown"),
        report
            .meta
            .broker
            .as_deref()
            .unwrap_or("as RABBITMQ_URL names it"),
        report.meta.finished_at,
        s.warmup_s,
        s.duration_s,
        s.lag_duration_s,
        s.lag_poll_ms,
        s.catchup_changes
    );

    md.push_str("## Targets\n\n| Target | Wanted | Measured | |\n|---|---|---|---|\n");
    for t in &report.targets {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            cell(&t.name),
            cell(&t.wanted),
            cell(&t.measured),
            met(t.met)
        );
    }

    md.push_str(
        "\n## 1. Writes: `POST /api/products` vs the same transaction straight to the primary\n\n\
         | Concurrency | write-api req/s | p50 ms | p99 ms | errors | direct SQL req/s | p50 ms | p99 ms | errors | ratio |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (c, pair) in &report.writes {
        let _ = writeln!(
            md,
            "| {c} | {} | {} | {} |",
            throughput_cells(&pair.product),
            throughput_cells(&pair.baseline),
            ratio_cell(pair.ratio)
        );
    }

    match &report.writes_logical {
        Figure::Measured(l) => {
            let _ = writeln!(
                md,
                "\nBaseline, PostgreSQL logical replication of the same inserts (one product row \
                 per transaction, no outbox) to both replica clusters at concurrency {}: \
                 **{:.0} req/s** (p50 {:.2} ms, p99 {:.2} ms, {} errors); replica-visible lag \
                 p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} tracked, {}).",
                l.write.concurrency,
                l.write.rps,
                l.write.latency.p50_ms,
                l.write.latency.p99_ms,
                errors(&l.write),
                l.lag.overall.p50_ms,
                l.lag.overall.p99_ms,
                l.lag.overall.max_ms,
                l.lag.tracked,
                l.lag.verdict
            );
        }
        Figure::Unavailable { reason } => {
            let _ = writeln!(
                md,
                "\nBaseline (PostgreSQL logical replication of the same inserts): unavailable: \
                 {reason}"
            );
        }
    }

    md.push_str("\n## 2. Replication lag: from a write's 201 until every replica has it\n\n");
    match &report.lag_half_load {
        Figure::Measured(h) => {
            let _ = writeln!(
                md,
                "At half load ({:.0} writes/s asked, {:.0} achieved, {} writes tracked, {} missed): \
                 **p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms**.\n",
                h.write.target_rps.unwrap_or(0.0),
                h.write.rps,
                h.tracked,
                h.missed,
                h.lag.p50_ms,
                h.lag.p99_ms,
                h.lag.max_ms
            );
        }
        Figure::Unavailable { reason } => {
            let _ = writeln!(md, "At half load: unavailable: {reason}\n");
        }
    }
    md.push_str(
        "At full load (during the write runs above):\n\n\
         | Concurrency | tracked | p50 ms | p99 ms | max ms | first third p99 | last third p99 | drained after s | verdict |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (c, figure) in &report.lag_full_load {
        match figure {
            Figure::Measured(t) => {
                let _ = writeln!(
                    md,
                    "| {c} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {} |",
                    t.tracked,
                    t.overall.p50_ms,
                    t.overall.p99_ms,
                    t.overall.max_ms,
                    t.first_third.p99_ms,
                    t.last_third.p99_ms,
                    t.drain_seconds,
                    cell(&t.verdict)
                );
            }
            Figure::Unavailable { reason } => {
                let _ = writeln!(md, "| {c} | unavailable: {} | | | | | | | |", cell(reason));
            }
        }
    }

    md.push_str("\n## 3. Catch-up: the replicator restarted after changes piled up\n\n");
    match &report.catchup {
        Figure::Measured(c) => {
            let _ = writeln!(
                md,
                "{} changes written in {:.1} s while the replicator was stopped ({} errors), \
                 published {:.2} s later. From the replicator's start: first change applied \
                 everywhere after {:.2} s, both replicas level (confirmed by `replicator verify`, \
                 which took {:.2} s) after **{:.2} s: {:.0} changes/s** ({:.0} replica applies/s).\n",
                c.changes,
                c.write.seconds,
                c.write.errors,
                c.publish_seconds,
                c.first_apply_seconds,
                c.verify_seconds,
                c.seconds,
                c.changes_per_second,
                c.replica_applies_per_second
            );
        }
        Figure::Unavailable { reason } => {
            let _ = writeln!(md, "Unavailable: {reason}\n");
        }
    }
    match &report.catchup_baseline {
        Figure::Measured(l) => {
            let ratio = report
                .catchup
                .get()
                .map(|c| c.changes_per_second / l.rows_per_second);
            let _ = writeln!(
                md,
                "Baseline, PostgreSQL logical replication of the same {} rows to both replica \
                 clusters: {:.2} s, {:.0} rows/s; ratio {}.\n",
                l.rows,
                l.seconds,
                l.rows_per_second,
                ratio_cell(ratio)
            );
        }
        Figure::Unavailable { reason } => {
            let _ = writeln!(
                md,
                "Baseline (PostgreSQL logical replication): unavailable: {reason}\n"
            );
        }
    }

    md.push_str(
        "## 4. Reads: read-api vs the same queries straight to the replicas\n\n\
         | Query | read-api req/s | p50 ms | p99 ms | errors | direct SQL req/s | p50 ms | p99 ms | errors | ratio |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, pair) in [
        ("`GET /api/products/{id}`", &report.read_by_id),
        ("`GET /api/products?limit=100`", &report.read_list),
    ] {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} |",
            throughput_cells(&pair.product),
            throughput_cells(&pair.baseline),
            ratio_cell(pair.ratio)
        );
    }
    let pgpool = &report.read_by_id_pgpool;
    match (&pgpool.product, pgpool.product.reason()) {
        (_, Some(reason)) => {
            let _ = writeln!(md, "\npgpool-II (by id): unavailable: {reason}.");
        }
        (product, None) => {
            let _ = writeln!(
                md,
                "\nThe same lookups by id through pgpool-II (load balancing per statement over \
                 both replicas), as the proxy a user would otherwise put in front of them:\n\n\
                 | Query | pgpool-II req/s | p50 ms | p99 ms | errors | direct SQL req/s | p50 ms | p99 ms | errors | ratio |\n\
                 |---|---|---|---|---|---|---|---|---|---|\n\
                 | `SELECT … WHERE id = $1` | {} | {} | {} |",
                throughput_cells(product),
                throughput_cells(&pgpool.baseline),
                ratio_cell(pgpool.ratio)
            );
        }
    }

    for (name, pair) in [
        ("by id", &report.read_by_id),
        ("listing", &report.read_list),
    ] {
        if let Some(t) = pair.product.get()
            && !t.served_by.is_empty()
        {
            let sources: Vec<String> = t
                .served_by
                .iter()
                .map(|(source, n)| format!("{source} {n}"))
                .collect();
            let _ = writeln!(
                md,
                "\nread-api {name}, answers by `X-Served-By`: {}.",
                sources.join(", ")
            );
        }
    }

    render_strategies(&mut md, &report.strategies);
    render_scaling(&mut md, report.scaling.as_ref());

    md.push_str(
        "\n## 7. Memory (RSS, MiB)\n\n\
         | Service | idle at start | max sampled under load | peak (VmHWM) | idle at end |\n\
         |---|---|---|---|---|\n",
    );
    for service in crate::services::SERVICES {
        let m = report.memory.get(service).cloned().unwrap_or_default();
        let _ = writeln!(
            md,
            "| {service}{} | {} | {} | {} | {} |",
            if m.restarted {
                " (restarted for catch-up)"
            } else {
                ""
            },
            mb(m.idle_start_mb),
            mb(m.load_max_mb),
            mb(m.peak_mb),
            mb(m.idle_end_mb)
        );
    }

    render_cpu(&mut md, report);

    if !report.notes.is_empty() {
        md.push_str("\n## Notes\n\n");
        for note in &report.notes {
            let _ = writeln!(md, "- {note}");
        }
    }
    md
}

/// CPU per operation by process for the write and read runs: what each request costs each
/// process when they all share the machine's cores.
fn render_cpu(md: &mut String, report: &Report) {
    let mut runs: Vec<(String, &Throughput)> = Vec::new();
    for (c, pair) in &report.writes {
        runs.extend(
            pair.product
                .get()
                .map(|t| (format!("write-api POST, c={c}"), t)),
        );
        runs.extend(
            pair.baseline
                .get()
                .map(|t| (format!("direct SQL insert, c={c}"), t)),
        );
    }
    if let Some(l) = report.writes_logical.get() {
        let c = l.write.concurrency;
        runs.push((format!("logical replication insert, c={c}"), &l.write));
    }
    if let Some(h) = report.lag_half_load.get() {
        runs.push(("write-api POST at half load".to_owned(), &h.write));
    }
    for (name, pair) in [
        ("by id", &report.read_by_id),
        ("first page", &report.read_list),
    ] {
        runs.extend(pair.product.get().map(|t| (format!("read-api {name}"), t)));
        runs.extend(
            pair.baseline
                .get()
                .map(|t| (format!("direct SQL {name}"), t)),
        );
    }
    if let Some(t) = report.read_by_id_pgpool.product.get() {
        runs.push(("pgpool-II by id".to_owned(), t));
    }
    let table = crate::cpu::table(&runs);
    if table.is_empty() {
        return;
    }
    let _ = write!(
        md,
        "\n## 8. Where the CPU went: microseconds of CPU per operation, by process\n\n\
         User and system time from /proc over each measured window, divided by the operations \
         it completed; busy cores is the total over the window's length.\n\n{table}"
    );
}

fn render_strategies(md: &mut String, strategies: &Figure<Vec<crate::strategies::StrategyRun>>) {
    md.push_str(
        "\n## 5. Routing under one slow replica: `GET /api/products/{id}` per strategy\n\n",
    );
    let runs = match strategies {
        Figure::Measured(runs) => runs,
        Figure::Unavailable { reason } => {
            let _ = writeln!(md, "Unavailable: {reason}");
            return;
        }
    };
    md.push_str(
        "Each run is a read-api of its own over both replicas, `replica-2` through a proxy \
         that holds back each of its answers; the first row is the reference with nothing \
         slowed.\n\n\
         | Strategy | replica-2 slowed by | req/s | p50 ms | p99 ms | errors | replica-2's share |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        let _ = writeln!(
            md,
            "| {} | {} ms | {:.0} | {:.1} | {:.1} | {} | {:.1} % |",
            run.strategy,
            run.slowed_ms,
            run.reads.rps,
            run.reads.latency.p50_ms,
            run.reads.latency.p99_ms,
            errors(&run.reads),
            run.slow_share * 100.0
        );
    }
}

fn render_scaling(md: &mut String, scaling: Option<&Figure<Vec<crate::scaling::ScalingRun>>>) {
    md.push_str("\n## 6. Scaling: read-api's queries as data and load grow\n\n");
    let runs = match scaling {
        Some(Figure::Measured(runs)) => runs,
        None => {
            md.push_str("Not measured in this run (`--scaling`, `make bench-scaling`).\n");
            return;
        }
        Some(Figure::Unavailable { reason }) => {
            let _ = writeln!(md, "Unavailable: {reason}");
            return;
        }
    };
    md.push_str(
        "Products seeded identically on the primary and both replicas; every query through \
         read-api (`limit=100`): by id, the first page, each filter alone (a five-character \
         name substring that one row or a few match, a 0.50 price range, `inStock=false`, one \
         row in a thousand), and a page in the middle of the table by its cursor.\n\n\
         | Rows | Query | Concurrency | req/s | p50 ms | p99 ms | errors | served by |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        let sources: Vec<String> = run.reads.get().map_or_else(Vec::new, |t| {
            t.served_by
                .iter()
                .map(|(source, n)| format!("{source} {n}"))
                .collect()
        });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            run.rows,
            run.query,
            run.concurrency,
            throughput_cells(&run.reads),
            sources.join(", ")
        );
    }
}
