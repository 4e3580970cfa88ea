//! Every documented error path of the `raftlog` binary exits non-zero with
//! exactly one `error: ...` line on stderr and no panic text (CLI.md: "Errors
//! go to stderr as one clear line").
//!
//! Run alone: `cargo test --profile ci --test cli_errors -- --nocapture`.

mod common;

use std::time::Duration;

use common::process::*;

const RUN: Duration = Duration::from_secs(60);

/// A `--tls-dir` without `ca.pem` (here: a directory that does not exist).
#[test]
fn a_client_without_a_ca_fails_with_one_error_line_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-tls-dir");
    let missing = missing.display().to_string();
    for args in [
        vec!["publish", "--cluster", "127.0.0.1:9", "--tls-dir", &missing],
        vec!["consume", "--cluster", "127.0.0.1:9", "--tls-dir", &missing],
        vec!["status", "--cluster", "127.0.0.1:9", "--tls-dir", &missing],
    ] {
        let finished = run(&args, b"a record\n", RUN);
        let line = finished.assert_clean_failure(args[0]);
        assert!(line.contains("ca.pem"), "{}: {line}", args[0]);
    }
}

/// A cluster address nobody serves, with a short `--timeout-ms`.
#[test]
fn an_unreachable_cluster_fails_with_one_error_line_within_the_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = dir.path().join("tls");
    run(
        &[
            "certs",
            "--out",
            &tls.display().to_string(),
            "--node",
            "1=127.0.0.1",
        ],
        b"",
        RUN,
    )
    .assert_success("certs");
    let port = common::free_udp_ports(1)[0];
    let addr = format!("127.0.0.1:{port}");
    let tls = tls.display().to_string();
    for command in ["publish", "consume", "status"] {
        let started = std::time::Instant::now();
        let finished = run(
            &[
                command,
                "--cluster",
                &addr,
                "--tls-dir",
                &tls,
                "--timeout-ms",
                "500",
            ],
            b"a record\n",
            RUN,
        );
        let line = finished.assert_clean_failure(command);
        assert!(line.contains(&addr), "{command} names the address: {line}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{command} gave up in {:?}",
            started.elapsed()
        );
    }
}

/// A record over `--max-record-bytes` of a running node: one error line
/// naming the limit, and the node keeps serving.
#[test]
fn a_record_over_the_limit_fails_with_one_error_line_and_the_node_keeps_serving() {
    let mut cluster = ServeCluster::start(1, &["--max-record-bytes", "100"]);
    cluster.wait_leader(Duration::from_secs(30));
    let mut input = b"small\n".to_vec();
    input.extend(vec![b'x'; 101]);
    input.push(b'\n');
    let finished = cluster.client(&["publish"], &input, RUN);
    let line = finished.assert_clean_failure("publish of a record over the limit");
    assert!(line.contains("100"), "names the limit: {line}");

    let after = cluster.client(&["publish"], b"still serving\n", RUN);
    after.assert_success("publish after the refused record");
    let consumed = cluster.client(&["consume"], b"", RUN);
    consumed.assert_success("consume");
    assert!(
        consumed.stdout.contains("still serving\n"),
        "{}",
        consumed.stdout
    );
    assert!(
        !consumed.stdout.contains("xxxx"),
        "the large record was not appended"
    );
    cluster.stop_all();
}

/// `serve --config FILE` with a key that is not a setting: the error names it.
#[test]
fn an_unknown_config_key_fails_with_one_error_line_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "id = 1\nlisten = \"127.0.0.1:7999\"\nbogus_setting = 3\n",
    )
    .expect("write config");
    let finished = run(
        &["serve", "--config", &config.display().to_string()],
        b"",
        RUN,
    );
    let line = finished.assert_clean_failure("serve --config with an unknown key");
    assert!(line.contains("bogus_setting"), "names the key: {line}");
}

/// A flag no subcommand has, and a malformed value of a known flag.
#[test]
fn a_bad_flag_exits_non_zero_with_one_error_line() {
    for args in [
        vec!["publish", "--no-such-flag"],
        vec!["serve", "--id", "one"],
        vec!["no-such-command"],
    ] {
        let finished = run(&args, b"", RUN);
        finished.assert_clean_failure(&args.join(" "));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let finished = run(
        &[
            "consume",
            "--cluster",
            "127.0.0.1:9",
            "--tls-dir",
            &dir.path().display().to_string(),
            "--from",
            "yesterday",
        ],
        b"",
        RUN,
    );
    let line = finished.assert_clean_failure("consume --from yesterday");
    assert!(line.contains("--from"), "{line}");
}

/// `serve` without its TLS files, and `verify`/`dump` of a directory that
/// does not exist.
#[test]
fn missing_files_fail_with_one_error_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = common::free_udp_ports(1)[0];
    let finished = run(
        &[
            "serve",
            "--id",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--tls-dir",
            &dir.path().join("no-tls").display().to_string(),
        ],
        b"",
        RUN,
    );
    let line = finished.assert_clean_failure("serve without certificates");
    assert!(line.contains("ca.pem") || line.contains("node-1"), "{line}");

    let absent = dir.path().join("absent").display().to_string();
    run(&["verify", &absent], b"", RUN).assert_clean_failure("verify of a missing dir");
    run(&["dump", &absent], b"", RUN).assert_clean_failure("dump of a missing dir");
}

/// `--segment-bytes` is checked against the storage bounds before anything
/// starts, and the error names the option; any size from there up works
/// with any `--max-record-bytes` (no "two of the largest records" rule).
#[test]
fn a_segment_size_below_the_minimum_fails_with_one_error_line_naming_the_option() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = common::free_udp_ports(1)[0];
    let finished = run(
        &[
            "serve",
            "--id",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--tls-dir",
            &dir.path().join("no-tls").display().to_string(),
            "--segment-bytes",
            "1000",
        ],
        b"",
        RUN,
    );
    let line = finished.assert_clean_failure("serve --segment-bytes 1000");
    assert!(line.contains("--segment-bytes"), "{line}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing was created before the check"
    );
}
