//! The built binary for the everyday CLI: the cluster from the environment,
//! `publish --input json`, shell completions, the `status` exit code, sizes
//! with units, the node's probes and its log formats (CLI.md).
//!
//! Run alone: `cargo test --profile ci --test cli_daily`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::*;

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
