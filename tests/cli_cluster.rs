//! The built `raftlog` binary end to end: `certs`, three `serve` processes,
//! `publish`, `consume`, `status`, the metrics endpoint, then `dump` and
//! `verify` on the stopped nodes' data dirs (the CLI contract, CLI.md).
//!
//! Run alone: `cargo test --profile ci --test cli_cluster -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::process::*;
use serde_json::Value;

const CLIENT_RUN: Duration = Duration::from_secs(60);

/// `GET /metrics` over plain HTTP/1.1; returns the body.
fn scrape(port: u16) -> String {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// Parses the Prometheus text exposition: every line is a `#` comment
/// (HELP, TYPE, UNIT, EOF) or `name{labels} value`; returns value by
/// series (name with labels).
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut series = BTreeMap::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let keyword = comment.split_whitespace().next().unwrap_or("");
            assert!(
                ["HELP", "TYPE", "UNIT", "EOF"].contains(&keyword),
                "unknown comment line {line:?}"
            );
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("a sample line needs a value: {line:?}"));
        let base = name.split('{').next().unwrap_or("");
        assert!(
            !base.is_empty()
                && base
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            number => number
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        series.insert(name.to_string(), value);
    }
    series
}

fn metric(series: &BTreeMap<String, f64>, name: &str) -> f64 {
    *series
        .get(name)
        .unwrap_or_else(|| panic!("no series {name} in {series:?}"))
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line:?}")))
        .collect()
}

/// The record bytes of a `consume`/`dump` JSON object (`data` or `data_b64`).
fn data_bytes(object: &Value) -> Vec<u8> {
    use base64::Engine;
    match (&object["data"], &object["data_b64"]) {
        (Value::String(text), Value::Null) => text.as_bytes().to_vec(),
        (Value::Null, Value::String(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("valid base64"),
        _ => panic!("exactly one of data/data_b64 in {object}"),
    }
}

/// Issue 6 / CLI.md: with certificates from `certs` and three `serve`
/// processes, `publish` prints one index per stdin line, `consume` prints
/// the same records back (text and JSON, `data_b64` for non-UTF-8),
/// `status --output json` has the documented fields, the metrics endpoint
/// serves Prometheus text whose commit index and append counter move, and
/// SIGTERM stops every node with exit 0.
#[test]
fn serve_processes_round_trip_published_lines_through_consume() {
    let metrics_port = common::free_tcp_port();
    let mut cluster = ServeCluster::prepare(
        3,
        &["--segment-bytes", "65536", "--max-record-bytes", "4096"],
    );
    let metrics_flag = format!("127.0.0.1:{metrics_port}");
    cluster.spawn(1, &["--metrics-listen", &metrics_flag]);
    cluster.spawn(2, &[]);
    cluster.spawn(3, &[]);
    let status = cluster.wait_leader(Duration::from_secs(30));
    for field in ["leader", "term", "commit_index", "log_start", "last_index"] {
        assert!(status[field].is_u64(), "status.{field} in {status}");
    }
    let nodes = status["nodes"].as_array().expect("status.nodes");
    assert_eq!(nodes.len(), 3, "{status}");
    for node in nodes {
        assert!(node["id"].is_u64(), "{node}");
        assert!(node["addr"].is_string(), "{node}");
        let role = node["role"].as_str().expect("role");
        assert!(
            ["leader", "follower", "candidate", "learner"].contains(&role),
            "{node}"
        );
        assert!(
            node["match_index"].is_u64() || node["match_index"].is_null(),
            "{node}"
        );
        assert!(node["reachable"].is_boolean(), "{node}");
    }
    let leader = status["leader"].as_u64().expect("leader");
    assert_eq!(
        nodes
            .iter()
            .filter(|node| node["role"] == "leader")
            .map(|node| node["id"].as_u64())
            .collect::<Vec<_>>(),
        vec![Some(leader)]
    );

    let before = parse_prometheus(&scrape(metrics_port));
    for name in [
        "raftlog_role",
        "raftlog_term",
        "raftlog_commit_index",
        "raftlog_last_index",
        "raftlog_log_start_index",
        "raftlog_appended_records_total",
        "raftlog_elections_total",
    ] {
        metric(&before, name);
    }
    assert!(
        before
            .keys()
            .any(|name| name.starts_with("raftlog_fsync_seconds_bucket")),
        "fsync histogram: {before:?}"
    );

    // 3,000 UTF-8 lines and one that is not UTF-8 (~180 KB: several segments).
    let mut lines: Vec<Vec<u8>> = (0..3_000)
        .map(|n| format!("line {n:06} {}", "z".repeat(40)).into_bytes())
        .collect();
    lines.push(vec![0xff, 0xfe, b'!']);
    let mut stdin = Vec::new();
    for line in &lines {
        stdin.extend_from_slice(line);
        stdin.push(b'\n');
    }
    let published = cluster.client(&["publish", "--batch", "100"], &stdin, CLIENT_RUN);
    published.assert_success("publish");
    let indexes: Vec<u64> = published
        .stdout_lines()
        .iter()
        .map(|line| {
            line.parse()
                .unwrap_or_else(|_| panic!("index line {line:?}"))
        })
        .collect();
    assert_eq!(indexes.len(), lines.len(), "one index per input line");
    assert!(indexes.windows(2).all(|pair| pair[0] < pair[1]));

    let consumed = cluster.client(&["consume", "--from", "start"], b"", CLIENT_RUN);
    consumed.assert_success("consume text");
    assert!(
        consumed.stdout_bytes == stdin,
        "consume prints every published line back, in order"
    );

    let consumed_json = cluster.client(
        &["consume", "--from", "start", "--output", "json"],
        b"",
        CLIENT_RUN,
    );
    consumed_json.assert_success("consume json");
    let objects = json_lines(&consumed_json.stdout);
    assert_eq!(
        objects
            .iter()
            .map(|object| object["index"].as_u64().expect("index"))
            .collect::<Vec<_>>(),
        indexes
    );
    assert_eq!(
        objects.iter().map(data_bytes).collect::<Vec<_>>(),
        lines,
        "data (and data_b64 for the non-UTF-8 line) decode to the input"
    );
    assert!(objects.last().expect("objects")["data_b64"].is_string());

    let from = indexes[100].to_string();
    let limited = cluster.client(
        &[
            "consume", "--from", &from, "--limit", "5", "--output", "json",
        ],
        b"",
        CLIENT_RUN,
    );
    limited.assert_success("consume --from N --limit 5");
    let limited = json_lines(&limited.stdout);
    assert_eq!(
        limited
            .iter()
            .map(|object| object["index"].as_u64().expect("index"))
            .collect::<Vec<_>>(),
        indexes[100..105].to_vec()
    );

    let published_json = cluster.client(
        &["publish", "--output", "json", "--producer-id", "99"],
        b"json-a\njson-b\n",
        CLIENT_RUN,
    );
    published_json.assert_success("publish --output json");
    // A client restart replaying the same input with the same producer id
    // and first sequence prints the same indexes and appends nothing.
    let replayed = cluster.client(
        &[
            "publish",
            "--output",
            "json",
            "--producer-id",
            "99",
            "--first-seq",
            "0",
        ],
        b"json-a\njson-b\n",
        CLIENT_RUN,
    );
    replayed.assert_success("publish replay");
    assert_eq!(replayed.stdout, published_json.stdout, "same indexes");
    let answers = json_lines(&published_json.stdout);
    assert_eq!(answers.len(), 2);
    let last_index = answers[1]["index"].as_u64().expect("{\"index\":N}");
    assert!(answers[0]["index"].as_u64() < Some(last_index));
    assert!(answers[0]["index"].as_u64() > indexes.last().copied());

    // Node 1's gauges follow the commit (it may be a follower: allow a heartbeat).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let after = parse_prometheus(&scrape(metrics_port));
        if metric(&after, "raftlog_commit_index") >= last_index as f64
            || std::time::Instant::now() > deadline
        {
            break after;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metric(&after, "raftlog_commit_index") >= last_index as f64,
        "commit index gauge moved to {last_index}: {after:?}"
    );
    assert!(
        metric(&after, "raftlog_appended_records_total")
            >= metric(&before, "raftlog_appended_records_total") + lines.len() as f64,
        "the append counter moved by the published records"
    );
    assert!(metric(&after, "raftlog_last_index") >= last_index as f64);

    cluster.stop_all();

    // Offline: dump and verify the stopped nodes' data dirs.
    let dumped = run(
        &[
            "dump",
            &cluster.data_dir(1).display().to_string(),
            "--output",
            "json",
        ],
        b"",
        CLIENT_RUN,
    );
    dumped.assert_success("dump");
    let entries = json_lines(&dumped.stdout);
    for entry in &entries {
        assert!(entry["index"].is_u64() && entry["term"].is_u64(), "{entry}");
        let kind = entry["kind"].as_str().expect("kind");
        assert!(["data", "config", "noop"].contains(&kind), "{entry}");
        if kind == "data" {
            data_bytes(entry);
        }
    }
    let data: Vec<Vec<u8>> = entries
        .iter()
        .filter(|entry| entry["kind"] == "data")
        .map(data_bytes)
        .collect();
    let mut expected = lines.clone();
    expected.push(b"json-a".to_vec());
    expected.push(b"json-b".to_vec());
    assert_eq!(data, expected, "dump shows every record");

    for id in 1..=3 {
        let verified = run(
            &["verify", &cluster.data_dir(id).display().to_string()],
            b"",
            CLIENT_RUN,
        );
        verified.assert_success(&format!("verify node {id}"));
    }

    // Damage the middle of the oldest (sealed) segment of node 2.
    let mut segments: Vec<(u64, std::path::PathBuf)> =
        std::fs::read_dir(cluster.data_dir(2).join("log"))
            .expect("node 2 log dir")
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let first: u64 = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse()
                    .ok()?;
                Some((first, path))
            })
            .collect();
    segments.sort();
    assert!(segments.len() >= 2, "several segments: {segments:?}");
    let sealed = &segments[0].1;
    let mut bytes = std::fs::read(sealed).expect("read the segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(sealed, &bytes).expect("write the damaged segment");
    let damaged = run(
        &["verify", &cluster.data_dir(2).display().to_string()],
        b"",
        CLIENT_RUN,
    );
    assert!(
        !damaged.status.success(),
        "verify must fail on a flipped byte\n{}\n{}",
        damaged.stdout,
        damaged.stderr
    );
    let file_name = sealed
        .file_name()
        .and_then(|name| name.to_str())
        .expect("segment name");
    assert!(
        damaged.stdout.contains(file_name) || damaged.stderr.contains(file_name),
        "verify names {file_name}:\nstdout:\n{}\nstderr:\n{}",
        damaged.stdout,
        damaged.stderr
    );
}

/// Issue 5 (separate processes): `kill -9` of the leader's `serve` process
/// while `publish --producer-id` runs; a new leader is elected, publish
/// exits 0, and the log holds every line exactly once at the printed indexes.
#[test]
fn killing_the_leader_process_during_a_publish_loses_and_duplicates_nothing() {
    use std::process::{Command, Stdio};

    let mut cluster = ServeCluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(30))["leader"]
        .as_u64()
        .expect("leader id");
    let lines: Vec<String> = (0..3_000).map(|n| format!("kill9-{n:06}")).collect();

    let mut command = Command::new(RAFTLOG);
    command
        .args([
            "publish",
            "--producer-id",
            "7",
            "--batch",
            "20",
            "--inflight",
            "4",
        ])
        .args(cluster.client_flags())
        .args(["--timeout-ms", "2000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut publish = ChildGuard::spawn(command);
    let mut stdin = publish.child.stdin.take().expect("stdin");
    let stderr = publish.child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let mut stderr = stderr;
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let input = lines.clone();
    // Paced input, so the crash lands in the middle of the run.
    let writer = std::thread::spawn(move || {
        for chunk in input.chunks(100) {
            let mut text = chunk.join("\n");
            text.push('\n');
            if stdin.write_all(text.as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    let output = LineReader::new(publish.child.stdout.take().expect("stdout"));
    let mut printed = output.take(1_000, Duration::from_secs(60), "indexes before the crash");
    let status = cluster.stop(leader, libc::SIGKILL);
    assert!(!status.success(), "SIGKILL ends the leader");
    writer.join().expect("stdin writer");
    while printed.len() < lines.len() {
        match output.next_line(Duration::from_secs(60)) {
            Some(line) => printed.push(line),
            None => break,
        }
    }
    let exit = publish
        .wait_timeout(Duration::from_secs(60))
        .expect("publish exits after its input");
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        exit.success(),
        "publish exits 0 across the crash: {exit}\n{stderr}"
    );
    let indexes: Vec<u64> = printed
        .iter()
        .map(|line| line.parse().unwrap_or_else(|_| panic!("{line:?}")))
        .collect();
    assert_eq!(indexes.len(), lines.len(), "one index per line");

    let consumed = cluster.client(&["consume", "--output", "json"], b"", CLIENT_RUN);
    consumed.assert_success("consume after the crash");
    let objects = json_lines(&consumed.stdout);
    let data: Vec<String> = objects
        .iter()
        .map(|object| object["data"].as_str().expect("data").to_string())
        .collect();
    assert_eq!(data, lines, "every line exactly once, in order");
    let consumed_indexes: Vec<u64> = objects
        .iter()
        .map(|object| object["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(consumed_indexes, indexes, "printed indexes are the log's");
    cluster.stop_all();
}
