//! `raftlog dev`, the embedded default (CLI.md, issue 6): it starts a local
//! cluster, prints copy-paste commands that work, stops on Ctrl-C (SIGINT)
//! with exit 0, and a second run resumes the same data.
//!
//! Run alone: `cargo test --profile ci --test cli_dev -- --nocapture`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::*;

/// A printed command line with the binary replaced by the one under test
/// (dev prints its own absolute path, which is already that binary).
fn with_binary(line: &str) -> String {
    if line.contains(RAFTLOG) {
        line.to_string()
    } else {
        line.replacen("raftlog ", &format!("{RAFTLOG} "), 1)
    }
}

fn shell(line: &str) -> Command {
    let mut command = Command::new("sh");
    command.arg("-c").arg(line);
    command
}

struct Dev {
    process: ChildGuard,
    /// The command lines it printed: publish, consume, status.
    commands: Vec<String>,
}

fn start_dev(dir: &std::path::Path, base_port: u16) -> Dev {
    let mut command = Command::new(RAFTLOG);
    command
        .args(["dev", "--dir"])
        .arg(dir)
        .args(["--base-port", &base_port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut process = ChildGuard::spawn(command);
    let stdout = LineReader::new(process.child.stdout.take().expect("stdout"));
    let printed = stdout.take(6, Duration::from_secs(30), "dev's printed commands");
    let commands: Vec<String> = printed
        .iter()
        .filter(|line| !line.starts_with('#'))
        .map(|line| with_binary(line))
        .collect();
    assert_eq!(commands.len(), 3, "publish, consume, status: {printed:?}");
    assert!(commands[0].contains(" publish "), "{commands:?}");
    assert!(commands[1].contains(" consume "), "{commands:?}");
    assert!(commands[2].contains(" status"), "{commands:?}");
    Dev { process, commands }
}

/// Runs `line` with `sh -c` until it exits 0 (bounded); returns its stdout.
fn run_until_success(line: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let finished = run_command(shell(line), b"", Duration::from_secs(60));
        if finished.status.success() {
            return finished.stdout;
        }
        if Instant::now() > deadline {
            panic!("`{line}` kept failing for {timeout:?}: {}", finished.stderr);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue 6: `dev` prints publish/consume/status commands that work as
/// printed, stops on SIGINT with exit 0, and resumes its data when run again.
#[test]
fn dev_prints_working_commands_stops_on_sigint_and_resumes_its_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dev_dir = dir.path().join("raftlog-dev");
    let base_port = common::free_consecutive_ports(3);
    let mut dev = start_dev(&dev_dir, base_port);
    let (publish, consume, status) = (
        dev.commands[0].clone(),
        dev.commands[1].clone(),
        dev.commands[2].clone(),
    );

    // The cluster is up once status answers with a leader.
    let status_text = run_until_success(&status, Duration::from_secs(30));
    assert!(status_text.contains("leader"), "{status_text}");

    let published = run_until_success(&publish, Duration::from_secs(30));
    let indexes: Vec<u64> = published
        .lines()
        .map(|line| line.parse().unwrap_or_else(|_| panic!("{line:?}")))
        .collect();
    assert_eq!(indexes.len(), 2, "`{publish}` printed {published:?}");

    // The consume command follows: read its two lines, then stop it.
    let mut follow = shell(&format!("exec {consume}"));
    follow
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut follower = ChildGuard::spawn(follow);
    let lines = LineReader::new(follower.child.stdout.take().expect("stdout"));
    let got = lines.take(2, Duration::from_secs(30), &consume);
    assert_eq!(got, vec!["hello", "world"]);
    follower.kill();

    let exit = dev.process.stop_with(libc::SIGINT, Duration::from_secs(30));
    assert!(exit.success(), "dev exits 0 on SIGINT, got {exit}");

    // Same directory and ports again: the records are still there.
    let mut again = start_dev(&dev_dir, base_port);
    assert_eq!(again.commands, dev.commands, "the same commands work again");
    let without_follow = consume.replace(" --follow", "");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let consumed = run_until_success(&without_follow, Duration::from_secs(30));
        if consumed == "hello\nworld\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after a restart `{without_follow}` prints {consumed:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let exit = again
        .process
        .stop_with(libc::SIGINT, Duration::from_secs(30));
    assert!(
        exit.success(),
        "the second dev exits 0 on SIGINT, got {exit}"
    );
}
