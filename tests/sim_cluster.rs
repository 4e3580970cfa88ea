//! Randomized cluster simulations: every seed runs a cluster through network
//! and node faults, membership changes, leadership transfers and log
//! compaction, checking Raft's safety properties after every step, then
//! heals and requires progress.
//!
//! Replay one seed: `RAFTLOG_SIM_SEED=<seed> cargo test --release --test sim_cluster -- --nocapture`.
//! Long run: `RAFTLOG_SIM_SEEDS=100000 cargo test --release --test sim_cluster -- --nocapture`.

use raftlog::sim::{Sim, SimOptions};

/// Seeds per test in CI; four tests run 2,000 seeds in all.
const CI_SEEDS_PER_TEST: u64 = 500;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs `count` seeds from `base` (or just RAFTLOG_SIM_SEED when set).
fn run_seeds(base: u64, voters: usize, steps: u64) {
    if let Some(seed) = env_u64("RAFTLOG_SIM_SEED") {
        let mut options = SimOptions::new(seed, voters_for(seed));
        options.steps = steps;
        eprintln!("replaying seed {seed} ({} voters)", options.voters);
        match Sim::new(options).run() {
            Ok(report) => eprintln!("seed {seed} passed: {report:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let count = env_u64("RAFTLOG_SIM_SEEDS").map_or(CI_SEEDS_PER_TEST, |n| n / 4);
    let mut committed = 0u64;
    for seed in base..base + count {
        let mut options = SimOptions::new(seed, voters);
        options.steps = steps;
        debug_assert_eq!(voters_for(seed), voters);
        match Sim::new(options).run() {
            Ok(report) => committed += report.committed_entries,
            Err(failure) => panic!("{failure}"),
        }
    }
    eprintln!(
        "{count} seeds from {base} with {voters} voters passed; {committed} entries committed"
    );
}

/// Seeds are laid out so that the voter count follows from the seed alone
/// (which is what a replay knows).
fn voters_for(seed: u64) -> usize {
    if (seed / 1_000_000) % 2 == 0 {
        3
    } else {
        5
    }
}

#[test]
fn three_node_clusters_stay_safe_and_live_under_faults_a() {
    run_seeds(0, 3, 2_000);
}

#[test]
fn three_node_clusters_stay_safe_and_live_under_faults_b() {
    run_seeds(100_000_000, 3, 2_000);
}

#[test]
fn five_node_clusters_stay_safe_and_live_under_faults_a() {
    run_seeds(1_000_000, 5, 2_000);
}

#[test]
fn five_node_clusters_stay_safe_and_live_under_faults_b() {
    run_seeds(101_000_000, 5, 2_000);
}
