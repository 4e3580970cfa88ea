//! The built binary for the everyday CLI: the cluster from the environment,
//! `publish --input json`, shell completions, the `status` exit code, sizes
//! with units, the node's probes and its log formats (CLI.md).
//!
//! Run alone: `cargo test --profile ci --test cli_daily`.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::*;
use serde_json::Value;

const CLIENT_RUN: Duration = Duration::from_secs(60);
const LEADER_WAIT: Duration = Duration::from_secs(30);

/// `raftlog ARGS` with `env` set and no `--cluster`/`--tls-dir` of its own.
fn run_with_env(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Finished {
    let mut command = Command::new(RAFTLOG);
    command
        .args(args)
        .env_remove("RAFTLOG_CLUSTER")
        .env_remove("RAFTLOG_TLS_DIR");
    for (name, value) in env {
        command.env(name, value);
    }
    run_command(command, stdin, CLIENT_RUN)
}

/// One `GET path` over plain HTTP/1.1: (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {response:?}"));
    let status = head.lines().next().unwrap_or("").to_string();
    (status, body.to_string())
}

/// Polls `path` until its status line starts with `want` (bounded).
fn wait_http(port: u16, path: &str, want: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| http_get(port, path));
        if let Some((status, body)) = &answer {
            if status.starts_with(want) {
                return serde_json::from_str(body)
                    .unwrap_or_else(|error| panic!("{path} body {body:?}: {error}"));
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {want} within {timeout:?}; last: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The records of `consume --output json`, without their indexes (two
/// clusters may number them differently): each line's other keys, as text.
fn records_without_index(consume_output: &str) -> Vec<String> {
    consume_output
        .lines()
        .map(|line| {
            let mut object: serde_json::Map<String, Value> =
                serde_json::from_str(line).unwrap_or_else(|error| panic!("{line:?}: {error}"));
            assert!(object.remove("index").is_some_and(|index| index.is_u64()));
            Value::Object(object).to_string()
        })
        .collect()
}

#[test]
fn client_commands_take_the_cluster_from_the_environment_and_flags_win() {
    for subcommand in [
        &["publish"][..],
        &["consume"],
        &["status"],
        &["admin", "add-node"],
        &["admin", "remove-node"],
        &["admin", "transfer-leader"],
        &["bench"],
    ] {
        let mut args = subcommand.to_vec();
        args.push("--help");
        let help = run_with_env(&args, &[], b"");
        help.assert_success("--help");
        for variable in ["[env: RAFTLOG_CLUSTER=]", "[env: RAFTLOG_TLS_DIR=]"] {
            assert!(
                help.stdout.contains(variable),
                "{subcommand:?} --help does not name {variable}:\n{}",
                help.stdout
            );
        }
    }

    let mut cluster = ServeCluster::start(3, &[]);
    cluster.wait_leader(LEADER_WAIT);
    let addrs = cluster.cluster_arg();
    let tls = cluster.tls_dir.display().to_string();
    let env = [
        ("RAFTLOG_CLUSTER", addrs.as_str()),
        ("RAFTLOG_TLS_DIR", tls.as_str()),
    ];
    let published = run_with_env(&["publish"], &env, b"from-env\n");
    published.assert_success("publish with the environment");
    assert_eq!(published.stdout_lines().len(), 1, "{}", published.stdout);
    let consumed = run_with_env(&["consume", "--output", "json"], &env, b"");
    consumed.assert_success("consume with the environment");
    assert!(
        consumed.stdout.contains(r#""data":"from-env""#),
        "{}",
        consumed.stdout
    );
    run_with_env(&["status"], &env, b"").assert_success("status with the environment");

    // A flag wins over its variable: a wrong directory in the environment
    // is not even read when --tls-dir is given, and a wrong address list
    // when --cluster is.
    let wrong = [
        ("RAFTLOG_CLUSTER", "127.0.0.1:1"),
        ("RAFTLOG_TLS_DIR", "/nonexistent/raftlog-tls"),
    ];
    run_with_env(
        &["status", "--cluster", &addrs, "--tls-dir", &tls],
        &wrong,
        b"",
    )
    .assert_success("status with flags over a wrong environment");
    let failed = run_with_env(
        &["status", "--timeout-ms", "2000"],
        &[("RAFTLOG_CLUSTER", addrs.as_str()), wrong[1]],
        b"",
    );
    let line = failed.assert_clean_failure("status with a wrong RAFTLOG_TLS_DIR");
    assert!(line.contains("raftlog-tls"), "{line}");
    // Without flag and variable the command says what is missing.
    let missing = run_with_env(&["status"], &[], b"");
    assert!(!missing.status.success());
    assert!(missing.stderr.contains("--cluster"), "{}", missing.stderr);
    cluster.stop_all();
}

#[test]
fn consume_json_piped_into_publish_json_copies_binary_and_multiline_records() {
    let mut source = ServeCluster::start(1, &[]);
    let mut target = ServeCluster::start(1, &[]);
    source.wait_leader(LEADER_WAIT);
    target.wait_leader(LEADER_WAIT);
    // A text record, a binary one (not UTF-8: consume prints data_b64), a
    // multi-line one and an empty one: `lines` input cannot carry the last three.
    let input = concat!(
        r#"{"data":"plain text"}"#,
        "\n",
        r#"{"data_b64":"/wCAAQ=="}"#,
        "\n",
        r#"{"data":"line one\nline two\r\n","ignored":true}"#,
        "\n",
        r#"{"data":""}"#,
        "\n",
    );
    let published = source.client(
        &["publish", "--input", "json"],
        input.as_bytes(),
        CLIENT_RUN,
    );
    published.assert_success("publish --input json");
    assert_eq!(published.stdout_lines().len(), 4, "{}", published.stdout);

    let original = source.client(&["consume", "--output", "json"], b"", CLIENT_RUN);
    original.assert_success("consume the source");
    assert!(
        original.stdout.contains(r#""data_b64":"/wCAAQ==""#),
        "{}",
        original.stdout
    );
    let copied = target.client(
        &["publish", "--input", "json"],
        original.stdout.as_bytes(),
        CLIENT_RUN,
    );
    copied.assert_success("publish the consumed JSON");
    let copy = target.client(&["consume", "--output", "json"], b"", CLIENT_RUN);
    copy.assert_success("consume the copy");
    let records = records_without_index(&original.stdout);
    assert_eq!(records.len(), 4, "{}", original.stdout);
    assert_eq!(records, records_without_index(&copy.stdout));
    // And the bytes themselves, through `consume`'s text output.
    let text = |cluster: &ServeCluster| {
        let out = cluster.client(&["consume"], b"", CLIENT_RUN);
        out.assert_success("consume text");
        out.stdout_bytes
    };
    assert_eq!(text(&source), text(&target));
    assert_eq!(
        text(&source),
        b"plain text\n\xff\x00\x80\x01\nline one\nline two\r\n\n\n".to_vec()
    );
    source.stop_all();
    target.stop_all();
}

#[test]
fn publish_json_stops_at_a_bad_line_and_names_it() {
    let mut cluster = ServeCluster::start(1, &[]);
    cluster.wait_leader(LEADER_WAIT);
    let input =
        b"{\"data\":\"before\"}\n{\"data\":\"also before\"}\nnot json\n{\"data\":\"after\"}\n";
    let published = cluster.client(&["publish", "--input", "json"], input, CLIENT_RUN);
    let line = published.assert_clean_failure("publish with a bad JSON line");
    assert!(
        line.starts_with("error: stdin line 3: not a JSON object"),
        "{line}"
    );
    // The good lines before it are committed (and their indexes printed);
    // nothing after it is sent.
    assert_eq!(published.stdout_lines().len(), 2, "{}", published.stdout);
    let consumed = cluster.client(&["consume"], b"", CLIENT_RUN);
    consumed.assert_success("consume");
    assert_eq!(consumed.stdout, "before\nalso before\n");
    cluster.stop_all();
}

#[test]
fn completions_print_a_script_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_raftlog()"),
        ("zsh", "#compdef raftlog"),
        ("fish", "complete -c raftlog"),
    ] {
        let out = run_with_env(&["completions", shell], &[], b"");
        out.assert_success(shell);
        assert!(out.stdout.contains(marker), "{shell}: {}", out.stdout);
        assert!(
            out.stdout.contains("publish"),
            "{shell} lists no subcommands"
        );
        assert!(out.stderr.is_empty(), "{shell}: {}", out.stderr);
    }
    let bad = run_with_env(&["completions", "cmd.exe"], &[], b"");
    assert!(!bad.status.success());
}

/// One node of three runs: it knows no leader, so `status` prints its view
/// and still fails, and the node's `/readyz` says 503 while `/healthz` is 200.
#[test]
fn status_fails_without_a_leader_and_the_node_is_alive_but_not_ready() {
    let mut cluster = ServeCluster::prepare(3, &[]);
    let port = common::free_tcp_port();
    let metrics = format!("127.0.0.1:{port}");
    cluster.spawn(1, &["--metrics-listen", &metrics]);
    let health = wait_http(port, "/healthz", "HTTP/1.1 200", LEADER_WAIT);
    assert_eq!(health["status"], "ok", "{health}");

    let json = cluster.client(
        &["status", "--output", "json", "--timeout-ms", "3000"],
        b"",
        CLIENT_RUN,
    );
    let line = json.assert_clean_failure("status --output json without a leader");
    assert!(line.starts_with("error: no leader"), "{line}");
    let view: Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|error| panic!("stdout {:?}: {error}", json.stdout));
    assert!(view["leader"].is_null(), "{view}");
    assert!(view["nodes"].is_array(), "{view}");

    let text = cluster.client(&["status", "--timeout-ms", "3000"], b"", CLIENT_RUN);
    let line = text.assert_clean_failure("status without a leader");
    assert!(line.starts_with("error: no leader"), "{line}");
    assert!(text.stdout.starts_with("leader none"), "{}", text.stdout);

    let (status, body) = http_get(port, "/readyz");
    assert!(status.starts_with("HTTP/1.1 503"), "{status}: {body}");
    let ready: Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(ready["status"], "not ready", "{ready}");
    assert_eq!(ready["reason"], "no leader known", "{ready}");

    // A second node makes a majority: a leader, status exits 0, ready.
    cluster.spawn(2, &[]);
    cluster.wait_leader(LEADER_WAIT);
    let ready = wait_http(port, "/readyz", "HTTP/1.1 200", LEADER_WAIT);
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready["leader"].is_u64(), "{ready}");
    let (status, _) = http_get(port, "/nothing-here");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    cluster.stop_all();
}

#[test]
fn serve_takes_sizes_and_durations_with_units_and_refuses_a_bad_unit() {
    let mut cluster = ServeCluster::start(
        1,
        &[
            "--segment-bytes",
            "1MiB",
            "--retention-bytes",
            "10GiB",
            "--max-record-bytes",
            "2KiB",
            "--retention",
            "7d",
        ],
    );
    cluster.wait_leader(LEADER_WAIT);
    let fits = "x".repeat(2048);
    cluster
        .client(&["publish"], format!("{fits}\n").as_bytes(), CLIENT_RUN)
        .assert_success("a record of exactly 2KiB");
    let over = "x".repeat(2049);
    cluster
        .client(&["publish"], format!("{over}\n").as_bytes(), CLIENT_RUN)
        .assert_clean_failure("a record over 2KiB");
    cluster.stop_all();

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().display().to_string();
    for (flag, value, expected) in [
        ("--segment-bytes", "64M", "unknown size unit `M`"),
        ("--retention", "7", "needs a unit"),
        ("--max-record-bytes", "lots", "whole number"),
    ] {
        let out = run_with_env(
            &[
                "serve",
                "--id",
                "1",
                "--listen",
                "127.0.0.1:1",
                "--data-dir",
                &data,
                "--tls-dir",
                &data,
                flag,
                value,
            ],
            &[],
            b"",
        );
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(
            out.stderr.starts_with("error:") && out.stderr.contains(expected),
            "{flag} {value}: {}",
            out.stderr
        );
    }
}

#[test]
fn serve_logs_have_no_colour_codes_in_a_file_and_json_lines_parse() {
    let mut cluster = ServeCluster::prepare(2, &[]);
    cluster.spawn(1, &[]);
    cluster.spawn(2, &["--log-format", "json"]);
    cluster.wait_leader(LEADER_WAIT);
    cluster.stop_all();

    let text = std::fs::read(cluster.log_path(1)).expect("node 1 log");
    assert!(!text.is_empty(), "node 1 logged nothing");
    assert!(
        !text.contains(&0x1b),
        "ESC in a log written to a file:\n{}",
        String::from_utf8_lossy(&text)
    );
    let json = cluster.log(2);
    let lines: Vec<&str> = json.lines().collect();
    assert!(lines.len() >= 2, "node 2 logged too little:\n{json}");
    for line in lines {
        let object: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a JSON log line {line:?}: {error}"));
        assert!(object["level"].is_string(), "{line}");
        assert!(object["timestamp"].is_string(), "{line}");
    }
    assert!(!json.contains('\u{1b}'), "{json}");
}

/// The value of the sample `series` (name with labels) in a scrape, if any.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// Exactly one node reports `raftlog_is_leader 1` and only it exports the
/// per-peer series; after a leadership transfer the old leader drops them
/// and every node has counted the new leader.
#[test]
fn leader_metrics_follow_a_leadership_transfer() {
    let mut cluster = ServeCluster::prepare(3, &[]);
    let ports: Vec<u16> = (0..3).map(|_| common::free_tcp_port()).collect();
    for (id, port) in (1..=3).zip(&ports) {
        cluster.spawn(id, &["--metrics-listen", &format!("127.0.0.1:{port}")]);
    }
    let status = cluster.wait_leader(LEADER_WAIT);
    let leader = status["leader"].as_u64().expect("a leader");
    let scrape = |id: u64| {
        let port = ports[usize::try_from(id - 1).expect("small id")];
        let (status, body) = http_get(port, "/metrics");
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        body
    };
    // Followers learn of the leader with its first heartbeat: wait for it.
    let deadline = Instant::now() + LEADER_WAIT;
    while (1..=3).any(|id| sample(&scrape(id), "raftlog_leader_id") != Some(leader as f64)) {
        assert!(
            Instant::now() < deadline,
            "not every node knows leader {leader}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in 1..=3 {
        let body = scrape(id);
        let leads = f64::from(u8::from(id == leader));
        assert_eq!(
            sample(&body, "raftlog_is_leader"),
            Some(leads),
            "node {id}:\n{body}"
        );
        assert_eq!(
            body.contains("raftlog_peer_match_index{"),
            id == leader,
            "node {id}:\n{body}"
        );
        assert!(sample(&body, "raftlog_leader_changes_total").is_some_and(|n| n >= 1.0));
    }
    let before = sample(&scrape(leader), "raftlog_leader_changes_total").expect("counter");

    let target = if leader == 1 { 2 } else { 1 };
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let moved = cluster.client(
            &["admin", "transfer-leader", &target.to_string()],
            b"",
            CLIENT_RUN,
        );
        if moved.status.success() {
            break;
        }
        // The target may still be catching up; the transfer is retried.
        assert!(
            Instant::now() < deadline,
            "transfer failed: {}",
            moved.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let old = scrape(leader);
        if sample(&old, "raftlog_is_leader") == Some(0.0)
            && sample(&old, "raftlog_leader_id") == Some(target as f64)
        {
            assert!(!old.contains("raftlog_peer_match_index{"), "{old}");
            assert!(!old.contains("raftlog_peer_lag_entries{"), "{old}");
            let after = sample(&old, "raftlog_leader_changes_total").expect("counter");
            assert!(after > before, "{before} -> {after}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {leader} still leads:\n{old}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let new = scrape(target);
    assert_eq!(sample(&new, "raftlog_is_leader"), Some(1.0), "{new}");
    assert!(new.contains("raftlog_peer_match_index{"), "{new}");
    cluster.stop_all();
}

/// Polls `scrape()` until `ready` holds for it (bounded); returns that scrape.
fn wait_scrape(scrape: impl Fn() -> String, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let body = scrape();
        if ready(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}; last scrape:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 16's metrics on a real cluster: build info, requests by kind and
/// outcome, the commit latency histogram, client and peer connections and
/// the bytes the log takes on disk, each present and moving.
#[test]
fn node_metrics_count_requests_commits_connections_and_disk_bytes() {
    let mut cluster = ServeCluster::prepare(
        2,
        &["--segment-bytes", "64KiB", "--max-record-bytes", "4KiB"],
    );
    let ports: Vec<u16> = (0..2).map(|_| common::free_tcp_port()).collect();
    for (id, port) in (1..=2).zip(&ports) {
        cluster.spawn(id, &["--metrics-listen", &format!("127.0.0.1:{port}")]);
    }
    let status = cluster.wait_leader(LEADER_WAIT);
    let leader = status["leader"].as_u64().expect("a leader");
    let scrape_node = |id: u64| {
        let port = ports[usize::try_from(id - 1).expect("small id")];
        let (status, body) = http_get(port, "/metrics");
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        body
    };
    let scrape = || scrape_node(leader);
    let value = |body: &str, series: &str| sample(body, series).unwrap_or(0.0);

    let version = env!("CARGO_PKG_VERSION");
    let body = wait_scrape(
        scrape,
        "the leader never reported a peer connection",
        |body| value(body, "raftlog_peer_connections") >= 1.0,
    );
    assert_eq!(
        sample(
            &body,
            &format!("raftlog_build_info{{version=\"{version}\"}}")
        ),
        Some(1.0),
        "{body}"
    );
    for series in [
        "raftlog_commit_seconds_bucket{le=\"0.00005\"}",
        "raftlog_commit_seconds_bucket{le=\"5.0\"}",
        "raftlog_client_connections",
        "raftlog_log_disk_bytes",
    ] {
        assert!(sample(&body, series).is_some(), "no {series} in:\n{body}");
    }
    // The log's first segment is allocated at once: its bytes are counted
    // within a refresh (5 s) of the start.
    let body = wait_scrape(scrape, "raftlog_log_disk_bytes stayed 0", |body| {
        value(body, "raftlog_log_disk_bytes") > 0.0
    });
    let disk_before = value(&body, "raftlog_log_disk_bytes");
    let appends_before = value(
        &body,
        "raftlog_client_requests_total{kind=\"append\",outcome=\"ok\"}",
    );
    let commits_before = value(&body, "raftlog_commit_seconds_count");

    // 64 records of 3 KiB: several 64 KiB segments and their index files.
    let record = "r".repeat(3000);
    let input: String = (0..64).map(|_| format!("{record}\n")).collect();
    cluster
        .client(&["publish"], input.as_bytes(), CLIENT_RUN)
        .assert_success("publish 64 records");
    cluster
        .client(
            &["publish"],
            format!("{}\n", "x".repeat(5000)).as_bytes(),
            CLIENT_RUN,
        )
        .assert_clean_failure("a record over --max-record-bytes");
    cluster
        .client(&["consume", "--limit", "1"], b"", CLIENT_RUN)
        .assert_success("consume one record");
    let body = wait_scrape(scrape, "the disk bytes did not grow", |body| {
        value(body, "raftlog_log_disk_bytes") > disk_before
    });
    let appends = value(
        &body,
        "raftlog_client_requests_total{kind=\"append\",outcome=\"ok\"}",
    );
    assert!(
        appends > appends_before,
        "{appends_before} -> {appends}:\n{body}"
    );
    let commits = value(&body, "raftlog_commit_seconds_count");
    assert!(
        commits > commits_before,
        "{commits_before} -> {commits}:\n{body}"
    );
    assert!(value(&body, "raftlog_commit_seconds_sum") > 0.0, "{body}");
    assert!(
        value(
            &body,
            "raftlog_client_requests_total{kind=\"append\",outcome=\"record_too_large\"}"
        ) >= 1.0,
        "{body}"
    );
    // Status (wait_leader) and consume are served by whichever node the
    // client reached first: count them over both nodes.
    let both = |series: &str| value(&scrape_node(1), series) + value(&scrape_node(2), series);
    assert!(both("raftlog_client_requests_total{kind=\"status\",outcome=\"ok\"}") >= 1.0);
    assert!(both("raftlog_client_requests_total{kind=\"consume\",outcome=\"ok\"}") >= 1.0);

    // A consumer that follows holds a client connection until it goes.
    let deadline = Instant::now() + LEADER_WAIT;
    while both("raftlog_client_connections") != 0.0 {
        assert!(Instant::now() < deadline, "client connections stay open");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut consumer = Command::new(RAFTLOG);
    consumer
        .args(["consume", "--follow"])
        .args(cluster.client_flags())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut consumer = ChildGuard::spawn(consumer);
    let deadline = Instant::now() + LEADER_WAIT;
    while both("raftlog_client_connections") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the consumer's connection is not counted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    consumer.kill();
    let deadline = Instant::now() + LEADER_WAIT;
    while both("raftlog_client_connections") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the consumer's connection is still counted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.stop_all();
}
