//! `raftlog bench --output json` (CLI.md): one JSON object with the
//! documented fields, measured on an embedded 3-node cluster.
//!
//! Run alone: `cargo test --profile ci --test cli_bench -- --nocapture`.

mod common;

use std::time::Duration;

use common::process::*;

/// Issue 6: `bench --embedded --nodes 3 --output json` prints one object
/// with records, seconds, records_per_sec, mb_per_sec, latency_us
/// {p50,p99,p999,max} and consume_records_per_sec, with sane values.
#[test]
fn bench_json_has_the_documented_fields() {
    let finished = run(
        &[
            "bench",
            "--embedded",
            "--nodes",
            "3",
            "--records",
            "2000",
            "--size",
            "100",
            "--inflight",
            "16",
            "--output",
            "json",
        ],
        b"",
        Duration::from_secs(120),
    );
    finished.assert_success("bench --embedded");
    let lines = finished.stdout_lines();
    assert_eq!(
        lines.len(),
        1,
        "one JSON object on stdout: {}",
        finished.stdout
    );
    let report: serde_json::Value = serde_json::from_str(lines[0]).expect("bench JSON");
    assert_eq!(report["records"].as_u64(), Some(2000), "{report}");
    for field in [
        "seconds",
        "records_per_sec",
        "mb_per_sec",
        "consume_records_per_sec",
    ] {
        let value = report[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} in {report}"));
        assert!(value > 0.0 && value.is_finite(), "{field} = {value}");
    }
    let latency = &report["latency_us"];
    let mut previous = 0.0;
    for field in ["p50", "p90", "p95", "p99", "p999", "max"] {
        let value = latency[field]
            .as_f64()
            .unwrap_or_else(|| panic!("latency_us.{field} in {report}"));
        assert!(
            value > 0.0 && value >= previous,
            "latency_us.{field} = {value} in {report}"
        );
        previous = value;
    }
    if let Some(read_back) = report["consume_records"].as_u64() {
        assert_eq!(
            read_back, 2000,
            "everything appended is read back: {report}"
        );
    }
    let rate = report["records_per_sec"].as_f64().unwrap_or(0.0);
    let seconds = report["seconds"].as_f64().unwrap_or(0.0);
    assert!(
        (rate * seconds - 2000.0).abs() < 2000.0 * 0.05,
        "records_per_sec x seconds = records: {report}"
    );
}

/// Issue 14: `--warmup-records` appends uncounted records first (the report
/// counts only the measured ones, the log holds both), and `--csv FILE`
/// writes one line per second of the measured run.
#[test]
fn bench_warms_up_uncounted_and_writes_the_per_second_series() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("series.csv");
    let csv_arg = csv.display().to_string();
    let finished = run(
        &[
            "bench",
            "--embedded",
            "--seconds",
            "2.5",
            "--warmup-records",
            "500",
            "--csv",
            &csv_arg,
            "--output",
            "json",
        ],
        b"",
        Duration::from_secs(120),
    );
    finished.assert_success("bench --warmup-records --csv");
    let report: serde_json::Value =
        serde_json::from_str(finished.stdout.trim()).expect("bench JSON");
    let records = report["records"].as_u64().expect("records");
    let series = std::fs::read_to_string(&csv).expect("the csv file");
    let mut lines = series.lines();
    assert_eq!(lines.next(), Some("second,records_per_sec,p50_us,p99_us"));
    let rows: Vec<Vec<u64>> = lines
        .map(|line| {
            line.split(',')
                .map(|field| field.parse().expect("a number"))
                .collect()
        })
        .collect();
    assert!(rows.len() >= 2, "a row per whole second: {series}");
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), 4, "{series}");
        assert_eq!(row[0], n as u64 + 1, "seconds in order: {series}");
        assert!(row[1] > 0 && row[2] > 0 && row[3] >= row[2], "{series}");
    }
    let in_series: u64 = rows.iter().map(|row| row[1]).sum();
    assert!(
        in_series <= records,
        "the series counts only measured records ({in_series} of {records})"
    );
    assert_eq!(
        report["consume_records"].as_u64(),
        Some(records),
        "the read-back covers the measured records only: {report}"
    );
}

/// Issue 14: `--breakdown` reports, per node, where appends spent their
/// time: every request timed once per stage on the leader, the followers'
/// sync share on each follower, and stages that nest agree (commit within
/// total, total within what the publisher measured).
#[test]
fn bench_breakdown_times_every_append_stage_by_stage() {
    let finished = run(
        &[
            "bench",
            "--embedded",
            "--records",
            "600",
            "--inflight",
            "1",
            "--breakdown",
            "--output",
            "json",
        ],
        b"",
        Duration::from_secs(120),
    );
    finished.assert_success("bench --breakdown");
    let report: serde_json::Value =
        serde_json::from_str(finished.stdout.trim()).expect("bench JSON");
    let nodes = report["breakdown"].as_array().expect("breakdown array");
    assert_eq!(nodes.len(), 3, "one entry per node: {report}");
    let leaders: Vec<&serde_json::Value> = nodes
        .iter()
        .filter(|node| node["leader"] == serde_json::Value::Bool(true))
        .collect();
    assert_eq!(leaders.len(), 1, "one leader: {report}");
    let stages = &leaders[0]["stages"];
    let samples = |stage: &str| stages[stage]["samples"].as_u64().unwrap_or(0);
    let p50 = |stage: &str| stages[stage]["p50_us"].as_u64().unwrap_or(0);
    // One record per request at window 1: each stage once per record.
    for stage in ["queue", "commit", "reply", "total"] {
        assert_eq!(samples(stage), 600, "{stage} once per append: {report}");
    }
    assert!(samples("local_sync") >= 600, "{report}");
    assert!(samples("follower_ack") >= 600, "{report}");
    assert!(
        p50("commit") <= p50("total"),
        "commit within total: {report}"
    );
    let client_p50 = report["latency_us"]["p50"].as_u64().unwrap_or(0);
    assert!(
        p50("total") <= client_p50,
        "the node's part within the publisher's: {report}"
    );
    for follower in nodes.iter().filter(|node| node["leader"] != true) {
        let synced = follower["stages"]["follower_sync"]["samples"]
            .as_u64()
            .unwrap_or(0);
        assert!(synced >= 600, "each follower syncs every append: {report}");
    }
}
