//! The Raft paper, one rule per test, driving a few cores by hand (in the
//! spirit of etcd raft's raft_paper_test). Section numbers refer to
//! "In Search of an Understandable Consensus Algorithm" (extended version)
//! and to Ongaro's thesis for PreVote, CheckQuorum and transfers.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raftlog::raft::*;
use raftlog::sim::Disk;
use raftlog::types::{Entry, EntryKind, HardState, LogIndex, LogStart, Membership, NodeId, Term};

fn config(id: NodeId) -> Config {
    let mut config = Config::new(id);
    config.election_ticks_min = 10;
    config.election_ticks_max = 20;
    config.heartbeat_ticks = 2;
    config.pre_vote = false;
    config.check_quorum = false;
    config
}

fn voters(ids: &[NodeId]) -> Membership {
    Membership::with_voters(ids.iter().map(|&id| (id, format!("n{id}"))))
}

struct Node {
    core: Core,
    disk: Disk,
}

/// A hand-driven cluster: messages wait in `outbox` until delivered.
struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    outbox: Vec<(NodeId, NodeId, Message)>,
    /// Sync every write at once (otherwise tests call `sync`).
    auto_sync: bool,
    /// Nodes whose messages are dropped (both ways).
    cut: BTreeSet<NodeId>,
}

impl Cluster {
    fn new(ids: &[NodeId], tweak: impl Fn(&mut Config)) -> Cluster {
        let membership = voters(ids);
        let mut nodes = BTreeMap::new();
        for &id in ids {
            let mut config = config(id);
            tweak(&mut config);
            let disk = Disk::new(LogStart::initial(membership.clone()));
            let core = Core::new(config, disk.persisted_state(), id * 7919).unwrap();
            nodes.insert(id, Node { core, disk });
        }
        Cluster {
            nodes,
            outbox: Vec::new(),
            auto_sync: true,
            cut: BTreeSet::new(),
        }
    }

    fn core(&self, id: NodeId) -> &Core {
        &self.nodes[&id].core
    }

    fn core_mut(&mut self, id: NodeId) -> &mut Core {
        &mut self.nodes.get_mut(&id).unwrap().core
    }

    /// Applies node `id`'s Ready to its disk and queues its messages.
    fn drain(&mut self, id: NodeId) {
        let auto_sync = self.auto_sync;
        let node = self.nodes.get_mut(&id).unwrap();
        for _ in 0..3 {
            let ready = node.core.take_ready(&node.disk);
            if let Some(start) = ready.log_start_reset {
                node.disk.reset(start);
            }
            if let Some(from) = ready.truncate_from {
                node.disk.truncate_from(from);
            }
            for entry in ready.entries {
                node.disk.append(entry);
            }
            if let Some(hs) = ready.hard_state {
                node.disk.hard_state = hs;
            }
            if ready.repair_complete {
                node.disk.repair = None;
            }
            for (to, message) in ready.messages {
                self.outbox.push((id, to, message));
            }
            if auto_sync {
                if let Some((index, term)) = node.disk.sync() {
                    node.core.persisted(index, term);
                }
            }
        }
    }

    /// Restarts node `id` as if its storage found damage from `cut_from` on.
    fn restart_damaged(&mut self, id: NodeId, cut_from: LogIndex) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.disk.crash();
        node.disk.damage(cut_from);
        let config = node.core.config().clone();
        node.core = Core::new(config, node.disk.persisted_state(), id * 31).unwrap();
    }

    fn sync(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        if let Some((index, term)) = node.disk.sync() {
            node.core.persisted(index, term);
        }
        self.drain(id);
    }

    fn drain_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.drain(id);
        }
    }

    /// Delivers messages until the network is quiet.
    fn settle(&mut self) {
        for _ in 0..200 {
            self.drain_all();
            if self.outbox.is_empty() {
                return;
            }
            for (from, to, message) in std::mem::take(&mut self.outbox) {
                if self.cut.contains(&from) || self.cut.contains(&to) {
                    continue;
                }
                if let Some(node) = self.nodes.get_mut(&to) {
                    node.core.step(from, message).unwrap();
                }
            }
        }
        panic!("cluster did not settle");
    }

    /// Ticks only `id` until it starts a campaign, then settles.
    fn elect(&mut self, id: NodeId) {
        for _ in 0..100 {
            self.core_mut(id).tick();
            if self.core(id).role() != Role::Follower {
                break;
            }
        }
        self.settle();
    }

    fn tick_all(&mut self, ticks: u64) {
        for _ in 0..ticks {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                if !self.cut.contains(&id) {
                    self.core_mut(id).tick();
                }
            }
            self.settle();
        }
    }

    fn propose(
        &mut self,
        id: NodeId,
        payloads: &[&'static str],
    ) -> std::ops::RangeInclusive<LogIndex> {
        let proposals = payloads
            .iter()
            .map(|p| Proposal::data(Bytes::from_static(p.as_bytes())))
            .collect();
        self.core_mut(id).propose(proposals).unwrap()
    }
}

/// A single core fed messages by hand, with a log built from terms.
fn core_with_log(id: NodeId, members: &[NodeId], terms: &[Term], hard_term: Term) -> (Core, Disk) {
    let mut disk = Disk::new(LogStart::initial(voters(members)));
    for (offset, &term) in terms.iter().enumerate() {
        disk.append(Entry::data(
            offset as u64 + 1,
            term,
            Bytes::from(format!("e{offset}")),
        ));
    }
    disk.sync();
    disk.hard_state = HardState {
        term: hard_term,
        voted_for: None,
    };
    let core = Core::new(config(id), disk.persisted_state(), id).unwrap();
    (core, disk)
}

fn append(
    term: Term,
    prev: (LogIndex, Term),
    entries: &[(LogIndex, Term)],
    commit: LogIndex,
) -> Message {
    Message::AppendEntries(AppendEntries {
        term,
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries: entries
            .iter()
            .map(|&(i, t)| Entry::data(i, t, Bytes::from(format!("x{i}.{t}"))))
            .collect(),
        leader_commit: commit,
    })
}

fn vote_request(term: Term, last: (LogIndex, Term)) -> Message {
    Message::RequestVote(RequestVote {
        term,
        last_log_index: last.0,
        last_log_term: last.1,
        pre_vote: false,
        leadership_transfer: false,
    })
}

fn drain(core: &mut Core, disk: &mut Disk) -> Ready {
    let ready = core.take_ready(disk);
    if let Some(from) = ready.truncate_from {
        disk.truncate_from(from);
    }
    for entry in &ready.entries {
        disk.append(entry.clone());
    }
    ready
}

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
#[test]
fn prevote_keeps_a_partitioned_node_from_raising_its_term() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| cfg.pre_vote = true);
    c.elect(1);
    let term = c.core(1).term();
    c.cut.insert(3);
    c.tick_all(100);
    assert_eq!(c.core(3).term(), term, "isolated node kept its term");
    c.cut.clear();
    c.tick_all(10);
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(1).term(), term);
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
