//! Randomized cluster simulations: every seed runs a cluster through network
//! and node faults, membership changes, leadership transfers and log
//! compaction, checking Raft's safety properties after every step, then
//! heals and requires progress. Some seed ranges use random faults, others
//! the leader-churn schedule (leaders cut off right after appending, the
//! interleavings of Figure 8 in the Raft paper).
//!
//! Replay one seed: `RAFTLOG_SIM_SEED=<seed> cargo test --profile ci --test sim_cluster -- --nocapture`
//! (the seed alone says how many voters and which schedule).
//! Long run: `RAFTLOG_SIM_SEEDS=100000 cargo test --profile ci --test sim_cluster -- --nocapture`
//! (shared among the tests in proportion to their CI share).

use raftlog::sim::{FaultSchedule, Sim, SimOptions};

/// Seeds per random-fault test in CI; four tests run 2,000 seeds.
const CI_SEEDS_PER_RANDOM_TEST: u64 = 500;
/// Seeds per leader-churn test in CI; two tests run 500 seeds.
const CI_SEEDS_PER_CHURN_TEST: u64 = 250;
/// Seeds per damaged-disk test in CI; two tests run 500 seeds.
const CI_SEEDS_PER_DAMAGE_TEST: u64 = 250;
/// Seeds all tests run in CI, to share RAFTLOG_SIM_SEEDS out.
const CI_SEEDS_TOTAL: u64 =
    4 * CI_SEEDS_PER_RANDOM_TEST + 2 * CI_SEEDS_PER_CHURN_TEST + 2 * CI_SEEDS_PER_DAMAGE_TEST;
/// Chance per step of a damaged disk in the damaged-disk tests, in
/// thousandths (the other tests keep the default, 1).
const DAMAGE_PER_MILLE_HEAVY: u64 = 20;
/// Steps of the faulty phase of every seed.
const FAULTY_STEPS: u64 = 2_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Seeds are laid out so that the voter count and the schedule follow from
/// the seed alone (which is what a replay knows): the millions digit picks
/// 3 or 5 voters, the ten-millions digit the schedule, and a hundred-millions
/// digit of 2 makes disks go bad twenty times as often.
fn options_for(seed: u64) -> SimOptions {
    let voters = if (seed / 1_000_000) % 2 == 0 { 3 } else { 5 };
    let mut options = if (seed / 10_000_000) % 2 == 0 {
        SimOptions::new(seed, voters)
    } else {
        SimOptions::leader_churn(seed, voters)
    };
    options.steps = FAULTY_STEPS;
    if (seed / 100_000_000) % 10 == 2 {
        options.damage_per_mille = DAMAGE_PER_MILLE_HEAVY;
    }
    options
}

/// Runs `ci_count` seeds from `base` (a share of RAFTLOG_SIM_SEEDS when
/// set; none when RAFTLOG_SIM_SEED asks for a replay).
fn run_seeds(base: u64, ci_count: u64, voters: usize, schedule: FaultSchedule) {
    if env_u64("RAFTLOG_SIM_SEED").is_some() {
        return;
    }
    let count = env_u64("RAFTLOG_SIM_SEEDS").map_or(ci_count, |total| {
        total.saturating_mul(ci_count) / CI_SEEDS_TOTAL
    });
    let mut committed = 0u64;
    let mut damages = 0u64;
    let mut mid_ready_crashes = 0u64;
    let mut stale_syncs = 0u64;
    for seed in base..base + count {
        let options = options_for(seed);
        assert_eq!(
            (options.voters, options.schedule),
            (voters, schedule),
            "seed {seed} lies outside this test's range"
        );
        let run =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Sim::new(options).run()));
        let result = match run {
            Ok(result) => result,
            Err(panic) => {
                eprintln!("seed {seed} panicked; replay: RAFTLOG_SIM_SEED={seed} cargo test --profile ci --test sim_cluster -- --nocapture");
                std::panic::resume_unwind(panic)
            }
        };
        match result {
            Ok(report) => {
                committed += report.committed_entries;
                damages += report.damages;
                mid_ready_crashes += report.mid_ready_crashes;
                stale_syncs += report.stale_syncs;
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    eprintln!(
        "{count} seeds from {base} with {voters} voters, {schedule:?} faults, passed; {committed} entries committed, {damages} damaged disks repaired, {mid_ready_crashes} crashes mid-Ready, {stale_syncs} stale sync reports"
    );
}

#[test]
fn three_node_clusters_stay_safe_and_live_under_faults_a() {
    run_seeds(0, CI_SEEDS_PER_RANDOM_TEST, 3, FaultSchedule::Random);
}

#[test]
fn three_node_clusters_stay_safe_and_live_under_faults_b() {
    run_seeds(
        100_000_000,
        CI_SEEDS_PER_RANDOM_TEST,
        3,
        FaultSchedule::Random,
    );
}

#[test]
fn five_node_clusters_stay_safe_and_live_under_faults_a() {
    run_seeds(
        1_000_000,
        CI_SEEDS_PER_RANDOM_TEST,
        5,
        FaultSchedule::Random,
    );
}

#[test]
fn five_node_clusters_stay_safe_and_live_under_faults_b() {
    run_seeds(
        101_000_000,
        CI_SEEDS_PER_RANDOM_TEST,
        5,
        FaultSchedule::Random,
    );
}

#[test]
fn three_node_clusters_stay_safe_and_live_under_leader_churn() {
    run_seeds(
        10_000_000,
        CI_SEEDS_PER_CHURN_TEST,
        3,
        FaultSchedule::LeaderChurn,
    );
}

#[test]
fn five_node_clusters_stay_safe_and_live_under_leader_churn() {
    run_seeds(
        11_000_000,
        CI_SEEDS_PER_CHURN_TEST,
        5,
        FaultSchedule::LeaderChurn,
    );
}

/// Disks that lose a range of acknowledged entries (the node restarts with
/// its log cut and repairs it from the leader before it votes again).
#[test]
fn three_node_clusters_stay_safe_and_live_with_damaged_disks() {
    run_seeds(
        200_000_000,
        CI_SEEDS_PER_DAMAGE_TEST,
        3,
        FaultSchedule::Random,
    );
}

#[test]
fn five_node_clusters_stay_safe_and_live_with_damaged_disks() {
    run_seeds(
        201_000_000,
        CI_SEEDS_PER_DAMAGE_TEST,
        5,
        FaultSchedule::Random,
    );
}

/// Replays RAFTLOG_SIM_SEED alone (and does nothing without it).
#[test]
fn replay_of_the_seed_in_raftlog_sim_seed_passes() {
    let Some(seed) = env_u64("RAFTLOG_SIM_SEED") else {
        return;
    };
    let options = options_for(seed);
    eprintln!(
        "replaying seed {seed} ({} voters, {:?} faults)",
        options.voters, options.schedule
    );
    match Sim::new(options).run() {
        Ok(report) => eprintln!("seed {seed} passed: {report:?}"),
        Err(failure) => panic!("{failure}"),
    }
}
