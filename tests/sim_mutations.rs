//! The simulator has teeth: with one Raft rule deliberately broken, it must
//! find a violation within a bounded number of seeds.
//!
//! Each test prints the first failing seed and its replay command; with
//! `RAFTLOG_SIM_SEED=<seed>` a test runs that seed alone (and still requires
//! it to fail).

use raftlog::raft::Bugs;
use raftlog::sim::{Sim, SimOptions};

/// Seeds tried per mutation before the test gives up.
const SEEDS_MAX: u64 = 2_000;
/// Seeds tried for the Figure 8 mutation (the leader-churn schedule finds
/// it much sooner than random faults find the others' worst case).
const FIGURE_8_SEEDS_MAX: u64 = 500;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The first seed in `0..seeds_max` whose run fails (only
/// RAFTLOG_SIM_SEED when set), with the options `options_for` gives.
fn first_failing_seed(seeds_max: u64, options_for: impl Fn(u64) -> SimOptions) -> Option<u64> {
    let seeds = match env_u64("RAFTLOG_SIM_SEED") {
        Some(seed) => seed..seed + 1,
        None => 0..seeds_max,
    };
    let tried = seeds.clone();
    let found = seeds
        .into_iter()
        .find(|&seed| match Sim::new(options_for(seed)).run() {
            Ok(_) => false,
            Err(failure) => {
                eprintln!("caught: {failure}");
                true
            }
        });
    match found {
        Some(seed) => eprintln!(
            "first failing seed {seed} ({} seeds run)",
            seed - tried.start + 1
        ),
        None => eprintln!("no failure in seeds {tried:?}"),
    }
    found
}

/// The random schedule tuned to crash often and propose rarely.
fn random_faults(bugs: Bugs, test: &str) -> impl Fn(u64) -> SimOptions + '_ {
    move |seed| {
        let mut options = SimOptions::new(seed, 3);
        options.bugs = bugs;
        options.client_per_mille = 50;
        options.crash_per_mille = 30;
        options.steps = 1_000;
        options.replay_args = format!("--test sim_mutations {test}");
        options
    }
}

/// Figure 8: a leader commits an entry of an older term once a majority
/// holds it; a later leader that never had it overwrites it. The
/// leader-churn schedule cuts leaders off right after they append, which is
/// the interleaving this needs.
fn catches_old_term_commits(voters: usize, test: &str) -> Option<u64> {
    let bugs = Bugs {
        commit_old_term_by_counting: true,
        ..Bugs::default()
    };
    first_failing_seed(FIGURE_8_SEEDS_MAX, |seed| {
        let mut options = SimOptions::leader_churn(seed, voters);
        options.bugs = bugs;
        options.replay_args = format!("--test sim_mutations {test}");
        options
    })
}

#[test]
fn simulator_catches_old_term_entries_committed_by_counting_with_3_voters() {
    let test = "simulator_catches_old_term_entries_committed_by_counting_with_3_voters";
    assert!(catches_old_term_commits(3, test).is_some());
}

#[test]
fn simulator_catches_old_term_entries_committed_by_counting_with_5_voters() {
    let test = "simulator_catches_old_term_entries_committed_by_counting_with_5_voters";
    assert!(catches_old_term_commits(5, test).is_some());
}

#[test]
fn simulator_catches_two_votes_in_one_term() {
    let bugs = Bugs {
        double_vote: true,
        ..Bugs::default()
    };
    let options = random_faults(bugs, "simulator_catches_two_votes_in_one_term");
    assert!(first_failing_seed(SEEDS_MAX, options).is_some());
}

#[test]
fn simulator_catches_votes_granted_without_the_log_check() {
    let bugs = Bugs {
        vote_without_log_check: true,
        ..Bugs::default()
    };
    let options = random_faults(
        bugs,
        "simulator_catches_votes_granted_without_the_log_check",
    );
    assert!(first_failing_seed(SEEDS_MAX, options).is_some());
}

#[test]
fn simulator_catches_acknowledging_unpersisted_entries() {
    let bugs = Bugs {
        ack_unpersisted: true,
        ..Bugs::default()
    };
    let options = random_faults(bugs, "simulator_catches_acknowledging_unpersisted_entries");
    assert!(first_failing_seed(SEEDS_MAX, options).is_some());
}

#[test]
fn simulator_catches_votes_from_a_damaged_log() {
    let bugs = Bugs {
        vote_while_repairing: true,
        ..Bugs::default()
    };
    let test = "simulator_catches_votes_from_a_damaged_log";
    let options = |seed| {
        let mut options = SimOptions::new(seed, 3);
        options.bugs = bugs;
        // Damage often, so that a node that helped commit an entry loses it
        // and then elects a leader without it.
        options.damage_per_mille = 20;
        options.replay_args = format!("--test sim_mutations {test}");
        options
    };
    assert!(first_failing_seed(SEEDS_MAX, options).is_some());
}
