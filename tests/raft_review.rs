//! The findings of the consensus review (issue 11), one scripted test each.
//! Every test here failed on the core as it was before the fix it names
//! (or shows, with its doc comment, why the finding cannot happen).
//!
//! The cores are driven by hand: a test decides which message is delivered
//! when, so each test can build the exact interleaving of its finding.

use std::collections::BTreeMap;

use bytes::Bytes;
use raftlog::raft::*;
use raftlog::sim::Disk;
use raftlog::types::{LogIndex, LogStart, NodeId, Term};

mod raft_harness;
use raft_harness::*;

/// A disk holding entries `1..=terms.len()` of the given terms, synced,
/// with `hard_term` as its current term.
fn disk_with_log(members: &[NodeId], terms: &[Term], hard_term: Term) -> Disk {
    core_with_log(1, members, terms, hard_term).1
}

/// Applies a Ready to `disk` as the driving contract says and returns it.
fn apply(core: &mut Core, disk: &mut Disk) -> Ready {
    let ready = core.take_ready(disk);
    if let Some(start) = &ready.log_start_reset {
        disk.reset(start.clone());
    }
    if let Some(from) = ready.truncate_from {
        disk.truncate_from(from);
    }
    disk.append_all(ready.entries.clone());
    if let Some(hard_state) = ready.hard_state {
        disk.hard_state = hard_state;
    }
    if ready.repair_complete {
        disk.repair = None;
    }
    ready
}

fn sync(core: &mut Core, disk: &mut Disk) {
    if let Some((index, term)) = disk.sync() {
        core.persisted(index, term);
    }
}

fn accepted(ready: &Ready, to: NodeId) -> Option<LogIndex> {
    ready.messages.iter().rev().find_map(|(dest, m)| match m {
        Message::AppendEntriesResponse(AppendEntriesResponse {
            outcome: AppendOutcome::Accepted { match_index },
            ..
        }) if *dest == to => Some(*match_index),
        Message::InstallLogStartResponse(r) if *dest == to => Some(r.match_index),
        _ => None,
    })
}

fn granted(ready: &Ready) -> bool {
    ready
        .messages
        .iter()
        .any(|(_, m)| matches!(m, Message::RequestVoteResponse(r) if r.granted && !r.pre_vote))
}

// ---- finding 1: InstallLogStart keeps a matching suffix ----

/// Raft Figure 13 step 6 (and etcd's `restore`): a follower told to start
/// its log at a boundary it already holds with the same term keeps the
/// entries after it. It may have acknowledged them, and the leader may
/// have counted them toward a commit: dropping them (and then voting for a
/// node without them) could lose a committed entry.
#[test]
fn install_log_start_keeps_the_suffix_that_matches_the_leader() {
    let mut disk = disk_with_log(&[1, 2, 3], &[1; 10], 2);
    let mut core = Core::new(config(2), disk.persisted_state(), 2).unwrap();
    // The leader of term 2 sends 11..=30; the follower persists and acks 30.
    core.step(1, append(2, (10, 1), &run(11..=30, 2), 10))
        .unwrap();
    apply(&mut core, &mut disk);
    sync(&mut core, &mut disk);
    let ready = apply(&mut core, &mut disk);
    assert_eq!(accepted(&ready, 1), Some(30));
    // An InstallLogStart at 21 that the leader sent before it saw that ack.
    let start = LogStart {
        first_index: 21,
        prev_term: 2,
        membership: voters(&[1, 2, 3]),
        producers: Default::default(),
    };
    core.step(
        1,
        Message::InstallLogStart(InstallLogStart {
            term: 2,
            log_start: start,
        }),
    )
    .unwrap();
    let ready = apply(&mut core, &mut disk);
    assert_eq!(ready.log_start_reset, None, "a matching log needs no reset");
    assert_eq!(ready.truncate_from, None);
    assert_eq!(core.last_index(), 30, "entries 21..=30 stay");
    assert_eq!(disk.last_index(), 30);
    assert!(core.commit_index() >= 20, "the boundary is committed");
    assert_eq!(accepted(&ready, 1), Some(30));
    assert_eq!(core.status().repair, None);
}

/// The other half of the rule: when the follower's entry at the boundary
/// has another term, its whole log is replaced. That cannot drop a
/// committed entry: the leader's entry at the boundary is committed, and
/// by log matching any committed entry above it would make ours at the
/// boundary equal to the leader's. So no repair is needed, and the node
/// keeps its vote.
#[test]
fn install_log_start_replaces_a_log_that_conflicts_at_the_boundary() {
    let mut terms = vec![1; 15];
    terms.extend([2; 15]);
    let mut disk = disk_with_log(&[1, 2, 3], &terms, 2);
    let mut core = Core::new(config(2), disk.persisted_state(), 2).unwrap();
    let start = LogStart {
        first_index: 21,
        prev_term: 3,
        membership: voters(&[1, 2, 3]),
        producers: Default::default(),
    };
    core.step(
        1,
        Message::InstallLogStart(InstallLogStart {
            term: 3,
            log_start: start.clone(),
        }),
    )
    .unwrap();
    let ready = apply(&mut core, &mut disk);
    assert_eq!(ready.log_start_reset, Some(start));
    assert_eq!(core.last_index(), 20);
    assert_eq!(core.first_index(), 21);
    assert_eq!(core.commit_index(), 20);
    assert_eq!(accepted(&ready, 1), Some(20));
    assert_eq!(core.status().repair, None);
}

// ---- finding 2: the term-probe fence ----

/// A node that lost its term and vote must not fence with answers to an
/// earlier incarnation's probes: voter 2 and voter 3 answered term 4 to
/// probes sent before the node voted for 3 in term 5 and crashed; those
/// answers, delayed, arrive after the restart. Fencing at 4 would let the
/// node vote again in term 5, where it already voted for 3.
#[test]
fn a_node_that_lost_its_vote_ignores_term_reports_from_before_its_restart() {
    let mut disk = disk_with_log(&[1, 2, 3], &[1, 1, 1], 5);
    disk.hard_state.voted_for = Some(3);
    disk.crash();
    disk.lose_hard_state();
    let mut core = Core::new(config(1), disk.persisted_state(), 1).unwrap();
    // The stale answers, in the form the old probes were answered in.
    for from in [2, 3] {
        core.step(
            from,
            Message::RequestVoteResponse(RequestVoteResponse {
                term: 4,
                pre_vote: true,
                granted: false,
            }),
        )
        .unwrap();
    }
    for _ in 0..10 {
        core.tick();
        apply(&mut core, &mut disk);
    }
    // Node 2 campaigns in term 5 with a log like ours.
    core.step(2, vote_request(5, (3, 1))).unwrap();
    let ready = apply(&mut core, &mut disk);
    assert!(
        !granted(&ready),
        "voted in term 5 again on stale reports (term {}, {:?})",
        core.term(),
        core.hard_state()
    );
}

/// Node 1 of `members`, which held entries 1..=3 of term 1 and was in
/// term 5, restarts with its hard state lost and probes for a few ticks;
/// returns it with the nonce each voter was asked with.
fn restart_without_hard_state(members: &[NodeId]) -> (Core, Disk, BTreeMap<NodeId, u64>) {
    let mut disk = disk_with_log(members, &[1, 1, 1], 5);
    disk.crash();
    disk.lose_hard_state();
    let mut core = Core::new(config(1), disk.persisted_state(), 1).unwrap();
    let mut probes = BTreeMap::new();
    for _ in 0..4 {
        core.tick();
        for (to, message) in apply(&mut core, &mut disk).messages {
            if let Message::TermProbe(probe) = message {
                probes.insert(to, probe.nonce);
            }
        }
    }
    (core, disk, probes)
}

fn answer(nonce: u64, term: Term) -> Message {
    Message::TermProbeResponse(TermProbeResponse { term, nonce })
}

/// Answers from this incarnation's probes fence, and a later, lower
/// answer from the same voter (reordered) does not lower the fence.
#[test]
fn a_term_probe_keeps_the_highest_fresh_answer_per_voter() {
    let (mut core, mut disk, probes) = restart_without_hard_state(&[1, 2, 3]);
    assert_eq!(probes.len(), 2, "both other voters are asked");
    core.step(2, answer(probes[&2], 7)).unwrap();
    core.step(2, answer(probes[&2], 6)).unwrap();
    core.step(3, answer(probes[&3].wrapping_add(1), 9)).unwrap();
    apply(&mut core, &mut disk);
    assert!(
        core.status().repair.is_some_and(|r| r.hard_state_lost),
        "a wrong nonce is no answer"
    );
    core.step(3, answer(probes[&3], 2)).unwrap();
    apply(&mut core, &mut disk);
    assert_eq!(core.term(), 7, "the highest fresh answer fences");
    assert_eq!(core.hard_state().voted_for, Some(1));
    core.step(2, vote_request(7, (3, 1))).unwrap();
    assert!(!granted(&apply(&mut core, &mut disk)));
}

/// Fresh answers from a majority of the voters (not counting the node
/// itself, which cannot vouch for the terms it forgot) fence: with five
/// voters, one dead voter no longer keeps the node out for good. A
/// candidate the node voted for in term T won only with a majority whose
/// terms are at least T, and any majority of the others meets it.
#[test]
fn a_majority_of_term_reports_fences_a_node_that_lost_its_vote() {
    let (mut core, mut disk, probes) = restart_without_hard_state(&[1, 2, 3, 4, 5]);
    core.step(2, answer(probes[&2], 5)).unwrap();
    core.step(3, answer(probes[&3], 6)).unwrap();
    apply(&mut core, &mut disk);
    assert!(
        core.status().repair.is_some(),
        "two of five are no majority"
    );
    core.step(4, answer(probes[&4], 5)).unwrap();
    apply(&mut core, &mut disk);
    assert_eq!(core.term(), 6);
    assert_eq!(
        core.status().repair,
        None,
        "only the hard state was lost: whole again"
    );
}

// ---- finding 3: an idle leader refills a damaged follower ----

/// A follower that restarts with a cut log rejects the heartbeat at
/// exactly its old match index; that reject is news (only one below the
/// match index is stale), so even an idle leader refills it.
#[test]
fn an_idle_leader_refills_a_follower_that_lost_acknowledged_entries() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose_count(1, 4);
    c.settle();
    let last = c.core(1).last_index();
    assert_eq!(c.core(1).status().peers[0].match_index, last);
    // Node 2 restarts with its log cut after entry 2; nobody writes.
    c.restart_damaged(2, 3);
    c.tick_except(10, &[]);
    let follower = c.core(2);
    assert_eq!(follower.last_index(), last, "refilled without new writes");
    assert_eq!(follower.status().repair, None);
    assert_eq!(c.core(1).role(), Role::Leader);
}

// ---- finding 4: heartbeats do not overtake the batches they refer to ----

/// Heartbeats travel on the control lane and overtake batches on the
/// replication lane. A heartbeat must refer to what the follower has
/// acknowledged (its match index), not to what was sent: otherwise the
/// follower rejects it and the leader falls back to probing on every
/// heartbeat under load.
#[test]
fn a_heartbeat_that_overtakes_a_batch_is_accepted() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose_count(1, 2);
    c.settle();
    let acked = c.core(1).last_index();
    let probes_before = c.core(1).status().replication_probes;
    // A batch goes out and stays in flight.
    c.propose_count(1, 3);
    c.drain(1);
    let batches = std::mem::take(&mut c.outbox);
    assert!(batches
        .iter()
        .all(|(_, _, m)| matches!(m, Message::AppendEntries(a) if !a.entries.is_empty())));
    // A heartbeat is due and overtakes it.
    for _ in 0..2 {
        c.core_mut(1).tick();
    }
    c.drain(1);
    let heartbeats = std::mem::take(&mut c.outbox);
    let mut answered = 0;
    for (from, to, message) in heartbeats {
        let Message::AppendEntries(heartbeat) = &message else {
            continue;
        };
        assert!(heartbeat.entries.is_empty());
        assert_eq!(heartbeat.prev_log_index, acked, "prev is what was acked");
        c.core_mut(to).step(from, message).unwrap();
        c.drain(to);
        for (from, to, answer) in std::mem::take(&mut c.outbox) {
            assert!(
                matches!(&answer, Message::AppendEntriesResponse(r)
                    if matches!(r.outcome, AppendOutcome::Accepted { .. })),
                "{answer:?}"
            );
            c.core_mut(to).step(from, answer).unwrap();
            answered += 1;
        }
    }
    assert_eq!(answered, 2);
    // Then the batches land, and everything commits without a probe.
    for (from, to, message) in batches {
        c.core_mut(to).step(from, message).unwrap();
    }
    c.settle();
    assert_eq!(c.core(1).commit_index(), c.core(1).last_index());
    assert_eq!(c.core(1).status().replication_probes, probes_before);
}

// ---- finding 5: PreVote alone keeps a live leader ----

/// Thesis §9.6: a voter refuses a pre-vote while it hears from a leader,
/// with or without CheckQuorum. A node that was cut off and rejoins with
/// a log as up to date as the others' must not depose a healthy leader.
fn rejoining_node_with_equal_log_leaves_the_leader(check_quorum: bool) {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| {
        cfg.pre_vote = true;
        cfg.check_quorum = check_quorum;
    });
    c.elect(1);
    let term = c.core(1).term();
    // Node 3 is cut off long enough to time out (its log stays equal:
    // nobody writes meanwhile).
    c.tick_except(60, &[3]);
    for _ in 0..40 {
        c.core_mut(3).tick();
        if c.core(3).role() == Role::PreCandidate {
            break;
        }
    }
    assert_eq!(c.core(3).role(), Role::PreCandidate);
    // It rejoins: its pre-vote requests reach the others.
    c.settle();
    c.tick_except(30, &[]);
    assert_eq!(c.core(1).role(), Role::Leader, "leader deposed");
    assert_eq!(c.core(1).term(), term);
    assert_eq!(c.core(3).leader(), Some(1));
}

#[test]
fn prevote_without_check_quorum_keeps_a_live_leader_when_a_node_rejoins() {
    rejoining_node_with_equal_log_leaves_the_leader(false);
}

#[test]
fn prevote_with_check_quorum_keeps_a_live_leader_when_a_node_rejoins() {
    rejoining_node_with_equal_log_leaves_the_leader(true);
}

// ---- finding 6: transfer state and timers ----

/// Thesis §6.2: CheckQuorum steps a cut-off leader down within two
/// election timeouts of losing its followers; asking it to transfer
/// leadership in between must not restart that clock.
#[test]
fn a_transfer_request_does_not_delay_check_quorum() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| {
        cfg.pre_vote = true;
        cfg.check_quorum = true;
    });
    c.elect(1);
    let election_ticks = c.core(1).config().election_ticks_min;
    // Its followers are cut off from now on.
    let mut ticks = 0;
    while ticks < 2 * election_ticks - 1 {
        c.core_mut(1).tick();
        ticks += 1;
    }
    c.core_mut(1).transfer_leadership(2).unwrap();
    c.core_mut(1).tick();
    ticks += 1;
    assert_eq!(
        c.core(1).role(),
        Role::Follower,
        "still leading {ticks} ticks after losing its quorum"
    );
}

/// Thesis §3.10: a transfer that does not complete within an election
/// timeout is abandoned and proposals are accepted again, exactly then
/// and not before.
#[test]
fn a_transfer_is_abandoned_exactly_one_election_timeout_after_it_started() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| {
        cfg.pre_vote = true;
        cfg.check_quorum = true;
    });
    c.elect(1);
    let election_ticks = c.core(1).config().election_ticks_min;
    c.core_mut(1).transfer_leadership(3).unwrap();
    // The target never hears of it (its link is down), the other follower
    // keeps the leader's quorum.
    for tick in 1..=election_ticks {
        c.tick_except(1, &[3]);
        let refused = c
            .core_mut(1)
            .propose(vec![Proposal::data(Bytes::from_static(b"x"))]);
        if tick < election_ticks {
            assert!(
                matches!(refused, Err(ProposeError::TransferInProgress { to: 3 })),
                "tick {tick}: {refused:?}"
            );
        } else {
            assert!(refused.is_ok(), "tick {tick}: {refused:?}");
        }
    }
    assert_eq!(c.core(1).role(), Role::Leader);
}

// ---- finding 7: values from the wire are range-checked ----

/// A peer that sends a term or index near `u64::MAX` is refused as
/// malformed; the node neither adopts it nor overflows when it later
/// campaigns (`term + 1`).
#[test]
fn terms_and_indexes_near_u64_max_are_refused_as_malformed() {
    let disk = disk_with_log(&[1, 2, 3], &[1, 1], 1);
    let mut core = Core::new(config(1), disk.persisted_state(), 1).unwrap();
    let hostile = [
        append(u64::MAX, (2, 1), &[], 2),
        vote_request(u64::MAX, (2, 1)),
        append(2, (u64::MAX, 1), &[], 2),
        append(2, (u64::MAX - 1, 1), &run(u64::MAX..=u64::MAX, 2), 2),
        append(2, (2, 1), &[], u64::MAX),
        Message::AppendEntriesResponse(AppendEntriesResponse {
            term: 1,
            repairing: false,
            outcome: AppendOutcome::Rejected {
                rejected_prev_index: u64::MAX,
                hint: RejectHint::LogTooShort {
                    last_index: u64::MAX,
                },
            },
        }),
        Message::InstallLogStart(InstallLogStart {
            term: 2,
            log_start: LogStart {
                first_index: u64::MAX,
                prev_term: 1,
                membership: voters(&[1, 2, 3]),
                producers: Default::default(),
            },
        }),
        Message::TimeoutNow(TimeoutNow { term: u64::MAX }),
    ];
    for message in hostile {
        let result = core.step(2, message.clone());
        assert!(
            matches!(result, Err(StepError::OutOfRange { .. })),
            "{message:?} gave {result:?}"
        );
        assert_eq!(core.term(), 1, "{message:?} changed the term");
    }
    let mut disk = disk;
    for _ in 0..100 {
        core.tick();
        apply(&mut core, &mut disk);
    }
    assert!(core.term() > 1, "it still campaigns normally");
}

/// The other side of finding 4: since heartbeats refer to the match index,
/// they no longer reveal a lost batch. A batch that nobody acknowledges
/// for an election timeout is resent (from the match index), even when
/// nothing else is written.
#[test]
fn a_lost_batch_is_resent_after_an_election_timeout_without_new_writes() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    c.propose_count(1, 2);
    c.settle();
    c.propose_count(1, 3);
    c.drain(1);
    // The batch to node 2 is lost; node 3 gets its copy.
    let batches = std::mem::take(&mut c.outbox);
    for (from, to, message) in batches {
        if to == 3 {
            c.core_mut(to).step(from, message).unwrap();
        }
    }
    c.settle();
    let last = c.core(1).last_index();
    assert_eq!(c.core(1).commit_index(), last, "committed with node 3");
    assert!(c.core(2).last_index() < last);
    let election_ticks = c.core(1).config().election_ticks_min;
    c.tick_except(election_ticks + 1, &[]);
    assert_eq!(c.core(2).last_index(), last, "resent without new writes");
    assert_eq!(c.core(1).status().replication_probes, 1);
}

/// Thesis §3.10: a TimeoutNow cannot be recalled. One that was already on
/// its way when the transfer timed out still makes the target campaign;
/// the thesis accepts this ("at worst an extra election") and so do etcd
/// and raft-rs. What must hold: the campaign is an ordinary election, a
/// leader is elected again, and every entry the old leader committed after
/// giving up the transfer survives it.
#[test]
fn a_timeout_now_delivered_after_the_transfer_timed_out_loses_nothing() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| {
        cfg.pre_vote = true;
        cfg.check_quorum = true;
    });
    c.elect(1);
    c.core_mut(1).transfer_leadership(3).unwrap();
    c.drain(1);
    // The TimeoutNow to node 3 is held back in the network.
    let mut delayed = Vec::new();
    for (from, to, message) in std::mem::take(&mut c.outbox) {
        if matches!(message, Message::TimeoutNow(_)) {
            delayed.push((from, to, message));
        } else {
            c.core_mut(to).step(from, message).unwrap();
        }
    }
    assert_eq!(delayed.len(), 1, "node 3 was caught up: TimeoutNow at once");
    let election_ticks = c.core(1).config().election_ticks_min;
    // Node 3 is cut off until the transfer times out.
    c.tick_except(election_ticks, &[3]);
    c.propose_count(1, 3);
    c.settle_except(&[3]);
    let committed = c.core(1).commit_index();
    assert_eq!(committed, c.core(1).last_index());
    // Node 3 returns, hears from the leader, then the stale TimeoutNow lands.
    c.tick_except(2, &[]);
    for (from, to, message) in delayed {
        c.core_mut(to).step(from, message).unwrap();
    }
    c.settle();
    // Node 3 had not caught up again (its lost batch is resent only after
    // an election timeout): its campaign fails, but its term deposed the
    // leader. That is the extra election; the cluster elects again.
    c.tick_except(4 * election_ticks, &[]);
    let leader = (1..=3)
        .find(|&id| c.core(id).role() == Role::Leader)
        .expect("a leader");
    assert!(c.core(leader).commit_index() >= committed);
    for id in 1..=3 {
        for index in 1..=committed {
            assert_eq!(
                c.core(id).term_at(index),
                c.core(leader).term_at(index),
                "node {id} index {index}"
            );
        }
    }
}

// ---- found by the simulator: a stale-leader reply taken as a reject ----

/// A node that hears AppendEntries from a leader of an older term answers
/// with its own term and `rejected_prev_index: 0`, so the stale leader
/// steps down. Held in the network, that answer can reach the same node
/// after it won the answer's term: then it reads as a reject at index 0 in
/// its own term. Index 0 always matches, so no real reject names it; taken
/// as one, it set the next index to 0 and the match index to `0 - 1`
/// (a panic with overflow checks, `u64::MAX` without: the follower counted
/// as holding everything). Found by the simulator with held-back messages
/// (seed 13641 of the term-fence mutation run).
#[test]
fn a_reply_to_a_stale_leader_that_arrives_once_it_leads_that_term_is_ignored() {
    let (mut leader, mut disk) = core_with_log(1, &[1, 2, 3], &[], 0);
    for _ in 0..100 {
        leader.tick();
        if leader.role() == Role::Candidate {
            break;
        }
    }
    let term = leader.term();
    apply(&mut leader, &mut disk);
    let grant = Message::RequestVoteResponse(RequestVoteResponse {
        term,
        pre_vote: false,
        granted: true,
    });
    leader.step(2, grant).unwrap();
    assert_eq!(leader.role(), Role::Leader);
    // Node 3's answer to our AppendEntries of an older term, sent when it
    // was already in `term`.
    let stale_reply = Message::AppendEntriesResponse(AppendEntriesResponse {
        term,
        repairing: false,
        outcome: AppendOutcome::Rejected {
            rejected_prev_index: 0,
            hint: RejectHint::LogTooShort { last_index: 0 },
        },
    });
    leader.step(3, stale_reply).unwrap();
    let ready = apply(&mut leader, &mut disk);
    sync(&mut leader, &mut disk);
    // Node 3 is replicated to as if the reply had never come: from index 1.
    let to_3: Vec<&AppendEntries> = ready
        .messages
        .iter()
        .filter_map(|(to, m)| match m {
            Message::AppendEntries(a) if *to == 3 => Some(a),
            _ => None,
        })
        .collect();
    assert!(!to_3.is_empty(), "node 3 gets AppendEntries");
    assert!(to_3.iter().all(|a| a.prev_log_index == 0));
    leader
        .step(
            3,
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term,
                repairing: false,
                outcome: AppendOutcome::Accepted { match_index: 1 },
            }),
        )
        .unwrap();
    assert_eq!(leader.commit_index(), 1);
}

// ---- issue 12: a transfer flag only a voter may use ----

/// A RequestVote flagged as a leadership transfer overrides the "a leader
/// is live" rule, because the current leader sent the target a TimeoutNow.
/// The leader only transfers to voters, so the flag from anyone else (a
/// learner, or a certificate holder outside the configuration that got
/// past the transport) is a campaign like any other and is ignored while
/// the leader is live; from a voter it still works.
#[test]
fn a_transfer_flag_from_a_non_voter_does_not_depose_a_live_leader() {
    let mut c = Cluster::new(&[1, 2, 3], |cfg| {
        cfg.pre_vote = true;
        cfg.check_quorum = true;
    });
    c.elect(1);
    let term = c.core(1).term();
    let last = (c.core(1).last_index(), term);
    let flagged = Message::RequestVote(RequestVote {
        term: term + 5,
        last_log_index: last.0 + 100,
        last_log_term: term,
        pre_vote: false,
        leadership_transfer: true,
    });
    for id in [1, 2, 3] {
        c.core_mut(id).step(9, flagged.clone()).unwrap();
    }
    c.settle();
    assert_eq!(
        c.core(1).role(),
        Role::Leader,
        "leader deposed by a stranger"
    );
    for id in [1, 2, 3] {
        assert_eq!(
            c.core(id).term(),
            term,
            "node {id} took the stranger's term"
        );
    }
    // The same request from a voter is a transfer and is honoured.
    c.core_mut(2).step(3, flagged).unwrap();
    assert_eq!(c.core(2).term(), term + 5);
}

// ---- the cost of finding 4's fix, and its remedy ----

/// Since heartbeats and commit notices refer to a follower's match index
/// (finding 4), a follower whose acknowledgement reaches the leader after
/// the commit advanced could not use the notice sent then (it only lets it
/// commit up to its old match index) and waited for the next heartbeat to
/// learn the commit: consumers reading that follower lagged, and a
/// publish-then-consume in CI read one record short. The leader now tells
/// it as soon as its acknowledgement shows it can use the commit.
#[test]
fn a_follower_whose_ack_lands_after_the_commit_learns_it_without_a_heartbeat() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    c.elect(1);
    let index = *c.propose_count(1, 1).end();
    c.drain(1);
    c.deliver();
    c.drain(2);
    c.drain(3);
    let acks = std::mem::take(&mut c.outbox);
    let (late, early): (Vec<_>, Vec<_>) = acks.into_iter().partition(|(from, _, _)| *from == 3);
    for (from, to, message) in early {
        assert_eq!(to, 1);
        c.core_mut(1).step(from, message).unwrap();
    }
    assert_eq!(c.core(1).commit_index(), index, "node 2's ack commits");
    c.drain(1);
    c.deliver();
    c.drain_all();
    c.outbox.clear();
    assert!(c.core(3).commit_index() < index, "node 3 cannot know yet");
    // Node 3's ack lands; no tick passes.
    for (from, to, message) in late {
        c.core_mut(to).step(from, message).unwrap();
    }
    c.drain(1);
    c.deliver();
    assert_eq!(c.core(3).commit_index(), index, "told at once");
}
