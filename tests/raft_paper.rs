//! The Raft paper, one rule per test, driving a few cores by hand (in the
//! spirit of etcd raft's raft_paper_test). Section numbers refer to
//! "In Search of an Understandable Consensus Algorithm" (extended version)
//! and to Ongaro's thesis for PreVote, CheckQuorum and transfers.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raftlog::raft::*;
use raftlog::sim::Disk;
use raftlog::types::{Entry, EntryKind, HardState, LogIndex, LogStart, Membership, NodeId, Term};

mod raft_harness;
use raft_harness::*;

// ---- §5.1: terms ----

/// §5.1: a server that sees a higher term adopts it and becomes follower.
#[test]
fn follower_updates_its_term_on_a_message_with_a_higher_term() {
    let (mut core, _) = core_with_log(1, &[1, 2, 3], &[], 1);
    core.step(2, append(5, (0, 0), &[], 0)).unwrap();
    assert_eq!(core.term(), 5);
    assert_eq!(core.role(), Role::Follower);
    assert_eq!(core.leader(), Some(2));
}

/// §5.1: a candidate that sees a higher term steps down.
#[test]
fn candidate_steps_down_on_a_higher_term() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.cut.insert(2);
    c.cut.insert(3);
    c.elect(1);
    assert_eq!(c.core(1).role(), Role::Candidate);
    let term = c.core(1).term();
    c.core_mut(1)
        .step(2, append(term + 1, (0, 0), &[], 0))
        .unwrap();
    assert_eq!(c.core(1).role(), Role::Follower);
    assert_eq!(c.core(1).term(), term + 1);
}

/// §5.1: a leader that sees a higher term steps down.
#[test]
fn leader_steps_down_on_a_higher_term() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    assert_eq!(c.core(1).role(), Role::Leader);
    let term = c.core(1).term();
    c.core_mut(1)
        .step(3, vote_request(term + 1, (0, 0)))
        .unwrap();
    assert_eq!(c.core(1).role(), Role::Follower);
    assert_eq!(c.core(1).term(), term + 1);
}

/// §5.1: a message with a stale term is rejected (no effect on the log).
#[test]
fn a_message_with_a_stale_term_is_rejected() {
    let (mut core, _) = core_with_log(1, &[1, 2, 3], &[], 3);
    core.step(2, append(2, (0, 0), &[(1, 2)], 0)).unwrap();
    assert_eq!(core.term(), 3);
    assert_eq!(core.last_index(), 0);
}

/// §5.1 with thesis §9.6 and §6.2: with PreVote and CheckQuorum on, a
/// stale leader would not otherwise learn the newer term (nobody raises
/// terms against it), so its AppendEntries is answered with a reply
/// carrying our term, which makes it step down; the log is untouched.
#[test]
fn a_stale_leader_is_told_the_newer_term_with_prevote_and_check_quorum() {
    let extensions = |c: &mut Config| {
        c.pre_vote = true;
        c.check_quorum = true;
    };
    let (mut core, mut disk) = core_with_log_cfg(1, &[1, 2, 3], &[], 3, extensions);
    core.step(2, append(2, (0, 0), &[(1, 2)], 0)).unwrap();
    assert_eq!(core.term(), 3);
    assert_eq!(core.last_index(), 0);
    let ready = drain(&mut core, &mut disk);
    assert!(ready.entries.is_empty());
    let replies: Vec<&Message> = ready
        .messages
        .iter()
        .filter(|(to, _)| *to == 2)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(replies.len(), 1, "{:?}", ready.messages);
    let Message::AppendEntriesResponse(reply) = replies[0] else {
        panic!("unexpected {:?}", replies[0]);
    };
    assert_eq!(reply.term, 3);
    assert!(matches!(reply.outcome, AppendOutcome::Rejected { .. }));

    // Delivered to a stale leader of term 2, the reply deposes it.
    let (mut leader, mut leader_disk) =
        core_with_log_cfg(2, &[1, 2, 3], &[], 1, |c| c.check_quorum = true);
    campaign_with_votes(&mut leader, &[3]);
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(leader.term(), 2);
    drain_and_sync(&mut leader, &mut leader_disk);
    leader
        .step(1, Message::AppendEntriesResponse(reply.clone()))
        .unwrap();
    assert_eq!(leader.role(), Role::Follower);
    assert_eq!(leader.term(), 3);
}

// ---- §5.2: leader election ----

/// §5.2: a follower that hears nothing for an election timeout campaigns.
#[test]
fn election_timeout_starts_an_election() {
    let (mut core, _) = core_with_log(1, &[1, 2, 3], &[], 1);
    for _ in 0..20 {
        core.tick();
    }
    assert_eq!(core.role(), Role::Candidate);
    assert_eq!(core.term(), 2);
    assert_eq!(core.hard_state().voted_for, Some(1));
}

/// §5.2: a candidate with votes from a majority becomes leader.
#[test]
fn candidate_wins_with_a_majority_of_votes() {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5], |_| {});
    c.cut.insert(4);
    c.cut.insert(5);
    c.elect(1);
    assert_eq!(c.core(1).role(), Role::Leader);
}

/// §5.2: without a majority a candidate does not become leader.
#[test]
fn candidate_without_a_majority_stays_candidate() {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5], |_| {});
    for id in [3, 4, 5] {
        c.cut.insert(id);
    }
    c.elect(1);
    assert_eq!(c.core(1).role(), Role::Candidate);
}

/// §5.2: a candidate that hears from a leader of its term becomes follower.
#[test]
fn candidate_loses_to_a_valid_leader_of_its_term() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.cut.extend([2, 3]);
    c.elect(1);
    let term = c.core(1).term();
    c.core_mut(1).step(2, append(term, (0, 0), &[], 0)).unwrap();
    assert_eq!(c.core(1).role(), Role::Follower);
    assert_eq!(c.core(1).leader(), Some(2));
}

/// §5.2: after a split vote the candidate times out and retries in a new term.
#[test]
fn candidate_retries_after_a_split_vote_with_a_new_term() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.cut.extend([2, 3]);
    c.elect(1);
    let term = c.core(1).term();
    for _ in 0..20 {
        c.core_mut(1).tick();
    }
    assert_eq!(c.core(1).role(), Role::Candidate);
    assert_eq!(c.core(1).term(), term + 1);
}

/// §5.2: election timeouts are randomized, so nodes rarely collide.
#[test]
fn randomized_election_timeouts_differ_between_nodes() {
    let mut fired_at = BTreeSet::new();
    for seed in 0..20u64 {
        let disk = Disk::new(LogStart::initial(voters(&[1, 2, 3])));
        let mut core = Core::new(config(1), disk.persisted_state(), seed).unwrap();
        let mut ticks = 0;
        while core.role() == Role::Follower {
            core.tick();
            ticks += 1;
        }
        assert!((10..=20).contains(&ticks), "timeout {ticks} outside 10..20");
        fired_at.insert(ticks);
    }
    assert!(fired_at.len() > 3, "timeouts {fired_at:?} are not spread");
}

/// §5.2: each server votes for at most one candidate per term.
#[test]
fn each_voter_votes_at_most_once_per_term() {
    let (mut core, mut disk) = core_with_log(1, &[1, 2, 3], &[], 1);
    core.step(2, vote_request(2, (0, 0))).unwrap();
    core.step(3, vote_request(2, (0, 0))).unwrap();
    let ready = drain(&mut core, &mut disk);
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 2,
            voted_for: Some(2)
        })
    );
    let granted: Vec<(NodeId, bool)> = ready
        .messages
        .iter()
        .map(|(to, m)| match m {
            Message::RequestVoteResponse(r) => (*to, r.granted),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(granted, vec![(2, true), (3, false)]);
}

/// §5.2/§5.4.1: the vote and its response leave in the same Ready, the
/// vote in `hard_state`, which the runtime persists before sending.
#[test]
fn a_vote_is_in_the_hard_state_of_the_ready_that_sends_it() {
    let (mut core, mut disk) = core_with_log(1, &[1, 2, 3], &[], 1);
    core.step(2, vote_request(2, (0, 0))).unwrap();
    let ready = drain(&mut core, &mut disk);
    assert_eq!(ready.hard_state.map(|h| h.voted_for), Some(Some(2)));
    assert_eq!(ready.messages.len(), 1);
}

/// §5.4.1: a vote is refused to a candidate whose log is less up to date.
#[test]
fn vote_is_refused_to_a_less_up_to_date_log() {
    for (candidate_last, expect) in [
        ((3, 2), true),
        ((2, 3), true),
        ((2, 2), false),
        ((4, 1), false),
    ] {
        let (mut core, mut disk) = core_with_log(1, &[1, 2, 3], &[1, 2, 2], 3);
        core.step(2, vote_request(4, candidate_last)).unwrap();
        let ready = drain(&mut core, &mut disk);
        let granted = ready
            .messages
            .iter()
            .any(|(_, m)| matches!(m, Message::RequestVoteResponse(r) if r.granted));
        assert_eq!(granted, expect, "candidate last {candidate_last:?}");
    }
}

// ---- §5.3: log replication ----

/// §5.3: the leader commits an entry once a majority has persisted it, and
/// counts itself only for entries it has persisted.
#[test]
fn leader_commits_once_a_majority_has_persisted_the_entry() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.auto_sync = false;
    let range = c.propose(1, &["a"]);
    c.settle();
    assert!(
        c.core(1).commit_index() < *range.end(),
        "nothing persisted yet"
    );
    c.sync(1);
    c.settle();
    assert!(
        c.core(1).commit_index() < *range.end(),
        "only the leader persisted"
    );
    c.sync(2);
    c.settle();
    assert_eq!(c.core(1).commit_index(), *range.end());
}

/// §5.3: followers learn the commit index from AppendEntries and advance to
/// min(leaderCommit, index of last new entry).
#[test]
fn followers_advance_commit_to_min_of_leader_commit_and_last_new_entry() {
    let (mut core, _) = core_with_log(1, &[1, 2, 3], &[], 1);
    core.step(2, append(1, (0, 0), &[(1, 1), (2, 1)], 5))
        .unwrap();
    assert_eq!(core.commit_index(), 2);
    core.step(2, append(1, (2, 1), &[(3, 1)], 2)).unwrap();
    assert_eq!(core.commit_index(), 2);
    core.step(2, append(1, (3, 1), &[], 3)).unwrap();
    assert_eq!(core.commit_index(), 3);
}

/// §5.3: a follower rejects an append whose previous entry does not match,
/// and the leader backs up (one round trip per term with the hint).
#[test]
fn follower_rejects_a_mismatch_and_the_leader_backs_up() {
    let (mut core, mut disk) = core_with_log(1, &[1, 2, 3], &[1, 1, 2, 2, 2], 3);
    core.step(2, append(4, (5, 3), &[], 0)).unwrap();
    let ready = drain(&mut core, &mut disk);
    let outcome = ready.messages.iter().find_map(|(_, m)| match m {
        Message::AppendEntriesResponse(r) => Some(r.outcome),
        _ => None,
    });
    assert_eq!(
        outcome,
        Some(AppendOutcome::Rejected {
            rejected_prev_index: 5,
            hint: RejectHint::ConflictingTerm {
                term: 2,
                first_index: 3
            }
        })
    );
    core.step(2, append(4, (7, 3), &[], 0)).unwrap();
    let ready = drain(&mut core, &mut disk);
    assert!(ready.messages.iter().any(|(_, m)| matches!(
        m,
        Message::AppendEntriesResponse(AppendEntriesResponse {
            outcome: AppendOutcome::Rejected {
                hint: RejectHint::LogTooShort { last_index: 5 },
                ..
            },
            ..
        })
    )));

    // End to end: a follower with a divergent log is repaired.
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose(1, &["a", "b"]);
    c.settle();
    c.cut.insert(1);
    c.propose(1, &["lost1", "lost2", "lost3"]);
    c.settle();
    c.cut.clear();
    c.cut.insert(1);
    c.elect(2);
    c.cut.clear();
    c.propose(2, &["c"]);
    c.settle();
    c.tick_all(3);
    assert_eq!(c.core(1).last_index(), c.core(2).last_index());
    assert_eq!(c.core(1).term_runs(), c.core(2).term_runs());
    assert_eq!(c.core(1).commit_index(), c.core(2).commit_index());
}

/// §5.3: a follower truncates a conflicting suffix and keeps a matching one.
#[test]
fn follower_truncates_a_conflicting_suffix_and_keeps_a_matching_one() {
    let (mut core, mut disk) = core_with_log(1, &[1, 2, 3], &[1, 1, 2, 2], 3);
    // Matching entries (1..=2, term 1) are kept: no truncation.
    core.step(2, append(3, (0, 0), &[(1, 1), (2, 1)], 0))
        .unwrap();
    let ready = drain(&mut core, &mut disk);
    assert_eq!(ready.truncate_from, None);
    assert_eq!(core.last_index(), 4);
    // A conflict at 3 drops 3..=4 and appends the leader's entries.
    core.step(2, append(3, (2, 1), &[(3, 3)], 0)).unwrap();
    let ready = drain(&mut core, &mut disk);
    assert_eq!(ready.truncate_from, Some(3));
    assert_eq!(ready.entries.len(), 1);
    assert_eq!(core.last_index(), 3);
    assert_eq!(core.term_at(3), Some(3));
}

/// §5.4.2 (Figure 8): an entry of an older term is not committed by
/// counting replicas; it commits only with an entry of the current term.
#[test]
fn an_old_term_entry_is_not_committed_by_counting_replicas() {
    assert!(!figure_8_commits_old_entry(Bugs::default()));
    // The mutation switch breaks exactly this rule.
    assert!(figure_8_commits_old_entry(Bugs {
        commit_old_term_by_counting: true,
        ..Bugs::default()
    }));
}

/// Leader 1 of term 3 holds entry (2, term 1) that only it and node 2 had;
/// it replicates it to node 3: a majority holds an old-term entry.
fn figure_8_commits_old_entry(bugs: Bugs) -> bool {
    let members = [1, 2, 3, 4, 5];
    let mut config_1 = config(1);
    config_1.bugs = bugs;
    let mut disk = Disk::new(LogStart::initial(voters(&members)));
    disk.append(Entry::data(1, 1, Bytes::from_static(b"a")));
    disk.append(Entry::data(2, 1, Bytes::from_static(b"b")));
    disk.sync();
    disk.hard_state = HardState {
        term: 2,
        voted_for: None,
    };
    let mut leader = Core::new(config_1, disk.persisted_state(), 1).unwrap();
    for _ in 0..20 {
        leader.tick();
    }
    for voter in [2, 3] {
        let term = leader.term();
        leader
            .step(
                voter,
                Message::RequestVoteResponse(RequestVoteResponse {
                    term,
                    pre_vote: false,
                    granted: true,
                }),
            )
            .unwrap();
    }
    assert_eq!(leader.role(), Role::Leader);
    let _ = drain(&mut leader, &mut disk);
    if let Some((index, term)) = disk.sync() {
        leader.persisted(index, term);
    }
    let term = leader.term();
    // Nodes 2 and 3 acknowledge entry 2 (old term), not the leader's newer ones.
    for voter in [2, 3] {
        leader
            .step(
                voter,
                Message::AppendEntriesResponse(AppendEntriesResponse {
                    term,
                    outcome: AppendOutcome::Accepted { match_index: 2 },
                    repairing: false,
                }),
            )
            .unwrap();
    }
    leader.commit_index() >= 2
}

// ---- beyond the paper ----

/// Thesis §9.6: with PreVote, a node cut off from the cluster does not raise
/// its term, so it does not disrupt the leader when it returns.
/// Its log is as up to date as the others' (nothing was written while it
/// was away), so only the "heard from a leader recently" rule (thesis
/// §4.2.3) keeps its pre-vote from winning: run with CheckQuorum on and off.
#[test]
fn prevote_keeps_a_partitioned_node_from_raising_its_term() {
    for check_quorum in [true, false] {
        let mut c = Cluster::new(&[1, 2, 3], |cfg| {
            cfg.pre_vote = true;
            cfg.check_quorum = check_quorum;
        });
        c.elect(1);
        let term = c.core(1).term();
        c.cut.insert(3);
        for _ in 0..100 {
            c.core_mut(3).tick();
            c.tick_all(1);
        }
        assert_eq!(
            c.core(3).term(),
            term,
            "isolated node kept its term (check_quorum {check_quorum})"
        );
        assert_ne!(c.core(3).role(), Role::Follower, "it campaigns");
        assert_eq!(c.core(3).last_index(), c.core(1).last_index());
        // It rejoins; its next pre-vote reaches the others before any
        // heartbeat reaches it.
        c.cut.clear();
        let mut pre_voted = false;
        for _ in 0..30 {
            c.core_mut(3).tick();
            c.drain(3);
            if c.outbox
                .iter()
                .any(|(_, _, m)| matches!(m, Message::RequestVote(_)))
            {
                pre_voted = true;
                break;
            }
        }
        assert!(pre_voted);
        c.settle();
        c.tick_all(60);
        for id in [1, 2, 3] {
            assert_eq!(
                c.core(id).term(),
                term,
                "node {id}, check_quorum {check_quorum}"
            );
            assert_eq!(
                c.core(id).leader(),
                Some(1),
                "node {id}, check_quorum {check_quorum}"
            );
        }
        assert_eq!(c.core(1).role(), Role::Leader);
    }
}

/// Thesis §6.2: with CheckQuorum a leader that has not heard from a majority
/// within an election timeout steps down.
#[test]
fn check_quorum_makes_an_isolated_leader_step_down() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| cfg.check_quorum = true);
    c.elect(1);
    c.cut.extend([2, 3]);
    for _ in 0..25 {
        c.core_mut(1).tick();
    }
    assert_eq!(c.core(1).role(), Role::Follower);
}

/// Thesis §3.10: leadership transfer hands over to an up-to-date voter.
#[test]
fn leadership_transfer_makes_the_target_leader() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| {
        cfg.pre_vote = true;
        cfg.check_quorum = true;
    });
    c.elect(1);
    c.propose(1, &["a"]);
    c.settle();
    c.core_mut(1).transfer_leadership(3).unwrap();
    assert!(matches!(
        c.core_mut(1).propose(vec![Proposal::data(Bytes::new())]),
        Err(ProposeError::TransferInProgress { to: 3 })
    ));
    c.settle();
    assert_eq!(c.core(3).role(), Role::Leader);
    assert_eq!(c.core(1).role(), Role::Follower);
    assert_eq!(c.core(1).leader(), Some(3));
}

/// §6 / thesis §4.2.1: a learner receives the log but does not vote or count
/// toward commitment; once promoted it does.
#[test]
fn a_learner_receives_the_log_and_is_promoted_through_joint_consensus() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let disk = Disk::new(LogStart::initial(Membership::default()));
    let core = Core::new(config(4), disk.persisted_state(), 4).unwrap();
    c.nodes.insert(4, Node { core, disk });
    c.elect(1);
    c.core_mut(1)
        .propose_membership_change(MembershipChange::AddLearner {
            id: 4,
            addr: "n4".into(),
        })
        .unwrap();
    c.settle();
    c.tick_all(3);
    assert!(c.core(4).membership().is_learner(4));
    assert_eq!(c.core(4).last_index(), c.core(1).last_index());
    // A learner never campaigns.
    for _ in 0..100 {
        c.core_mut(4).tick();
    }
    assert_eq!(c.core(4).role(), Role::Follower);
    c.settle();
    c.core_mut(1)
        .propose_membership_change(MembershipChange::PromoteLearner { id: 4 })
        .unwrap();
    // A second change while this one is in progress is refused.
    assert!(matches!(
        c.core_mut(1)
            .propose_membership_change(MembershipChange::Remove { id: 2 }),
        Err(MembershipChangeError::ChangeInProgress { .. })
    ));
    c.settle();
    c.tick_all(3);
    let membership = c.core(1).membership().clone();
    assert!(
        !membership.is_joint(),
        "C_new follows C_old,new automatically"
    );
    assert!(membership.voters.contains(&4));
    assert_eq!(c.core(4).membership(), &membership);
}

/// Thesis §4.2.2: a leader removed from the configuration steps down once
/// C_new commits, and the rest elect a new leader.
#[test]
fn a_removed_leader_steps_down_after_c_new_commits() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.core_mut(1)
        .propose_membership_change(MembershipChange::Remove { id: 1 })
        .unwrap();
    c.settle();
    c.tick_all(3);
    assert_eq!(c.core(1).role(), Role::Follower);
    assert!(!c.core(2).membership().is_voter(1));
    c.cut.insert(1);
    c.tick_all(40);
    let leaders: Vec<NodeId> = [2, 3]
        .into_iter()
        .filter(|&id| c.core(id).role() == Role::Leader)
        .collect();
    assert_eq!(leaders.len(), 1);
}

/// A follower that needs entries below the leader's log start is reset to
/// it, with the membership at that point.
#[test]
fn a_follower_behind_the_log_start_is_reset_to_it() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.cut.insert(3);
    c.propose(1, &["a", "b", "c", "d"]);
    c.settle();
    c.tick_all(3);
    let commit = c.core(1).commit_index();
    let node = c.nodes.get_mut(&1).unwrap();
    let start = node.disk.log_start_at(commit).unwrap();
    node.core.log_compacted(start.clone()).unwrap();
    node.disk.compact(start.clone());
    c.cut.clear();
    c.tick_all(3);
    assert_eq!(c.core(3).first_index(), start.first_index);
    assert_eq!(c.core(3).last_index(), c.core(1).last_index());
    assert_eq!(c.core(3).membership(), &start.membership);
    assert_eq!(c.core(3).commit_index(), c.core(1).commit_index());
}

/// The core refuses malformed input with a typed error, never a panic.
#[test]
fn malformed_entries_are_refused_with_a_typed_error() {
    let (mut core, _) = core_with_log(1, &[1, 2, 3], &[], 1);
    let result = core.step(2, append(1, (0, 0), &[(2, 1)], 0));
    assert_eq!(
        result,
        Err(StepError::BadEntries {
            from: 2,
            prev_log_index: 0
        })
    );
    assert!(matches!(
        core.step(1, append(1, (0, 0), &[], 0)),
        Err(StepError::FromSelf { .. })
    ));
    let _ = EntryKind::Data;
}

// ---- beyond the paper: a node whose storage found damage ----

/// A node whose log was cut by damage (entries 3..=5 gone, it held up to 5)
/// neither campaigns nor grants votes; once a leader has durably refilled
/// its log up to 5 it reports the repair complete and votes again.
#[test]
fn a_repairing_node_does_not_vote_until_its_log_is_refilled() {
    let mut disk = Disk::new(LogStart::initial(voters(&[1, 2, 3])));
    for index in 1..=5 {
        disk.append(Entry::data(index, 1, Bytes::from(format!("x{index}.1"))));
    }
    disk.sync();
    disk.hard_state = HardState {
        term: 1,
        voted_for: None,
    };
    disk.damage(3);
    assert_eq!(disk.last_index(), 2);
    let mut core = Core::new(config(1), disk.persisted_state(), 1).unwrap();
    assert_eq!(
        core.status().repair,
        Some(Repair {
            until_index: 5,
            hard_state_lost: false
        })
    );

    // Never campaigns, however long it waits.
    for _ in 0..200 {
        core.tick();
    }
    let ready = drain(&mut core, &mut disk);
    assert_eq!(core.role(), Role::Follower);
    assert!(ready.messages.is_empty(), "{:?}", ready.messages);

    // Refuses a vote even to a candidate whose log is more up to date.
    core.step(2, vote_request(2, (9, 2))).unwrap();
    let ready = drain(&mut core, &mut disk);
    assert!(ready
        .messages
        .iter()
        .all(|(_, m)| matches!(m, Message::RequestVoteResponse(r) if !r.granted)));
    assert_eq!(core.hard_state().voted_for, None);

    // The leader of term 2 refills entries 3..=6; acknowledged only once
    // persisted, and the repair ends with that.
    core.step(2, append(2, (2, 1), &[(3, 1), (4, 1), (5, 1), (6, 2)], 2))
        .unwrap();
    let ready = drain(&mut core, &mut disk);
    assert!(!ready.repair_complete);
    let (index, term) = disk.sync().unwrap();
    core.persisted(index, term);
    let ready = drain(&mut core, &mut disk);
    assert!(ready.repair_complete);
    assert_eq!(core.status().repair, None);
    assert!(ready.messages.iter().any(|(to, m)| *to == 2
        && matches!(m, Message::AppendEntriesResponse(r)
            if r.outcome == AppendOutcome::Accepted { match_index: 6 })));

    // Votes again (term 3, a candidate as up to date as we are).
    core.step(3, vote_request(3, (6, 2))).unwrap();
    let ready = drain(&mut core, &mut disk);
    assert!(ready
        .messages
        .iter()
        .any(|(_, m)| matches!(m, Message::RequestVoteResponse(r) if r.granted)));
}

/// A leader whose follower lost acknowledged entries stops counting them
/// and repairs the follower from where its log now ends.
#[test]
fn the_leader_repairs_a_follower_that_lost_acknowledged_entries() {
    let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
    cluster.elect(1);
    cluster.propose(1, &["a", "b", "c", "d"]);
    cluster.settle();
    let last = cluster.core(1).last_index();
    assert_eq!(cluster.core(2).commit_index(), last);
    // Node 2 restarts with its log cut after entry 2.
    cluster.restart_damaged(2, 3);
    cluster.propose(1, &["e"]);
    cluster.settle();
    cluster.tick_all(10);
    cluster.settle();
    let core = cluster.core(2);
    assert_eq!(core.last_index(), last + 1);
    assert_eq!(core.status().repair, None, "node 2 finished its repair");
}

/// A node that lost its term and vote asks every voter for its term before
/// it may vote again; it never votes in a term up to the highest answer
/// (a candidate it voted for before the loss holds at least that term).
#[test]
fn a_node_that_lost_its_vote_fences_every_term_a_voter_reports() {
    let (_, mut disk) = core_with_log(1, &[1, 2, 3], &[1, 1, 1], 6);
    disk.crash();
    disk.lose_hard_state();
    let mut core = Core::new(config(1), disk.persisted_state(), 1).unwrap();
    assert_eq!(core.term(), 0);

    let mut probed = BTreeMap::new();
    for _ in 0..10 {
        core.tick();
        for (to, message) in drain(&mut core, &mut disk).messages {
            match message {
                Message::TermProbe(probe) => {
                    probed.insert(to, probe.nonce);
                }
                other => panic!("only term probes leave: {other:?}"),
            }
        }
    }
    assert_eq!(
        probed.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([2, 3]),
        "every other voter is asked"
    );
    assert_eq!(core.role(), Role::Follower, "it never campaigns");

    // Seed 5549 of the long simulation: a stale leader (term 2 here, below
    // the term 6 we had) must not make us overwrite entries we helped
    // commit. Until fenced, nothing from any leader counts.
    core.step(2, append(2, (1, 1), &[(2, 2)], 2)).unwrap();
    let ready = drain(&mut core, &mut disk);
    assert_eq!(ready.truncate_from, None);
    assert!(ready.messages.is_empty(), "{:?}", ready.messages);
    assert_eq!(core.last_index(), 3);
    assert_eq!(core.term(), 0);

    let report = |to: NodeId, term| {
        Message::TermProbeResponse(TermProbeResponse {
            term,
            nonce: probed[&to],
        })
    };
    core.step(2, report(2, 5)).unwrap();
    drain(&mut core, &mut disk);
    assert!(
        core.status().repair.unwrap().hard_state_lost,
        "3 has not answered"
    );
    core.step(3, report(3, 6)).unwrap();
    let mut repair_complete = false;
    for _ in 0..10 {
        core.tick();
        repair_complete |= drain(&mut core, &mut disk).repair_complete;
    }
    // Term 6 is fenced: a vote of ours (for ourselves) is recorded in it,
    // and since only the hard state was lost, the repair is over (it may
    // since have started a campaign of its own, in a later term).
    assert!(core.term() >= 6);
    assert_eq!(core.hard_state().voted_for, Some(1));
    assert!(repair_complete);
    core.step(2, vote_request(6, (9, 6))).unwrap();
    let ready = drain(&mut core, &mut disk);
    assert!(!ready
        .messages
        .iter()
        .any(|(_, m)| matches!(m, Message::RequestVoteResponse(r) if r.granted)));

    // A leader of term 7 is followed; the node votes again in term 8.
    core.step(2, append(7, (3, 1), &[(4, 7)], 4)).unwrap();
    drain(&mut core, &mut disk);
    let (index, term) = disk.sync().unwrap();
    core.persisted(index, term);
    drain(&mut core, &mut disk);
    core.step(3, vote_request(8, (4, 7))).unwrap();
    let ready = drain(&mut core, &mut disk);
    assert!(ready
        .messages
        .iter()
        .any(|(_, m)| matches!(m, Message::RequestVoteResponse(r) if r.granted)));
}

/// A single voter that lost its hard state has nobody to ask: it fences
/// at least the term of its own last entry, so a new leadership of its
/// never appends entries of a lower term after them.
#[test]
fn a_lone_voter_that_lost_its_vote_fences_its_last_entry_term() {
    let (_, mut disk) = core_with_log(1, &[1], &[1, 4, 4], 4);
    disk.crash();
    disk.lose_hard_state();
    let mut core = Core::new(config(1), disk.persisted_state(), 1).unwrap();
    for _ in 0..200 {
        core.tick();
        let ready = drain(&mut core, &mut disk);
        if let Some(hs) = ready.hard_state {
            disk.hard_state = hs;
        }
        if let Some((index, term)) = disk.sync() {
            core.persisted(index, term);
        }
    }
    assert_eq!(core.role(), Role::Leader);
    assert!(
        core.term() > 4,
        "term {} after a log ending in term 4",
        core.term()
    );
}

// ---- helpers for the tests below ----

/// Ticks a lone core until it campaigns, then grants it the votes of
/// `granters` (a real vote each, in its term): it leads if they are enough.
fn campaign_with_votes(core: &mut Core, granters: &[NodeId]) {
    for _ in 0..100 {
        core.tick();
        if core.role() != Role::Follower {
            break;
        }
    }
    for &voter in granters {
        let term = core.term();
        core.step(
            voter,
            Message::RequestVoteResponse(RequestVoteResponse {
                term,
                pre_vote: false,
                granted: true,
            }),
        )
        .unwrap();
    }
}

/// Applies a lone core's Ready to its disk (hard state included) and syncs.
fn drain_and_sync(core: &mut Core, disk: &mut Disk) -> Ready {
    let ready = core.take_ready(disk);
    if let Some(start) = ready.log_start_reset.clone() {
        disk.reset(start);
    }
    if let Some(from) = ready.truncate_from {
        disk.truncate_from(from);
    }
    for entry in &ready.entries {
        disk.append(entry.clone());
    }
    if let Some(hs) = ready.hard_state {
        disk.hard_state = hs;
    }
    if let Some((index, term)) = disk.sync() {
        core.persisted(index, term);
    }
    ready
}

fn vote_granted(ready: &Ready, to: NodeId) -> Option<bool> {
    ready.messages.iter().find_map(|(t, m)| match m {
        Message::RequestVoteResponse(r) if *t == to => Some(r.granted),
        _ => None,
    })
}

fn ack(term: Term, match_index: LogIndex) -> Message {
    Message::AppendEntriesResponse(AppendEntriesResponse {
        term,
        outcome: AppendOutcome::Accepted { match_index },
        repairing: false,
    })
}

// ---- §5.2: heartbeats and the contents of RequestVote ----

/// §5.2: a leader sends heartbeats (empty AppendEntries) to every follower
/// every `heartbeat_ticks`, and not more often, while it has nothing new.
#[test]
fn leader_broadcasts_a_heartbeat_every_heartbeat_interval() {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5], |_| {});
    c.elect(1);
    assert_eq!(c.core(1).role(), Role::Leader);
    let heartbeat_ticks = c.core(1).config().heartbeat_ticks;
    assert_eq!(heartbeat_ticks, 2);
    let mut heartbeats_at: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
    for tick in 1..=5 * heartbeat_ticks {
        c.core_mut(1).tick();
        c.drain(1);
        for (from, to, message) in &c.outbox {
            assert_eq!(*from, 1);
            match message {
                Message::AppendEntries(a) => {
                    assert!(a.entries.is_empty(), "nothing new to send: {a:?}");
                    assert_eq!(a.term, c.core(1).term());
                    heartbeats_at.entry(*to).or_default().push(tick);
                }
                other => panic!("leader sent {other:?} on tick {tick}"),
            }
        }
        c.settle();
    }
    let expected: Vec<u64> = (1..=5).map(|k| k * heartbeat_ticks).collect();
    for follower in [2, 3, 4, 5] {
        assert_eq!(
            heartbeats_at.get(&follower),
            Some(&expected),
            "heartbeats to {follower}"
        );
    }
}

/// §5.2, §5.4.1: a candidate's RequestVote carries its new term and the
/// index and term of its last entry, to every other voter; a pre-vote
/// (thesis §9.6) carries the term it would campaign in without raising
/// its own.
#[test]
fn request_vote_carries_the_term_and_the_last_log_index_and_term() {
    for pre_vote in [false, true] {
        let (mut core, mut disk) =
            core_with_log_cfg(1, &[1, 2, 3], &[1, 1, 2], 2, |c| c.pre_vote = pre_vote);
        for _ in 0..20 {
            core.tick();
        }
        assert_eq!(core.term(), if pre_vote { 2 } else { 3 });
        let ready = drain(&mut core, &mut disk);
        let mut asked = BTreeSet::new();
        for (to, message) in ready.messages {
            assert_eq!(
                message,
                Message::RequestVote(RequestVote {
                    term: 3,
                    last_log_index: 3,
                    last_log_term: 2,
                    pre_vote,
                    leadership_transfer: false,
                }),
                "to {to}"
            );
            asked.insert(to);
        }
        assert_eq!(asked, BTreeSet::from([2, 3]), "pre_vote {pre_vote}");
    }
}

/// §5.3, §8: a new leader's first AppendEntries to each follower refers to
/// its last entry before the election (prev index and term), carries the
/// no-op of its own term, and its commit index.
#[test]
fn a_new_leaders_first_append_carries_prev_index_and_term_its_noop_and_commit() {
    let (mut core, mut disk) = core_with_log(1, &[1, 2, 3], &[1, 1, 2], 2);
    // Entry 1 is known committed (a previous leader told us).
    core.step(2, append(2, (3, 2), &[], 1)).unwrap();
    assert_eq!(core.commit_index(), 1);
    drain_and_sync(&mut core, &mut disk);
    campaign_with_votes(&mut core, &[2]);
    assert_eq!(core.role(), Role::Leader);
    assert_eq!(core.term(), 3);
    let ready = drain(&mut core, &mut disk);
    let mut sent = BTreeSet::new();
    for (to, message) in ready.messages {
        let a = match message {
            Message::AppendEntries(a) => a,
            Message::RequestVote(_) => continue,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(a.term, 3);
        assert_eq!((a.prev_log_index, a.prev_log_term), (3, 2), "to {to}");
        assert_eq!(a.entries, vec![Entry::noop(4, 3)], "to {to}");
        assert_eq!(a.leader_commit, 1, "to {to}");
        sent.insert(to);
    }
    assert_eq!(sent, BTreeSet::from([2, 3]));
}

// ---- §5.3: Figure 7, backtracking ----

/// The leader's log in Figure 7 (term 8 is the term it leads).
const FIGURE_7_LEADER: &[Term] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];

/// Figure 7's followers (a)-(f), with the AppendEntries rejections fast
/// backtracking needs to bring each up to date: one per term of its log
/// that conflicts with the leader's, and one if its log is too short.
const FIGURE_7_FOLLOWERS: &[(char, &[Term], usize)] = &[
    ('a', &[1, 1, 1, 4, 4, 5, 5, 6, 6], 1),
    ('b', &[1, 1, 1, 4], 1),
    ('c', &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], 0),
    ('d', &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 0),
    ('e', &[1, 1, 1, 4, 4, 4, 4], 2),
    ('f', &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 2),
];

/// Node 1 leads term 8 with Figure 7's log (elected with node 3's vote;
/// node 3 is then cut off) and syncs node 2, which holds `follower`.
fn sync_figure_7_follower(follower: &[Term]) -> Cluster {
    let mut c = Cluster::with_logs(
        &[1, 2, 3],
        &[(1, FIGURE_7_LEADER, 7), (2, follower, 7), (3, &[], 7)],
        |_| {},
    );
    c.cut.insert(3);
    campaign_with_votes(c.core_mut(1), &[3]);
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(1).term(), 8);
    c.settle();
    // A heartbeat carries the commit index to the follower.
    for _ in 0..2 {
        c.core_mut(1).tick();
    }
    c.settle();
    c
}

/// §5.3 (Figure 7): a leader brings every follower's log to its own,
/// whatever the follower lacks or holds in excess, and the new term's
/// entry then commits on both.
#[test]
fn leader_syncs_each_figure_7_follower_to_its_log() {
    let mut expected = FIGURE_7_LEADER.to_vec();
    expected.push(8);
    for &(name, follower, _) in FIGURE_7_FOLLOWERS {
        let c = sync_figure_7_follower(follower);
        assert_eq!(c.disk_terms(1), expected, "leader, case ({name})");
        assert_eq!(c.disk_terms(2), expected, "follower ({name})");
        assert_eq!(c.core(2).term_runs(), c.core(1).term_runs(), "({name})");
        assert_eq!(c.core(1).commit_index(), 11, "({name})");
        assert_eq!(c.core(2).commit_index(), 11, "({name})");
    }
}

/// §5.3 (the optimisation at its end): with the follower's conflict hint,
/// the leader needs one AppendEntries round trip per conflicting term, not
/// one per entry (counted on Figure 7's followers).
#[test]
fn backtracking_takes_one_round_trip_per_conflicting_term() {
    for &(name, follower, rejections) in FIGURE_7_FOLLOWERS {
        let c = sync_figure_7_follower(follower);
        assert_eq!(c.rejections(2, 1), rejections, "follower ({name})");
        assert_eq!(c.rejections(1, 2), 0, "({name})");
        assert_eq!(c.core(2).last_index(), 11, "({name})");
    }
}

// ---- §5.3, §5.4.2: commitment ----

/// §5.3: committing an entry of the leader's term commits every entry
/// before it, including those of earlier terms (Log Matching).
#[test]
fn leader_commit_covers_every_preceding_entry() {
    let old: &[Term] = &[1, 2, 2];
    let mut c = Cluster::with_logs(&[1, 2, 3], &[(1, old, 2), (2, old, 2), (3, old, 2)], |_| {});
    assert_eq!(c.core(1).commit_index(), 0);
    c.elect(1);
    assert_eq!(c.core(1).role(), Role::Leader);
    let range = c.propose(1, &["x"]);
    c.settle();
    c.core_mut(1).tick();
    c.core_mut(1).tick();
    c.settle();
    assert_eq!(*range.end(), 5);
    for id in [1, 2, 3] {
        assert_eq!(c.core(id).commit_index(), 5, "node {id}");
        assert_eq!(c.disk_terms(id), vec![1, 2, 2, 3, 3], "node {id}");
    }
}

/// §5.3: an entry commits once the leader and enough followers to make a
/// majority have persisted it, and not with one acknowledgement fewer,
/// for clusters of 1 to 7 voters.
#[test]
fn leader_commits_with_exactly_a_majority_of_acknowledgements() {
    for size in 1..=7u64 {
        let members: Vec<NodeId> = (1..=size).collect();
        let majority = size / 2 + 1;
        for acks in 0..size {
            let (mut core, mut disk) = core_with_log(1, &members, &[], 1);
            let granters: Vec<NodeId> = (2..=majority).collect();
            campaign_with_votes(&mut core, &granters);
            assert_eq!(core.role(), Role::Leader, "size {size}");
            drain_and_sync(&mut core, &mut disk);
            let range = core
                .propose(vec![Proposal::data(Bytes::from_static(b"x"))])
                .unwrap();
            let index = *range.end();
            assert_eq!(index, 2, "after the no-op");
            drain_and_sync(&mut core, &mut disk);
            let term = core.term();
            for follower in 2..=acks + 1 {
                core.step(follower, ack(term, index)).unwrap();
            }
            let committed = core.commit_index() == index;
            assert_eq!(
                committed,
                acks + 1 >= majority,
                "size {size}, {acks} follower acks, commit {}",
                core.commit_index()
            );
            if !committed {
                assert_eq!(core.commit_index(), 0, "size {size}, {acks} acks");
            }
        }
    }
}

// ---- §5.2, §5.4.1: votes ----

/// §5.2 (Figure 2, "persistent state"): a vote is stored before it is
/// answered, so a voter that restarts from its disk refuses a second
/// candidate in the same term (and still grants the first).
#[test]
fn a_vote_survives_a_restart() {
    let (mut core, mut disk) = core_with_log(1, &[1, 2, 3], &[1], 1);
    core.step(2, vote_request(2, (1, 1))).unwrap();
    let ready = drain_and_sync(&mut core, &mut disk);
    assert_eq!(vote_granted(&ready, 2), Some(true));
    disk.crash();
    let mut core = Core::new(config(1), disk.persisted_state(), 99).unwrap();
    assert_eq!(core.term(), 2);
    core.step(3, vote_request(2, (1, 1))).unwrap();
    let ready = drain_and_sync(&mut core, &mut disk);
    assert_eq!(vote_granted(&ready, 3), Some(false));
    core.step(2, vote_request(2, (1, 1))).unwrap();
    let ready = drain_and_sync(&mut core, &mut disk);
    assert_eq!(vote_granted(&ready, 2), Some(true));
    assert_eq!(core.hard_state().voted_for, Some(2));
}

/// §5.2: a voter answers a repeated RequestVote of the candidate it voted
/// for in that term with a grant again (the first answer may be lost).
#[test]
fn a_repeated_vote_request_from_the_same_candidate_is_granted_again() {
    let (mut core, mut disk) = core_with_log(1, &[1, 2, 3], &[], 1);
    for attempt in 0..3 {
        core.step(2, vote_request(2, (0, 0))).unwrap();
        let ready = drain_and_sync(&mut core, &mut disk);
        assert_eq!(vote_granted(&ready, 2), Some(true), "attempt {attempt}");
        assert_eq!(core.hard_state().voted_for, Some(2));
    }
}

// ---- §5.3: follower commit ----

/// §5.3: a follower's commit index never goes down: an AppendEntries with
/// a lower `leader_commit` (reordered, or from before an ack) leaves it.
#[test]
fn a_lower_leader_commit_never_lowers_a_followers_commit_index() {
    let (mut core, mut disk) = core_with_log(1, &[1, 2, 3], &[], 1);
    core.step(2, append(2, (0, 0), &[(1, 2), (2, 2), (3, 2)], 3))
        .unwrap();
    assert_eq!(core.commit_index(), 3);
    core.step(2, append(2, (3, 2), &[], 1)).unwrap();
    assert_eq!(core.commit_index(), 3);
    core.step(2, append(2, (1, 2), &[(2, 2)], 0)).unwrap();
    assert_eq!(core.commit_index(), 3);
    let ready = drain_and_sync(&mut core, &mut disk);
    assert_eq!(ready.truncate_from, None);
    assert_eq!(core.last_index(), 3);
    assert_eq!(core.status().commit_index, 3);
}

// ---- §5.3: the leader's bookkeeping ----

/// §5.3: responses arrive late and twice; a leader that receives a stale
/// reject (below what the follower acknowledged) or a duplicate or older
/// ack changes neither the follower's match and next index nor its commit,
/// and sends nothing for it.
#[test]
fn stale_rejects_and_duplicate_acks_change_nothing_at_the_leader() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose(1, &["a", "b", "c"]);
    c.settle();
    let before = c.core(1).status();
    let peer = |s: &Status| {
        s.peers
            .iter()
            .find(|p| p.id == 2)
            .map(|p| (p.match_index, p.next_index))
            .unwrap()
    };
    let (matched, _) = peer(&before);
    assert_eq!(matched, 4);
    let term = c.core(1).term();
    let stale = [
        ack(term, 4),
        ack(term, 2),
        ack(term, 0),
        Message::AppendEntriesResponse(AppendEntriesResponse {
            term,
            outcome: AppendOutcome::Rejected {
                rejected_prev_index: 3,
                hint: RejectHint::LogTooShort { last_index: 2 },
            },
            repairing: false,
        }),
        Message::AppendEntriesResponse(AppendEntriesResponse {
            term,
            outcome: AppendOutcome::Rejected {
                rejected_prev_index: 1,
                hint: RejectHint::ConflictingTerm {
                    term: 1,
                    first_index: 1,
                },
            },
            repairing: false,
        }),
    ];
    for message in stale {
        c.core_mut(1).step(2, message.clone()).unwrap();
        let after = c.core(1).status();
        assert_eq!(peer(&after), peer(&before), "after {message:?}");
        assert_eq!(after.commit_index, before.commit_index, "after {message:?}");
        c.drain(1);
        assert!(c.outbox.is_empty(), "after {message:?}: {:?}", c.outbox);
    }
}

// ---- thesis §6.2: CheckQuorum ----

/// Thesis §6.2: CheckQuorum steps down only a leader that has lost its
/// quorum: with a quorum answering, it leads for many election timeouts,
/// also with one follower cut off.
#[test]
fn check_quorum_keeps_a_leader_whose_quorum_is_active() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| {
        cfg.check_quorum = true;
        cfg.pre_vote = true;
    });
    c.elect(1);
    let term = c.core(1).term();
    c.tick_all(10 * 20);
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(1).term(), term);
    c.cut.insert(3);
    c.tick_all(10 * 20);
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(1).term(), term);
    assert_eq!(c.core(2).leader(), Some(1));
}

// ---- thesis §3.10: leadership transfer ----

/// Thesis §3.10: a transfer to a target that is behind first brings its
/// log up to date, then sends TimeoutNow; the target wins the election.
#[test]
fn leadership_transfer_catches_a_lagging_target_up_first() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| {
        cfg.pre_vote = true;
        cfg.check_quorum = true;
    });
    c.elect(1);
    let term = c.core(1).term();
    c.cut.insert(3);
    c.propose(1, &["a", "b", "c"]);
    c.settle();
    // The leader finds out that node 3 lost what it sent (no answer).
    for _ in 0..2 * c.core(1).config().election_ticks_min {
        c.core_mut(1).tick();
        c.settle();
    }
    let last = c.core(1).last_index();
    assert!(c.core(3).last_index() < last);
    c.cut.clear();
    c.core_mut(1).transfer_leadership(3).unwrap();
    c.drain(1);
    assert!(
        !c.outbox
            .iter()
            .any(|(_, _, m)| matches!(m, Message::TimeoutNow(_))),
        "TimeoutNow before the target caught up"
    );
    for _ in 0..10 {
        if c.core(3).role() == Role::Leader {
            break;
        }
        c.core_mut(1).tick();
        c.settle();
    }
    assert_eq!(c.core(3).role(), Role::Leader);
    assert_eq!(c.core(3).term(), term + 1);
    assert_eq!(c.core(1).leader(), Some(3));
    let timeout_now = c
        .delivered
        .iter()
        .position(|(f, t, m)| *f == 1 && *t == 3 && matches!(m, Message::TimeoutNow(_)))
        .expect("TimeoutNow was sent");
    let caught_up = c
        .delivered
        .iter()
        .position(|(f, t, m)| *f == 3 && *t == 1 && *m == ack(term, last))
        .expect("the target acknowledged the leader's last entry");
    assert!(
        caught_up < timeout_now,
        "TimeoutNow only after the catch-up"
    );
    assert!(c.core(3).last_index() > last, "the new leader kept a..c");
}

/// Thesis §3.10: the target is brought up to date "using the normal
/// replication mechanism" within the transfer's election timeout, also
/// when the batches last sent to it were lost just before the transfer
/// (the leader has not given up on them yet; the target's heartbeat
/// answers say how far it is).
#[test]
fn leadership_transfer_catches_up_a_target_whose_last_batches_were_lost() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| {
        cfg.pre_vote = true;
        cfg.check_quorum = true;
    });
    c.elect(1);
    let term = c.core(1).term();
    c.cut.insert(3);
    c.propose(1, &["a", "b", "c"]);
    c.settle();
    c.cut.clear();
    c.core_mut(1).transfer_leadership(3).unwrap();
    for _ in 0..c.core(1).config().election_ticks_min {
        if c.core(3).role() == Role::Leader {
            break;
        }
        c.core_mut(1).tick();
        c.settle();
    }
    assert_eq!(c.core(3).role(), Role::Leader, "the transfer completed");
    assert_eq!(c.core(3).term(), term + 1);
}

/// Thesis §3.10: a transfer that does not complete within an election
/// timeout is abandoned, and the leader accepts proposals again.
#[test]
fn leadership_transfer_times_out_after_an_election_timeout() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.cut.insert(3);
    c.core_mut(1).transfer_leadership(3).unwrap();
    let data = || vec![Proposal::data(Bytes::from_static(b"x"))];
    let min = c.core(1).config().election_ticks_min;
    for tick in 0..min {
        assert!(
            matches!(
                c.core_mut(1).propose(data()),
                Err(ProposeError::TransferInProgress { to: 3 })
            ),
            "after {tick} ticks"
        );
        c.core_mut(1).tick();
        c.settle();
    }
    assert_eq!(c.core(1).role(), Role::Leader);
    assert!(c.core_mut(1).propose(data()).is_ok());
}

/// A node repairing a damaged log does not vote, so it cannot win an
/// election: a transfer to it is refused.
#[test]
fn leadership_transfer_to_a_repairing_node_is_refused() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose(1, &["a", "b", "c"]);
    c.settle();
    c.restart_damaged(2, 2);
    assert!(c.core(2).status().repair.is_some());
    // A heartbeat, node 2's answer (a reject, flagged repairing).
    c.core_mut(1).tick();
    c.core_mut(1).tick();
    c.round();
    c.round();
    let peer_2 = c
        .core(1)
        .status()
        .peers
        .into_iter()
        .find(|p| p.id == 2)
        .unwrap();
    assert!(peer_2.repairing);
    assert_eq!(
        c.core_mut(1).transfer_leadership(2),
        Err(TransferError::Repairing { to: 2 })
    );
    assert!(c
        .core_mut(1)
        .propose(vec![Proposal::data(Bytes::new())])
        .is_ok());
}

// ---- thesis §4.2.3: removed servers ----

/// Thesis §4.2.3: a server removed from the configuration that never
/// learns it keeps campaigning with ever higher terms; servers that hear
/// from a leader ignore its RequestVotes, so the leader stays, and the
/// removed server is not added back.
#[test]
fn a_removed_node_that_keeps_campaigning_does_not_disrupt_the_cluster() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| cfg.check_quorum = true);
    c.elect(1);
    let term = c.core(1).term();
    c.core_mut(1)
        .propose_membership_change(MembershipChange::Remove { id: 3 })
        .unwrap();
    c.cut.insert(3);
    c.settle();
    c.tick_all(5);
    assert!(!c.core(1).membership().is_joint());
    assert!(!c.core(1).membership().is_voter(3));
    assert!(c.core(3).membership().is_voter(3), "3 never heard of it");
    c.cut.clear();
    let term_3 = c.core(3).term();
    c.tick_all(200);
    assert!(c.core(3).term() > term_3 + 3, "3 kept campaigning");
    assert_eq!(c.core(1).role(), Role::Leader);
    for id in [1, 2] {
        assert_eq!(c.core(id).term(), term, "node {id}");
        let membership = c.core(id).membership();
        assert!(!membership.is_voter(3) && !membership.is_learner(3));
    }
    assert!(c.core(1).status().peers.iter().all(|p| p.id != 3));
}

// ---- InstallLogStart (InstallSnapshot, Figure 13) ----

/// Figure 13 step 6 (etcd's `restore`): a follower whose entry at the
/// leader's log-start boundary has the leader's term keeps the entries
/// after it (it may have acknowledged them), rather than resetting.
#[test]
fn install_log_start_keeps_a_matching_suffix_above_the_boundary() {
    let (mut core, mut disk) = core_with_log(1, &[1, 2, 3], &[], 1);
    core.step(
        2,
        append(2, (0, 0), &[(1, 2), (2, 2), (3, 2), (4, 2), (5, 2)], 1),
    )
    .unwrap();
    drain_and_sync(&mut core, &mut disk);
    assert_eq!(core.persisted_index(), 5);
    assert_eq!(core.commit_index(), 1);
    let start = disk.log_start_at(4).unwrap();
    assert_eq!((start.first_index, start.prev_term), (4, 2));
    core.step(
        2,
        Message::InstallLogStart(InstallLogStart {
            term: 2,
            log_start: start,
        }),
    )
    .unwrap();
    let ready = drain_and_sync(&mut core, &mut disk);
    assert_eq!(ready.log_start_reset, None, "the matching log is kept");
    assert_eq!(ready.truncate_from, None);
    assert_eq!(core.last_index(), 5);
    assert_eq!(core.term_at(5), Some(2));
    assert_eq!(disk.last_index(), 5);
    assert_eq!(disk.term(4), Some(2));
    assert!(core.commit_index() >= 3, "the boundary is committed");
    let matched = ready.messages.iter().find_map(|(_, m)| match m {
        Message::InstallLogStartResponse(r) => Some(r.match_index),
        _ => None,
    });
    assert!(matches!(matched, Some(3..=5)), "{matched:?}");
}
