//! The simulator has teeth: with one Raft rule deliberately broken, it must
//! find, within a bounded number of seeds, the specific violation that the
//! broken rule causes (a liveness failure does not count as catching a
//! safety bug, nor the other way round).
//!
//! Each test prints the first failing seed and its replay command; with
//! `RAFTLOG_SIM_SEED=<seed>` a test runs that seed alone (and still requires
//! it to fail the expected way).

use raftlog::raft::Bugs;
use raftlog::sim::{Sim, SimOptions, Violation};

/// Seeds tried per mutation before the test gives up.
const SEEDS_MAX: u64 = 2_000;
/// Seeds tried for the Figure 8 mutation (the leader-churn schedule finds
/// it much sooner than random faults find the others' worst case).
const FIGURE_8_SEEDS_MAX: u64 = 500;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The first seed in `0..seeds_max` (only RAFTLOG_SIM_SEED when set) whose
/// run fails with a violation `expected` accepts, with the options
/// `options_for` gives; a seed failing any other way fails the test.
fn first_catch(
    seeds_max: u64,
    options_for: impl Fn(u64) -> SimOptions,
    expected: impl Fn(&Violation) -> bool,
) -> Option<u64> {
    let seeds = match env_u64("RAFTLOG_SIM_SEED") {
        Some(seed) => seed..seed + 1,
        None => 0..seeds_max,
    };
    let tried = seeds.clone();
    let found = seeds
        .into_iter()
        .find(|&seed| match run_reporting_panics(options_for(seed)) {
            Ok(_) => false,
            Err(failure) if expected(&failure.violation) => {
                eprintln!("caught: {failure}");
                true
            }
            Err(failure) => panic!("the mutation caused another violation: {failure}"),
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

/// Runs one seed; a panic in the core (an assertion or an overflow) is
/// reported with the seed and its replay command before it propagates.
fn run_reporting_panics(
    options: SimOptions,
) -> Result<raftlog::sim::Report, raftlog::sim::Failure> {
    let seed = options.seed;
    let replay = options.replay_args.clone();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Sim::new(options).run())) {
        Ok(result) => result,
        Err(panic) => {
            eprintln!(
                "seed {seed} panicked; replay: RAFTLOG_SIM_SEED={seed} cargo test --profile ci {replay} -- --nocapture"
            );
            std::panic::resume_unwind(panic)
        }
    }
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
    first_catch(
        FIGURE_8_SEEDS_MAX,
        |seed| {
            let mut options = SimOptions::leader_churn(seed, voters);
            options.bugs = bugs;
            options.replay_args = format!("--test sim_mutations {test}");
            options
        },
        |v| {
            matches!(
                v,
                Violation::LeaderMissesCommittedEntry { .. }
                    | Violation::CommittedEntryTruncated { .. }
            )
        },
    )
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
    let caught = first_catch(SEEDS_MAX, options, |v| {
        matches!(v, Violation::TwoLeadersInTerm { .. })
    });
    assert!(caught.is_some());
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
    let caught = first_catch(SEEDS_MAX, options, |v| {
        matches!(v, Violation::LeaderMissesCommittedEntry { .. })
    });
    assert!(caught.is_some());
}

#[test]
fn simulator_catches_acknowledging_unpersisted_entries() {
    let bugs = Bugs {
        ack_unpersisted: true,
        ..Bugs::default()
    };
    let options = random_faults(bugs, "simulator_catches_acknowledging_unpersisted_entries");
    // The crash takes an entry a majority acknowledged: a later leader
    // lacks it, or a node drops it.
    let caught = first_catch(SEEDS_MAX, options, |v| {
        matches!(
            v,
            Violation::LeaderMissesCommittedEntry { .. }
                | Violation::CommittedEntryTruncated { .. }
                | Violation::AcknowledgedEntryLost { .. }
        )
    });
    assert!(caught.is_some());
}

/// The default schedule (3 voters, random faults) with one mutation.
fn default_faults(bugs: Bugs, test: &str) -> impl Fn(u64) -> SimOptions + '_ {
    move |seed| {
        let mut options = SimOptions::new(seed, 3);
        options.bugs = bugs;
        options.replay_args = format!("--test sim_mutations {test}");
        options
    }
}

/// Damage often, so that a node that helped commit an entry loses it and
/// then elects a leader without it.
fn damaging(bugs: Bugs, test: &str) -> impl Fn(u64) -> SimOptions + '_ {
    move |seed| {
        let mut options = SimOptions::new(seed, 3);
        options.bugs = bugs;
        options.damage_per_mille = 20;
        options.replay_args = format!("--test sim_mutations {test}");
        options
    }
}

#[test]
fn simulator_catches_votes_from_a_damaged_log() {
    let bugs = Bugs {
        vote_while_repairing: true,
        ..Bugs::default()
    };
    let options = damaging(bugs, "simulator_catches_votes_from_a_damaged_log");
    let caught = first_catch(SEEDS_MAX, options, |v| {
        matches!(v, Violation::LeaderMissesCommittedEntry { .. })
    });
    assert!(caught.is_some());
}

/// Review finding 1: an InstallLogStart that arrives after the batches it
/// overtook in the leader's plan drops entries the follower acknowledged.
#[test]
fn simulator_catches_install_log_start_dropping_a_matching_suffix() {
    let bugs = Bugs {
        install_log_start_drops_matching_suffix: true,
        ..Bugs::default()
    };
    let test = "simulator_catches_install_log_start_dropping_a_matching_suffix";
    let caught = first_catch(SEEDS_MAX, default_faults(bugs, test), |v| {
        matches!(v, Violation::CommittedEntryTruncated { .. })
    });
    assert!(caught.is_some());
}

// Review finding 2 (a fence built on stale or lowered term reports) has no
// simulator mutation test: it needs two reports held back past a restart
// (from both other voters of three) to land in one fence, and 13,640 seeds
// of heavy hard-state loss (damage 30 per mille) with held-back messages
// never produced that (the run then found the index-0 reject bug instead,
// see raft_review).
// The scripted tests in tests/raft_review.rs build the interleaving.

/// Review finding 3: an idle leader ignores a reject at exactly a
/// follower's match index, so it never refills a follower that restarted
/// with a damaged log.
#[test]
fn simulator_catches_an_idle_leader_that_never_refills_a_follower() {
    let bugs = Bugs {
        reject_at_match_index_is_stale: true,
        ..Bugs::default()
    };
    let test = "simulator_catches_an_idle_leader_that_never_refills_a_follower";
    let caught = first_catch(SEEDS_MAX, default_faults(bugs, test), |v| {
        matches!(v, Violation::FollowerNotCaughtUp { .. })
    });
    assert!(caught.is_some());
}

/// Review finding 4: heartbeats that carry what was sent rather than what
/// was acknowledged overtake their batches and flip followers to Probe.
#[test]
fn simulator_catches_heartbeats_that_overtake_their_batches() {
    let bugs = Bugs {
        heartbeat_prev_is_next_index: true,
        ..Bugs::default()
    };
    let test = "simulator_catches_heartbeats_that_overtake_their_batches";
    let caught = first_catch(SEEDS_MAX, default_faults(bugs, test), |v| {
        matches!(v, Violation::NeedlessProbe { .. })
    });
    assert!(caught.is_some());
}
