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
    for field in ["p50", "p99", "p999", "max"] {
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
