//! A hand-driven Raft cluster for the scripted core tests (`raft_paper`,
//! `raft_review`): cores over the simulator's `Disk`, messages held in an
//! outbox until a test delivers them, links cut by node.

#![allow(dead_code)] // each test file uses its own part of it

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raftlog::raft::*;
use raftlog::sim::Disk;
use raftlog::types::{Entry, HardState, LogIndex, LogStart, Membership, NodeId, Term};

pub fn config(id: NodeId) -> Config {
    let mut config = Config::new(id);
    config.election_ticks_min = 10;
    config.election_ticks_max = 20;
    config.heartbeat_ticks = 2;
    config.pre_vote = false;
    config.check_quorum = false;
    config
}

pub fn voters(ids: &[NodeId]) -> Membership {
    Membership::with_voters(ids.iter().map(|&id| (id, format!("n{id}"))))
}

pub struct Node {
    pub core: Core,
    pub disk: Disk,
}

/// A hand-driven cluster: messages wait in `outbox` until delivered.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    pub outbox: Vec<(NodeId, NodeId, Message)>,
    /// Sync every write at once (otherwise tests call `sync`).
    pub auto_sync: bool,
    /// Nodes whose messages are dropped (both ways).
    pub cut: BTreeSet<NodeId>,
    /// Every message delivered by `settle` or `round`, in order.
    pub delivered: Vec<(NodeId, NodeId, Message)>,
}

impl Cluster {
    pub fn new(ids: &[NodeId], tweak: impl Fn(&mut Config)) -> Cluster {
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
            delivered: Vec::new(),
        }
    }

    /// A cluster whose nodes start from the given logs (entry terms from
    /// index 1, all persisted, nothing committed) and hard-state terms.
    pub fn with_logs(
        ids: &[NodeId],
        logs: &[(NodeId, &[Term], Term)],
        tweak: impl Fn(&mut Config),
    ) -> Cluster {
        let mut cluster = Cluster::new(ids, &tweak);
        for &(id, terms, hard_term) in logs {
            let (core, disk) = core_with_log_cfg(id, ids, terms, hard_term, &tweak);
            cluster.nodes.insert(id, Node { core, disk });
        }
        cluster
    }

    /// Drains every node and delivers what was queued, once (the answers
    /// stay queued for the next round).
    pub fn round(&mut self) {
        self.drain_all();
        self.deliver();
    }

    pub fn deliver(&mut self) {
        for (from, to, message) in std::mem::take(&mut self.outbox) {
            if self.cut.contains(&from) || self.cut.contains(&to) {
                continue;
            }
            if let Some(node) = self.nodes.get_mut(&to) {
                self.delivered.push((from, to, message.clone()));
                node.core.step(from, message).unwrap();
            }
        }
    }

    /// AppendEntries rejections delivered so far from `from` to `to`.
    pub fn rejections(&self, from: NodeId, to: NodeId) -> usize {
        self.delivered
            .iter()
            .filter(|(f, t, m)| {
                *f == from
                    && *t == to
                    && matches!(
                        m,
                        Message::AppendEntriesResponse(AppendEntriesResponse {
                            outcome: AppendOutcome::Rejected { .. },
                            ..
                        })
                    )
            })
            .count()
    }

    /// The terms of node `id`'s entries on its disk, from index 1.
    pub fn disk_terms(&self, id: NodeId) -> Vec<Term> {
        let disk = &self.nodes[&id].disk;
        (disk.first_index()..=disk.last_index())
            .map(|i| disk.term(i).unwrap())
            .collect()
    }

    pub fn core(&self, id: NodeId) -> &Core {
        &self.nodes[&id].core
    }

    pub fn core_mut(&mut self, id: NodeId) -> &mut Core {
        &mut self.nodes.get_mut(&id).unwrap().core
    }

    /// Applies node `id`'s Ready to its disk and queues its messages.
    pub fn drain(&mut self, id: NodeId) {
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
    pub fn restart_damaged(&mut self, id: NodeId, cut_from: LogIndex) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.disk.crash();
        node.disk.damage(cut_from);
        let config = node.core.config().clone();
        node.core = Core::new(config, node.disk.persisted_state(), id * 31).unwrap();
    }

    pub fn sync(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        if let Some((index, term)) = node.disk.sync() {
            node.core.persisted(index, term);
        }
        self.drain(id);
    }

    pub fn drain_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.drain(id);
        }
    }

    /// Delivers messages until the network is quiet.
    pub fn settle(&mut self) {
        for _ in 0..200 {
            self.drain_all();
            if self.outbox.is_empty() {
                return;
            }
            self.deliver();
        }
        panic!("cluster did not settle");
    }

    /// Ticks only `id` until it starts a campaign, then settles.
    pub fn elect(&mut self, id: NodeId) {
        for _ in 0..100 {
            self.core_mut(id).tick();
            if self.core(id).role() != Role::Follower {
                break;
            }
        }
        self.settle();
    }

    pub fn tick_all(&mut self, ticks: u64) {
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

    /// `settle` with the links of `cut` down for it.
    pub fn settle_except(&mut self, cut: &[NodeId]) {
        let saved = std::mem::replace(&mut self.cut, cut.iter().copied().collect());
        self.settle();
        self.cut = saved;
    }

    /// `tick_all` with the nodes of `cut` cut off (not ticked) for it.
    pub fn tick_except(&mut self, ticks: u64, cut: &[NodeId]) {
        let saved = std::mem::replace(&mut self.cut, cut.iter().copied().collect());
        self.tick_all(ticks);
        self.cut = saved;
    }

    /// Proposes `count` records to node `id`.
    pub fn propose_count(
        &mut self,
        id: NodeId,
        count: usize,
    ) -> std::ops::RangeInclusive<LogIndex> {
        let proposals = (0..count)
            .map(|n| Proposal::data(Bytes::from(format!("p{n}"))))
            .collect();
        self.core_mut(id).propose(proposals).unwrap()
    }

    pub fn propose(
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
pub fn core_with_log(
    id: NodeId,
    members: &[NodeId],
    terms: &[Term],
    hard_term: Term,
) -> (Core, Disk) {
    core_with_log_cfg(id, members, terms, hard_term, |_| {})
}

pub fn core_with_log_cfg(
    id: NodeId,
    members: &[NodeId],
    terms: &[Term],
    hard_term: Term,
    tweak: impl Fn(&mut Config),
) -> (Core, Disk) {
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
    let mut config = config(id);
    tweak(&mut config);
    let core = Core::new(config, disk.persisted_state(), id).unwrap();
    (core, disk)
}

pub fn append(
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

pub fn vote_request(term: Term, last: (LogIndex, Term)) -> Message {
    Message::RequestVote(RequestVote {
        term,
        last_log_index: last.0,
        last_log_term: last.1,
        pre_vote: false,
        leadership_transfer: false,
    })
}

pub fn drain(core: &mut Core, disk: &mut Disk) -> Ready {
    let ready = core.take_ready(disk);
    if let Some(from) = ready.truncate_from {
        disk.truncate_from(from);
    }
    for entry in &ready.entries {
        disk.append(entry.clone());
    }
    ready
}

/// `(index, term)` pairs for `append`: the indexes of `range`, all of `term`.
pub fn run(range: std::ops::RangeInclusive<LogIndex>, term: Term) -> Vec<(LogIndex, Term)> {
    range.map(|index| (index, term)).collect()
}
