//! The simulator has teeth: with one Raft rule deliberately broken, it must
//! find a violation within a bounded number of seeds.

use raftlog::raft::Bugs;
use raftlog::sim::{Sim, SimOptions};

/// Seeds tried per mutation before the test gives up.
const SEEDS_MAX: u64 = 2_000;

fn first_failing_seed(bugs: Bugs, voters: usize) -> Option<u64> {
    (0..SEEDS_MAX).find(|&seed| {
        let mut options = SimOptions::new(seed, voters);
        options.bugs = bugs;
        // Figure 8 needs a leader to die right after committing by counting,
        // before entries of its own term spread: crash often, propose rarely.
        options.client_per_mille = 50;
        options.crash_per_mille = 30;
        options.steps = 1_000;
        match Sim::new(options).run() {
            Ok(_) => false,
            Err(failure) => {
                eprintln!("caught: {failure}");
                true
            }
        }
    })
}

// Committing an old-term entry by counting (Figure 8) needs a rare
// interleaving the random simulator did not reach in 2,000 seeds; the rule
// is checked by a scripted scenario in tests/raft_paper.rs instead
// (`an_old_term_entry_is_not_committed_by_counting_replicas`), which also
// shows that scenario fails with the mutation switched on.

#[test]
fn simulator_catches_two_votes_in_one_term() {
    let bugs = Bugs {
        double_vote: true,
        ..Bugs::default()
    };
    assert!(first_failing_seed(bugs, 3).is_some());
}

#[test]
fn simulator_catches_votes_granted_without_the_log_check() {
    let bugs = Bugs {
        vote_without_log_check: true,
        ..Bugs::default()
    };
    assert!(first_failing_seed(bugs, 3).is_some());
}

#[test]
fn simulator_catches_acknowledging_unpersisted_entries() {
    let bugs = Bugs {
        ack_unpersisted: true,
        ..Bugs::default()
    };
    assert!(first_failing_seed(bugs, 3).is_some());
}
