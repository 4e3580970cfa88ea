//! The multi-process fault suite (issue 7): real `raftlog serve` processes
//! on 127.A.B.11, .12, ... under concurrent publishers (producer ids,
//! retrying through faults) and consumers (tails on every node, a CLI
//! `consume --follow`, scans from the start), while a nemesis driven by
//! one seed kills, pauses, partitions (iptables), reconfigures, restarts
//! and starves nodes; then a checker judges the recorded history
//! (`tests/faults/checker.rs` lists the rules) and availability after
//! every leader loss is reported.
//!
//! - CI slice (part of `cargo test --profile ci`): every fault kind once, in an
//!   order drawn from a fixed seed; about a minute.
//!   `cargo test --profile ci --test fault_suite -- --nocapture`
//! - Long randomized run (opt-in):
//!   `RAFTLOG_FAULT_MINUTES=30 RAFTLOG_FAULT_SEED=42 cargo test --profile ci
//!   --test fault_suite -- --ignored --nocapture`
//!   (`RAFTLOG_FAULT_NODES=5` for five voters; the seed is printed and a
//!   random one is used when none is given).
//!
//! Partitions need iptables and the right to use it (root); without them
//! the partition faults are skipped with one printed line and the rest
//! runs. Every rule and process is removed when the test ends, also on a
//! failure.

mod common;
mod faults;

use faults::nemesis::FaultKind;
use faults::{Schedule, SuiteOptions};

/// The CI slice's seed (any fixed value: the slice must pass for it).
const CI_SEED: u64 = 0x7a11_0b5e;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

/// Issue 7: under every fault kind once (kill -9 and SIGSTOP of leader and
/// follower, leader isolation, majority/minority split, one-way loss both
/// ways, a bridge node, leadership transfer, adding a node and removing a
/// follower or the leader, a rolling restart, a follower reset past the
/// log start), no acknowledged record is lost, duplicated or moved, no two
/// reads of an index differ, every consumer reads without gaps, and
/// nothing uncommitted is ever read.
#[test]
fn every_fault_kind_once_keeps_every_acknowledged_record_exactly_once() {
    let seed = env_u64("RAFTLOG_FAULT_SEED").unwrap_or(CI_SEED);
    let schedule = faults::every_kind_once(seed);
    assert_eq!(schedule.len(), FaultKind::ALL.len());
    faults::run(SuiteOptions {
        seed,
        nodes: 3,
        schedule: Schedule::Fixed(schedule),
        hold_ms: (1_500, 3_000),
    });
}

/// The long randomized run: `RAFTLOG_FAULT_MINUTES` (default 10) of faults
/// picked from `RAFTLOG_FAULT_SEED` (default: from the clock, printed).
#[test]
#[ignore = "long; opt in with RAFTLOG_FAULT_MINUTES and --ignored"]
fn random_faults_for_minutes_keep_every_acknowledged_record_exactly_once() {
    let seed = env_u64("RAFTLOG_FAULT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(1)
    });
    let minutes = std::env::var("RAFTLOG_FAULT_MINUTES")
        .ok()
        .map(|value| {
            value
                .trim()
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("RAFTLOG_FAULT_MINUTES={value} is not a number"))
        })
        .unwrap_or(10.0);
    let nodes = env_u64("RAFTLOG_FAULT_NODES").unwrap_or(3);
    assert!(
        nodes == 3 || nodes == 5,
        "RAFTLOG_FAULT_NODES must be 3 or 5"
    );
    faults::run(SuiteOptions {
        seed,
        nodes,
        schedule: Schedule::Random { minutes },
        hold_ms: (1_000, 5_000),
    });
}
