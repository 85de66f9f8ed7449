//! The end-to-end benchmark's report: Markdown, JSON and an SVG chart of
//! rate and latency over the run, from what `main` measured.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use chrono::Utc;

use super::{Point, Probe, STAGES, Step, ms};

/// The machine's limits, measured with the pipeline stopped.
pub struct Limits {
    pub psql_copy: Option<f64>,
    pub kafka: Option<f64>,
    pub mosquitto: Option<f64>,
    /// Bytes of one sample's JSON record (Kafka's benchmark record size).
    pub record_bytes: f64,
}

/// What a run measured.
pub struct Run<'a> {
    pub out: &'a Path,
    pub machine: &'a str,
    pub stations: usize,
    pub mqtt_stations: usize,
    pub partitions: i32,
    pub steps: &'a [Step],
    pub probes: &'a [Probe],
    pub timeline: &'a [Point],
    /// CPU seconds by process at the start and the end of the load.
    pub cpu_start: &'a HashMap<String, f64>,
    pub cpu_end: &'a HashMap<String, f64>,
    pub peak_rss: &'a HashMap<String, f64>,
    pub run_secs: f64,
    pub acked: u64,
    pub probe_readings: i64,
    pub stored: i64,
    pub lost: i64,
    pub stored_unacknowledged: i64,
    pub redeliveries_skipped: u64,
    pub limits: Limits,
}

/// Writes `e2e-<time>.{md,json,svg}` under `r.out` and prints the
/// Markdown.
pub fn write(r: &Run<'_>) -> Result<()> {
    let sustained_rate = r
        .steps
        .iter()
        .filter(|s| s.sustained)
        .map(|s| s.stored_per_s.min(s.judged_per_s))
        .fold(0.0, f64::max);
    let readings_total = r.stored.max(1) as f64;
    let cpu_run: Vec<(String, f64)> = {
        let mut v: Vec<(String, f64)> = r
            .cpu_end
            .iter()
            .map(|(k, v)| (k.clone(), v - r.cpu_start.get(k).copied().unwrap_or(0.0)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    std::fs::create_dir_all(r.out)?;
    let mut md = String::new();
    let _ = writeln!(md, "# End-to-end benchmark, {stamp}\n");
    let _ = writeln!(
        md,
        "Machine: {}. Everything on this machine: {} simulated stations ({} over MQTT, {} over TCP JSON lines, 4 readings per sample), Mosquitto, `quantrac-ingest`, Kafka, `quantrac-processor`, PostgreSQL, `quantrac-alerting`, one instance each, the run's Kafka topics of {} partitions; probes (a normal value, then one over the limit, every `--probe-every`, rotating over `--probe-stations` stations) on their own TCP connection. Command: `target/release/e2e {}`.\n",
        r.machine,
        r.stations,
        r.mqtt_stations,
        r.stations - r.mqtt_stations,
        r.partitions,
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(
        md,
        "**Highest rate sustained** (stored and judged: neither the storage nor the judging backlog growing by more than 2 % of the offered rate): **{sustained_rate:.0} readings/s**.\n"
    );
    let _ = writeln!(
        md,
        "| offered/s (background + probes) | acked/s | stored/s | judged/s | growth of acked−stored /s | growth of stored−judged /s | sustained | probes | publish→committed p50 / p99 / max ms | publish→alert p50 / p99 / max ms |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|");
    for s in r.steps {
        let _ = writeln!(
            md,
            "| {:.0} | {:.0} | {:.0} | {:.0} | {:+.0} | {:+.0} | {} | {} | {} / {} / {} | {} / {} / {} |",
            s.offered,
            s.acked_per_s,
            s.stored_per_s,
            s.judged_per_s,
            s.backlog_growth_per_s,
            s.judge_backlog_growth_per_s,
            if s.sustained { "yes" } else { "no" },
            s.probes,
            ms(s.committed_p50),
            ms(s.committed_p99),
            ms(s.committed_max),
            ms(s.alert_p50),
            ms(s.alert_p99),
            ms(s.alert_max)
        );
    }
    let _ = writeln!(
        md,
        "\nWhere a probe's time goes, stage by stage (p50 / p99 / max ms; Kafka's timestamps are in whole ms, and the watchers share the load generator's process):\n"
    );
    let _ = writeln!(md, "| offered/s | {} |", STAGES.join(" | "));
    let _ = writeln!(md, "|---:|{}", "---:|".repeat(STAGES.len()));
    for s in r.steps {
        let _ = writeln!(
            md,
            "| {:.0} | {} |",
            s.offered,
            s.stages
                .iter()
                .map(|[a, b, c]| format!("{} / {} / {}", ms(*a), ms(*b), ms(*c)))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let _ = writeln!(
        md,
        "\nCPU cores used during each step, by process; \"other\" is the rest of the machine's busy time, and \"waiting for a CPU\" the share of the step during which some runnable task waited (`/proc/pressure/cpu`): high while the pipeline's own processes leave cores idle, it means the machine is shared and the step's latencies are not the pipeline's alone:\n"
    );
    let names: Vec<String> = cpu_run.iter().map(|(k, _)| k.clone()).collect();
    let _ = writeln!(
        md,
        "| offered/s | {} | other | waiting for a CPU |",
        names.join(" | ")
    );
    let _ = writeln!(md, "|---:|{}", "---:|".repeat(names.len() + 2));
    let share = |v: Option<f64>, pct: bool| match v {
        Some(v) if pct => format!("{:.0} %", v * 100.0),
        Some(v) => format!("{v:.2}"),
        None => "–".to_owned(),
    };
    for s in r.steps {
        let _ = writeln!(
            md,
            "| {:.0} | {} | {} | {} |",
            s.offered,
            names
                .iter()
                .map(|n| format!("{:.2}", s.cores.get(n).copied().unwrap_or(0.0)))
                .collect::<Vec<_>>()
                .join(" | "),
            share(s.other_cores, false),
            share(s.cpu_wait_share, true)
        );
    }
    let _ = writeln!(
        md,
        "\nWhole run ({:.0} s, {readings_total:.0} readings stored): CPU seconds, CPU cost of one reading, peak memory:\n",
        r.run_secs
    );
    let _ = writeln!(
        md,
        "| process | CPU s | µs CPU per reading | peak RSS MiB |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    for (k, v) in &cpu_run {
        let _ = writeln!(
            md,
            "| {k} | {v:.1} | {:.1} | {:.0} |",
            v / readings_total * 1e6,
            r.peak_rss.get(k).copied().unwrap_or(0.0)
        );
    }
    let _ = writeln!(
        md,
        "\n(PostgreSQL's memory is the sum over its processes, shared buffers counted in each: an upper bound.)\n"
    );
    let _ = writeln!(
        md,
        "Delivery: {} readings acknowledged to stations ({} of them probes'); {} stored; **{} missing**; {} stored whose acknowledgement the load generator did not wait for at the end; {} redelivered readings skipped as duplicates by the processor (rows are unique by station, parameter and time).\n",
        r.acked,
        r.probe_readings,
        r.stored,
        r.lost,
        r.stored_unacknowledged,
        r.redeliveries_skipped
    );
    let _ = writeln!(md, "## The machine's limits (pipeline stopped)\n");
    let _ = writeln!(
        md,
        "| limit | rate | pipeline's sustained rate as a share |"
    );
    let _ = writeln!(md, "|---|---:|---:|");
    let share = |x: Option<f64>, per_reading: f64| {
        x.map_or("–".into(), |x| {
            format!("{:.2}", sustained_rate / (x * per_reading))
        })
    };
    let _ = writeln!(
        md,
        "| `psql \\copy` of the stored rows into a copy of `readings` | {} rows/s | {} |",
        r.limits.psql_copy.map_or("–".into(), |x| format!("{x:.0}")),
        share(r.limits.psql_copy, 1.0)
    );
    let _ = writeln!(
        md,
        "| Kafka `ProducerPerformance`, {:.0}-byte records, acks=all (one record = one sample = 4 readings) | {} records/s | {} |",
        r.limits.record_bytes,
        r.limits.kafka.map_or("–".into(), |x| format!("{x:.0}")),
        share(r.limits.kafka, 4.0)
    );
    let _ = writeln!(
        md,
        "| Mosquitto QoS 1 loopback publish (one client, PUBACKed; one message = 4 readings) | {} messages/s | {} |",
        r.limits.mosquitto.map_or("–".into(), |x| format!("{x:.0}")),
        share(r.limits.mosquitto, 4.0)
    );
    let json_out = serde_json::json!({
        "stamp": stamp, "machine": r.machine, "stations": r.stations, "partitions": r.partitions, "mqtt_stations": r.mqtt_stations,
        "sustained_readings_per_s": sustained_rate, "steps": r.steps, "probes": r.probes, "timeline": r.timeline,
        "cpu_seconds": cpu_run.iter().cloned().collect::<HashMap<_, _>>(), "peak_rss_mib": r.peak_rss,
        "acked": r.acked, "stored": r.stored, "lost": r.lost, "stored_unacknowledged": r.stored_unacknowledged, "redeliveries_skipped": r.redeliveries_skipped,
        "limits": {"psql_copy_rows_per_s": r.limits.psql_copy, "kafka_records_per_s": r.limits.kafka, "mosquitto_messages_per_s": r.limits.mosquitto},
    });
    let stem = r.out.join(format!("e2e-{stamp}"));
    let svg = chart(r.timeline, r.probes);
    std::fs::write(stem.with_extension("svg"), svg)?;
    let _ = writeln!(md, "\n![rate and latency over the run](e2e-{stamp}.svg)");
    std::fs::write(stem.with_extension("md"), &md)?;
    // Compact: thousands of probes and samples per run.
    std::fs::write(
        stem.with_extension("json"),
        serde_json::to_string(&json_out)?,
    )?;
    println!("\n{md}\nreport: {}.{{md,json,svg}}", stem.display());
    Ok(())
}

/// Rate (acked, stored) and probe latencies over the run, as SVG.
fn chart(points: &[Point], probes: &[Probe]) -> String {
    let (w, h, pad) = (900.0, 420.0, 50.0);
    let t_max = points.iter().map(|p| p.t).fold(1.0, f64::max);
    let r_max = points
        .iter()
        .map(|p| p.acked.max(p.stored).max(p.offered))
        .fold(1.0, f64::max)
        * 1.1;
    let l_max = probes
        .iter()
        .filter_map(|p| p.alert_ms)
        .fold(10.0, f64::max)
        * 1.1;
    let x = |t: f64| pad + (w - 2.0 * pad) * t / t_max;
    let y = |v: f64, max: f64| h - pad - (h - 2.0 * pad) * v / max;
    let line = |f: &dyn Fn(&Point) -> f64, colour: &str| {
        let pts: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.t), y(f(p), r_max)))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            pts.join(" ")
        )
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = write!(s, "<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>");
    let _ = write!(
        s,
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - pad,
        w - pad,
        h - pad
    );
    let _ = write!(
        s,
        "<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>",
        h - pad
    );
    let _ = write!(
        s,
        "<text x=\"{pad}\" y=\"{}\">readings/s (max {r_max:.0}): offered grey, acked blue, stored green</text>",
        pad - 20.0
    );
    let _ = write!(
        s,
        "<text x=\"{pad}\" y=\"{}\">publish→alert ms (red dots, right scale, max {l_max:.0})</text>",
        pad - 6.0
    );
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\">seconds ({t_max:.0})</text>",
        w / 2.0,
        h - 15.0
    );
    s.push_str(&line(&|p| p.offered, "#999"));
    s.push_str(&line(&|p| p.acked, "#1f5fbf"));
    s.push_str(&line(&|p| p.stored, "#2e8b57"));
    for p in probes {
        if let Some(l) = p.alert_ms {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.5\" fill=\"#c0392b\"/>",
                x(p.at_s),
                y(l, l_max)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
