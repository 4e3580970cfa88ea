//! The consensus core: one Raft node as a deterministic state machine.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use bytes::Bytes;

use super::config::{Config, ConfigError};
use super::log::{entry_bytes, RaftLog};
use super::message::*;
use super::progress::{Progress, ReplicationState};
use super::rng::SplitMix64;
use crate::types::{
    Entry, EntryKind, HardState, LogIndex, LogStart, Membership, NodeId, ProducerSeq, Term,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Role, term and known leader, reported in a [`Ready`] when any changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
}

/// One record a client wants appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub producer: Option<ProducerSeq>,
    pub payload: Bytes,
}

impl Proposal {
    pub fn data(payload: Bytes) -> Proposal {
        Proposal {
            producer: None,
            payload,
        }
    }
}

/// A membership change; one at a time, voter changes through joint consensus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    AddLearner {
        id: NodeId,
        addr: String,
    },
    /// A learner becomes a voter (add it as a learner first, so it catches up).
    PromoteLearner {
        id: NodeId,
    },
    /// Removes a voter or a learner (the leader itself included).
    Remove {
        id: NodeId,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("not the leader; the leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
    #[error("a leadership transfer to {to} is in progress")]
    TransferInProgress { to: NodeId },
    #[error("{unpersisted_bytes} bytes wait for the local sync, the limit is {limit_bytes}")]
    Backpressure {
        unpersisted_bytes: u64,
        limit_bytes: u64,
    },
    #[error("empty proposal batch")]
    EmptyBatch,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MembershipChangeError {
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error("membership change at index {index} is not committed yet")]
    ChangeInProgress { index: LogIndex },
    #[error("node {id} is already a member")]
    AlreadyMember { id: NodeId },
    #[error("node {id} is not a learner")]
    NotLearner { id: NodeId },
    #[error("node {id} is not a member")]
    NotMember { id: NodeId },
    #[error("removing node {id} would leave no voter")]
    LastVoter { id: NodeId },
    #[error("node id 0 is reserved")]
    ZeroNodeId,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransferError {
    #[error("not the leader; the leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
    #[error("node {to} is not a voter")]
    NotVoter { to: NodeId },
    #[error("node {to} is already the leader")]
    AlreadyLeader { to: NodeId },
    #[error("node {to} is repairing a damaged log and cannot lead")]
    Repairing { to: NodeId },
}

/// A message the core refused as malformed (the peer has a bug or lies).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    #[error("message from node {from} claims to come from this node")]
    FromSelf { from: NodeId },
    #[error("node {from} sent entries that do not continue index {prev_log_index} consecutively with non-decreasing terms")]
    BadEntries {
        from: NodeId,
        prev_log_index: LogIndex,
    },
    #[error("node {from} acknowledged index {match_index}, beyond our last index {last_index}")]
    AckBeyondLog {
        from: NodeId,
        match_index: LogIndex,
        last_index: LogIndex,
    },
    #[error("node {from} sent a log start with first index 0")]
    BadLogStart { from: NodeId },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("term runs are not increasing in index and term at run {run}")]
    BadRuns { run: usize },
    #[error("term runs do not cover the log {first_index}..={last_index}")]
    RunsDoNotCoverLog {
        first_index: LogIndex,
        last_index: LogIndex,
    },
    #[error("log start first index is 0")]
    ZeroFirstIndex,
    #[error("config entry at index {index} is outside the log {first_index}..={last_index}")]
    ConfigOutsideLog {
        index: LogIndex,
        first_index: LogIndex,
        last_index: LogIndex,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompactError {
    #[error(
        "cannot drop entries up to {index}: only up to {commit_index} are committed and persisted"
    )]
    NotCommitted {
        index: LogIndex,
        commit_index: LogIndex,
    },
    #[error("log start's previous term {given} does not match term {actual:?} at index {index}")]
    TermMismatch {
        index: LogIndex,
        given: Term,
        actual: Option<Term>,
    },
}

/// Why the core could not read entries to replicate.
#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    #[error("entry {index} was dropped by retention")]
    Compacted { index: LogIndex },
    #[error("reading entries {low}..={high}: {source}")]
    Storage {
        low: LogIndex,
        high: LogIndex,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// How the core reads entries it no longer holds (those already persisted)
/// to replicate them. Implemented by the storage engine and the simulator's
/// disk. Must return entries `low..` consecutively, at least one if `low <=
/// high`, stopping after `high` or once `bytes_max` is reached.
pub trait LogReader {
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, LogReadError>;
}

/// Everything the core wants done, drained by [`Core::take_ready`].
/// Apply in this order: `log_start_reset`, `truncate_from`, `entries`
/// (write; sync whenever, then call [`Core::persisted`]), make
/// `hard_state` and `log_start_reset` durable, and only then send
/// `messages`. `commit_index`, `soft_state` and `membership` are news.
#[derive(Debug, Default)]
pub struct Ready {
    /// Discard the whole log and start it at this log start (durably,
    /// before sending this Ready's messages).
    pub log_start_reset: Option<LogStart>,
    /// Delete stored entries at and above this index before appending.
    pub truncate_from: Option<LogIndex>,
    /// Entries to append, consecutive, continuing the log.
    pub entries: Vec<Entry>,
    /// Term and vote to persist durably BEFORE sending `messages`.
    pub hard_state: Option<HardState>,
    /// Messages to send, in order per destination.
    pub messages: Vec<(NodeId, Message)>,
    /// The commit index advanced to this (it refers to the log after this
    /// Ready's appends).
    pub commit_index: Option<LogIndex>,
    pub soft_state: Option<SoftState>,
    /// The membership in force changed (a config entry was appended or
    /// truncated, or a log start reset brought one).
    pub membership: Option<Membership>,
    /// Replication reads that failed (retried at the next heartbeat).
    pub read_errors: Vec<(NodeId, LogReadError)>,
    /// The repair this core started with is over: the node votes again.
    /// Remove the durable repair marker after this Ready's `hard_state`.
    pub repair_complete: bool,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.log_start_reset.is_none()
            && self.truncate_from.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.messages.is_empty()
            && self.commit_index.is_none()
            && self.soft_state.is_none()
            && self.membership.is_none()
            && self.read_errors.is_empty()
            && !self.repair_complete
    }
}

/// A peer as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    /// Heard from within the last election timeout (`election_ticks_min`).
    pub recently_heard: bool,
    /// Its last answer said it is repairing a damaged log.
    pub repairing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub soft_state: SoftState,
    pub commit_index: LogIndex,
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub persisted_index: LogIndex,
    /// Filled on the leader only.
    pub peers: Vec<PeerStatus>,
    /// Set while the node repairs a damaged log and does not vote.
    pub repair: Option<Repair>,
}

/// A node whose storage found damage (a lost or corrupt range of its log,
/// or its term and vote) and cut its log before it. Having perhaps
/// acknowledged entries it no longer holds, it must not vote or stand for
/// election until a leader has refilled its log: otherwise its vote could
/// elect a leader that lacks a committed entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repair {
    /// The node held entries up to here before the damage; it votes again
    /// once its log durably matches a leader's up to this index.
    pub until_index: LogIndex,
    /// Its term and vote were lost as well: it cannot know in which terms it
    /// voted. It asks every voter for its current term (a pre-vote no one
    /// grants); a candidate it voted for keeps a term at least that high, so
    /// once every voter has answered, no term above the highest answer can
    /// hold a vote of ours. It records a vote (for itself) in that term and
    /// counts it as the term it last acknowledged entries in.
    pub hard_state_lost: bool,
}

/// What the core is given at start, from storage.
#[derive(Clone, Debug)]
pub struct PersistedState {
    pub hard_state: HardState,
    pub log_start: LogStart,
    pub last_index: LogIndex,
    /// `(first index of the run, term)` for each run of equal terms in
    /// `log_start.first_index..=last_index`, in order.
    pub term_runs: Vec<(LogIndex, Term)>,
    /// Every config entry stored at or above the log start, in index order
    /// (the latest one is the membership in force).
    pub config_entries: Vec<(LogIndex, Membership)>,
    /// Storage found damage and cut the log (see [`Repair`]).
    pub repair: Option<Repair>,
}

/// One Raft node, sans IO.
///
/// # Driving contract
///
/// The runtime owns storage, network and the clock, and calls, one at a time:
/// - [`Core::tick`] every tick interval (10 ms by default);
/// - [`Core::step`] for each message from a peer;
/// - [`Core::propose`], [`Core::propose_membership_change`],
///   [`Core::transfer_leadership`] for client and admin requests;
/// - [`Core::persisted`] when a storage sync completes, with the last index
///   it covers and that entry's term (stale reports are ignored);
/// - [`Core::log_compacted`] after retention dropped entries below a new
///   log start (only committed, persisted entries may be dropped).
///
/// After any of these calls (or a batch of them), it calls
/// [`Core::take_ready`] with a [`LogReader`] over its storage and applies
/// the [`Ready`] in the order documented there. The essential rules:
/// `hard_state` and `log_start_reset` are durable before any of the Ready's
/// messages leave (a vote is persisted before it is sent); entries are
/// written in order, and the core counts them (for its own vote toward a
/// commit, and for acknowledgements to a leader) only once `persisted`
/// reports them. Entries handed out in a Ready must be readable through the
/// `LogReader` once they are reported persisted. The core never blocks,
/// reads no clock and draws randomness only from its seeded generator.
pub struct Core {
    config: Config,
    rng: SplitMix64,
    hard_state: HardState,
    hard_state_emitted: HardState,
    role: Role,
    leader: Option<NodeId>,
    soft_state_emitted: SoftState,
    log: RaftLog,
    /// Entries up to this index were handed to the runtime (invariant: <= last_index).
    handed_out_index: LogIndex,
    commit_index: LogIndex,
    commit_emitted: LogIndex,
    membership_emitted: Membership,
    pending_truncate: Option<LogIndex>,
    pending_reset: Option<LogStart>,
    messages: Vec<(NodeId, Message)>,
    tick_count: u64,
    election_elapsed: u64,
    randomized_election_ticks: u64,
    heartbeat_elapsed: u64,
    /// Votes (or pre-votes) received in the current campaign.
    votes: BTreeMap<NodeId, bool>,
    /// Leader only: one entry per other member.
    progress: BTreeMap<NodeId, Progress>,
    heartbeat_due: bool,
    commit_broadcast_due: bool,
    /// Leader only: a transfer target and the ticks since it started.
    transfer: Option<(NodeId, u64)>,
    /// Follower only: this term's leader's entries match ours up to here.
    leader_match_ceiling: LogIndex,
    /// Follower only: the highest index acknowledged to the leader this term.
    acked_index: LogIndex,
    /// While set, the node neither votes nor campaigns.
    repair: Option<Repair>,
    /// Our term when the core started: every acknowledgement we sent before
    /// the damage was sent in this term or an earlier one.
    start_term: Term,
    /// Hard state lost: the current term each voter reported to our probes.
    term_reports: BTreeMap<NodeId, Term>,
    /// The repair lost no entries (only the hard state): once the lost
    /// votes are fenced, the log is whole as it is.
    repair_log_intact: bool,
    /// The repair ended and the runtime has not been told yet.
    repair_complete_due: bool,
}

fn majority(voters: &BTreeSet<NodeId>, has: impl Fn(NodeId) -> bool) -> bool {
    let count = voters.iter().filter(|&&id| has(id)).count();
    count * 2 > voters.len()
}

/// True if `has` holds for a majority of every voter set of `membership`.
fn quorum(membership: &Membership, has: impl Fn(NodeId) -> bool) -> bool {
    majority(&membership.voters, &has)
        && (membership.voters_outgoing.is_empty() || majority(&membership.voters_outgoing, &has))
}

/// The highest index a majority of `voters` has (0 for an empty set).
fn majority_index(voters: &BTreeSet<NodeId>, index_of: &impl Fn(NodeId) -> LogIndex) -> LogIndex {
    if voters.is_empty() {
        return LogIndex::MAX;
    }
    let mut indexes: Vec<LogIndex> = voters.iter().map(|&id| index_of(id)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes.get(voters.len() / 2).copied().unwrap_or(0)
}

impl Core {
    /// Builds a core from what storage holds; `seed` drives its timeouts.
    pub fn new(config: Config, persisted: PersistedState, seed: u64) -> Result<Core, InitError> {
        config.validate()?;
        let PersistedState {
            hard_state,
            log_start,
            last_index,
            term_runs,
            config_entries,
            repair,
        } = persisted;
        let first_index = log_start.first_index;
        if first_index == 0 {
            return Err(InitError::ZeroFirstIndex);
        }
        for (run, pair) in term_runs.windows(2).enumerate() {
            if let [a, b] = pair {
                if a.0 >= b.0 || a.1 >= b.1 {
                    return Err(InitError::BadRuns { run: run + 1 });
                }
            }
        }
        let covers = if last_index + 1 == first_index {
            term_runs.is_empty()
        } else {
            last_index >= first_index
                && term_runs.first().map(|r| r.0) == Some(first_index)
                && term_runs.last().is_some_and(|r| r.0 <= last_index)
        };
        if !covers {
            return Err(InitError::RunsDoNotCoverLog {
                first_index,
                last_index,
            });
        }
        for (index, _) in &config_entries {
            if *index < first_index || *index > last_index {
                return Err(InitError::ConfigOutsideLog {
                    index: *index,
                    first_index,
                    last_index,
                });
            }
        }
        let log = RaftLog::new(log_start, last_index, term_runs, config_entries);
        let commit_index = first_index - 1;
        let soft_state = SoftState {
            role: Role::Follower,
            term: hard_state.term,
            leader: None,
        };
        let mut core = Core {
            rng: SplitMix64::new(seed),
            hard_state,
            hard_state_emitted: hard_state,
            role: Role::Follower,
            leader: None,
            soft_state_emitted: soft_state,
            membership_emitted: log.membership().clone(),
            handed_out_index: last_index,
            log,
            commit_index,
            commit_emitted: commit_index,
            pending_truncate: None,
            pending_reset: None,
            messages: Vec::new(),
            tick_count: 0,
            election_elapsed: 0,
            randomized_election_ticks: 0,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            heartbeat_due: false,
            commit_broadcast_due: false,
            transfer: None,
            leader_match_ceiling: 0,
            acked_index: 0,
            repair,
            repair_complete_due: false,
            start_term: hard_state.term,
            term_reports: BTreeMap::new(),
            repair_log_intact: repair.is_some_and(|r| last_index >= r.until_index),
            config,
        };
        core.reset_election_timer();
        Ok(core)
    }

    /// A brand-new node's state: empty log starting with `membership`.
    pub fn fresh_state(membership: Membership) -> PersistedState {
        PersistedState {
            hard_state: HardState::default(),
            log_start: LogStart::initial(membership),
            last_index: 0,
            term_runs: Vec::new(),
            config_entries: Vec::new(),
            repair: None,
        }
    }

    // ---- queries ----

    pub fn id(&self) -> NodeId {
        self.config.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.hard_state.term
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index
    }
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }
    pub fn persisted_index(&self) -> LogIndex {
        self.log.persisted_index
    }
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }
    pub fn membership(&self) -> &Membership {
        self.log.membership()
    }
    pub fn log_start(&self) -> &LogStart {
        &self.log.start
    }
    /// The terms of the log as runs `(first index, term)`.
    pub fn term_runs(&self) -> &[(LogIndex, Term)] {
        self.log.runs()
    }
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            term: self.hard_state.term,
            leader: self.leader,
        }
    }
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn status(&self) -> Status {
        let peers = self
            .progress
            .iter()
            .map(|(&id, pr)| PeerStatus {
                id,
                match_index: pr.match_index,
                next_index: pr.next_index,
                recently_heard: self.tick_count.saturating_sub(pr.last_heard_tick)
                    <= self.config.election_ticks_min,
                repairing: pr.repairing,
            })
            .collect();
        Status {
            id: self.config.id,
            soft_state: self.soft_state(),
            commit_index: self.commit_index,
            first_index: self.log.first_index(),
            last_index: self.log.last_index,
            persisted_index: self.log.persisted_index,
            peers,
            repair: self.repair,
        }
    }

    /// True if `take_ready` would return something (ignoring replication
    /// that only a `LogReader` can tell).
    pub fn has_ready(&self) -> bool {
        self.pending_reset.is_some()
            || self.pending_truncate.is_some()
            || self.handed_out_index < self.log.last_index
            || self.hard_state != self.hard_state_emitted
            || !self.messages.is_empty()
            || self.commit_index != self.commit_emitted
            || self.soft_state() != self.soft_state_emitted
            || (self.role == Role::Leader && (self.heartbeat_due || self.commit_broadcast_due))
            || self.log.membership() != &self.membership_emitted
            || self.repair_complete_due
    }

    // ---- inputs ----

    pub fn tick(&mut self) {
        self.tick_count += 1;
        self.election_elapsed += 1;
        if self.repair.is_some_and(|r| r.hard_state_lost)
            && self.tick_count % self.config.heartbeat_ticks == 0
        {
            self.probe_terms();
        }
        if self.role == Role::Leader {
            self.tick_leader();
            return;
        }
        if self.election_elapsed >= self.randomized_election_ticks && self.may_campaign() {
            self.campaign(false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.heartbeat_due = true;
        }
        if let Some((_, ticks)) = self.transfer.as_mut() {
            *ticks += 1;
            // A transfer that has not finished within an election timeout
            // failed; accept proposals again.
            if *ticks >= self.config.election_ticks_min {
                self.transfer = None;
            }
        }
        if self.election_elapsed >= self.config.election_ticks_min {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                let id = self.config.id;
                let progress = &self.progress;
                let active = quorum(self.log.membership(), |peer| {
                    peer == id || progress.get(&peer).is_some_and(|pr| pr.recent_active)
                });
                for pr in self.progress.values_mut() {
                    pr.recent_active = false;
                }
                if !active {
                    let term = self.term();
                    self.become_follower(term, None);
                }
            }
        }
    }

    /// Handles one message from peer `from`.
    pub fn step(&mut self, from: NodeId, message: Message) -> Result<(), StepError> {
        if from == self.config.id {
            return Err(StepError::FromSelf { from });
        }
        if self.repair.is_some_and(|r| r.hard_state_lost) {
            match &message {
                Message::RequestVoteResponse(response) if response.pre_vote => {
                    self.term_reports.insert(from, response.term);
                }
                // Without our term we cannot tell a stale leader from the
                // current one: a stale one could make us overwrite entries
                // we helped commit. Nothing from a leader counts until the
                // voters' terms fence the ones we may have been in.
                Message::AppendEntries(_)
                | Message::InstallLogStart(_)
                | Message::TimeoutNow(_) => {
                    return Ok(());
                }
                _ => {}
            }
        }
        let term = message.term();
        if term > self.term() {
            if let Message::RequestVote(request) = &message {
                let in_lease = self.config.check_quorum
                    && self.leader.is_some()
                    && self.election_elapsed < self.config.election_ticks_min;
                if in_lease && !request.leadership_transfer {
                    // A live leader exists: a campaigner must not disrupt it.
                    return Ok(());
                }
            }
            let pre_vote_request = matches!(&message, Message::RequestVote(r) if r.pre_vote);
            let pre_vote_granted =
                matches!(&message, Message::RequestVoteResponse(r) if r.pre_vote && r.granted);
            if !pre_vote_request && !pre_vote_granted {
                let leader = match message {
                    Message::AppendEntries(_)
                    | Message::InstallLogStart(_)
                    | Message::TimeoutNow(_) => Some(from),
                    _ => None,
                };
                self.become_follower(term, leader);
            }
        } else if term < self.term() {
            match &message {
                Message::AppendEntries(_) | Message::InstallLogStart(_)
                    if self.config.check_quorum || self.config.pre_vote =>
                {
                    // A stale leader (cut off while we moved on): tell it our
                    // term so it steps down; otherwise PreVote/CheckQuorum
                    // could leave it unaware forever.
                    self.send(
                        from,
                        Message::AppendEntriesResponse(AppendEntriesResponse {
                            term: self.term(),
                            repairing: self.repair.is_some(),
                            outcome: AppendOutcome::Rejected {
                                rejected_prev_index: 0,
                                hint: RejectHint::LogTooShort {
                                    last_index: self.log.last_index,
                                },
                            },
                        }),
                    );
                }
                Message::RequestVote(request) if request.pre_vote => {
                    self.send(
                        from,
                        Message::RequestVoteResponse(RequestVoteResponse {
                            term: self.term(),
                            pre_vote: true,
                            granted: false,
                        }),
                    );
                }
                _ => {}
            }
            return Ok(());
        }

        match message {
            Message::RequestVote(request) => {
                self.handle_request_vote(from, request);
                Ok(())
            }
            Message::RequestVoteResponse(response) => {
                self.handle_vote_response(from, response);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(from, message),
                Role::Follower | Role::PreCandidate | Role::Candidate => {
                    self.step_follower(from, message)
                }
            },
        }
    }

    /// Appends client records; returns the indexes they will have if committed.
    pub fn propose(
        &mut self,
        proposals: Vec<Proposal>,
    ) -> Result<RangeInclusive<LogIndex>, ProposeError> {
        self.check_can_propose()?;
        if proposals.is_empty() {
            return Err(ProposeError::EmptyBatch);
        }
        let term = self.term();
        let first = self.log.last_index + 1;
        let last = first + proposals.len() as u64 - 1;
        // Entries go straight into the log, without a batch in between.
        let entries = proposals
            .into_iter()
            .enumerate()
            .map(|(offset, proposal)| Entry {
                index: first + offset as u64,
                term,
                kind: EntryKind::Data,
                producer: proposal.producer,
                payload: proposal.payload,
            });
        self.leader_append(entries);
        debug_assert_eq!(self.log.last_index, last);
        Ok(first..=last)
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some((to, _)) = self.transfer {
            return Err(ProposeError::TransferInProgress { to });
        }
        if self.log.unpersisted_bytes >= self.config.unpersisted_bytes_max {
            return Err(ProposeError::Backpressure {
                unpersisted_bytes: self.log.unpersisted_bytes,
                limit_bytes: self.config.unpersisted_bytes_max,
            });
        }
        Ok(())
    }

    /// Starts a membership change; returns the index of its config entry.
    pub fn propose_membership_change(
        &mut self,
        change: MembershipChange,
    ) -> Result<LogIndex, MembershipChangeError> {
        self.check_can_propose()?;
        let current = self.log.membership().clone();
        let config_index = self.log.last_config_index();
        if current.is_joint() || config_index > self.commit_index {
            return Err(MembershipChangeError::ChangeInProgress {
                index: config_index,
            });
        }
        let mut next = current.clone();
        match change {
            MembershipChange::AddLearner { id, addr } => {
                if id == 0 {
                    return Err(MembershipChangeError::ZeroNodeId);
                }
                if current.addrs.contains_key(&id) {
                    return Err(MembershipChangeError::AlreadyMember { id });
                }
                next.addrs.insert(id, addr);
                next.learners.insert(id);
            }
            MembershipChange::PromoteLearner { id } => {
                if !current.learners.contains(&id) {
                    return Err(MembershipChangeError::NotLearner { id });
                }
                next.learners.remove(&id);
                next.voters.insert(id);
                next.voters_outgoing = current.voters.clone();
            }
            MembershipChange::Remove { id } => {
                if current.learners.contains(&id) {
                    next.learners.remove(&id);
                    next.addrs.remove(&id);
                } else if current.voters.contains(&id) {
                    if current.voters.len() == 1 {
                        return Err(MembershipChangeError::LastVoter { id });
                    }
                    next.voters.remove(&id);
                    next.voters_outgoing = current.voters.clone();
                } else {
                    return Err(MembershipChangeError::NotMember { id });
                }
            }
        }
        let index = self.log.last_index + 1;
        let entry = Entry {
            index,
            term: self.term(),
            kind: EntryKind::Config,
            producer: None,
            payload: next.to_bytes(),
        };
        self.leader_append([entry]);
        Ok(index)
    }

    /// Hands leadership to voter `to` (it campaigns once its log is current).
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.config.id {
            return Err(TransferError::AlreadyLeader { to });
        }
        if !self.log.membership().is_voter(to) {
            return Err(TransferError::NotVoter { to });
        }
        if self.progress.get(&to).is_some_and(|pr| pr.repairing) {
            return Err(TransferError::Repairing { to });
        }
        self.transfer = Some((to, 0));
        self.election_elapsed = 0;
        if self
            .progress
            .get(&to)
            .is_some_and(|pr| pr.match_index == self.log.last_index)
        {
            let term = self.term();
            self.send(to, Message::TimeoutNow(TimeoutNow { term }));
        }
        Ok(())
    }

    /// Storage finished a sync covering entries up to `index`, whose term was
    /// `term` when written (ignored if that entry has since been replaced).
    pub fn persisted(&mut self, index: LogIndex, term: Term) {
        let index = index.min(self.handed_out_index);
        if !self.log.persisted(index, term) {
            return;
        }
        match self.role {
            Role::Leader => self.maybe_commit(),
            _ => self.maybe_ack_leader(),
        }
    }

    /// Retention dropped every stored entry below `start.first_index`.
    pub fn log_compacted(&mut self, start: LogStart) -> Result<(), CompactError> {
        let index = start.first_index.saturating_sub(1);
        if index > self.commit_index || index > self.log.persisted_index {
            return Err(CompactError::NotCommitted {
                index,
                commit_index: self.commit_index,
            });
        }
        if index < self.log.first_index() {
            return Ok(());
        }
        let actual = self.log.term(index);
        if actual != Some(start.prev_term) {
            return Err(CompactError::TermMismatch {
                index,
                given: start.prev_term,
                actual,
            });
        }
        self.log.set_start(start);
        Ok(())
    }

    /// Drains everything the core wants done; see [`Ready`] for the order.
    pub fn take_ready(&mut self, reader: &impl LogReader) -> Ready {
        let mut ready = Ready::default();
        if self.role == Role::Leader {
            self.replicate_all(reader, &mut ready.read_errors);
        }
        ready.log_start_reset = self.pending_reset.take();
        ready.truncate_from = self.pending_truncate.take();
        // The core keeps its unpersisted entries (to replicate them before
        // its own sync), so the runtime gets copies: cheap, the payloads are
        // shared `Bytes`.
        let (front, back) = self.log.unpersisted_from(self.handed_out_index + 1);
        ready.entries.reserve_exact(front.len() + back.len());
        ready.entries.extend_from_slice(front);
        ready.entries.extend_from_slice(back);
        self.handed_out_index = self.log.last_index;
        if self.hard_state != self.hard_state_emitted {
            ready.hard_state = Some(self.hard_state);
            self.hard_state_emitted = self.hard_state;
        }
        ready.messages = std::mem::take(&mut self.messages);
        if self.commit_index != self.commit_emitted {
            debug_assert!(
                self.commit_index > self.commit_emitted,
                "commit index never decreases"
            );
            ready.commit_index = Some(self.commit_index);
            self.commit_emitted = self.commit_index;
        }
        let soft_state = self.soft_state();
        if soft_state != self.soft_state_emitted {
            ready.soft_state = Some(soft_state);
            self.soft_state_emitted = soft_state;
        }
        if self.log.membership() != &self.membership_emitted {
            self.membership_emitted = self.log.membership().clone();
            ready.membership = Some(self.membership_emitted.clone());
        }
        ready.repair_complete = std::mem::take(&mut self.repair_complete_due);
        ready
    }

    // ---- roles ----

    fn is_voter(&self) -> bool {
        self.log.membership().is_voter(self.config.id)
    }

    /// Whether our log can vouch for a candidate's: not while it is being
    /// repaired. (Voting does not depend on being a voter in our own view
    /// of the membership: a new voter may not have its config entry yet.)
    fn log_is_whole(&self) -> bool {
        self.repair.is_none() || self.config.bugs.vote_while_repairing
    }

    /// A voter whose log is whole may stand for election.
    fn may_campaign(&self) -> bool {
        self.is_voter() && self.log_is_whole()
    }

    /// Ends the repair once our log is again at least as good as what we
    /// acknowledged before the damage. Either this term's leader has it
    /// durably matching its own up to the index we held then; or this is a
    /// later term than any we acknowledged in (so no leader counts our old
    /// acknowledgements any more), its leader committed an entry of its own
    /// term, and we durably hold its log up to that commit: every entry
    /// committed before this term is below it.
    fn maybe_finish_repair(&mut self) {
        let Some(repair) = self.repair else {
            return;
        };
        if repair.hard_state_lost && !self.fence_lost_votes() {
            return;
        }
        let refilled = self.repair_log_intact || self.acked_index >= repair.until_index;
        let caught_up_in_new_term = self.term() > self.start_term
            && self.commit_index > 0
            && self.acked_index >= self.commit_index
            && self.log.term(self.commit_index) == Some(self.term());
        if !(refilled || caught_up_in_new_term) {
            return;
        }
        self.repair = None;
        self.repair_complete_due = true;
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.randomized_election_ticks = self.rng.range(
            self.config.election_ticks_min,
            self.config.election_ticks_max,
        );
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        debug_assert!(term >= self.term(), "terms never decrease");
        if term > self.term() {
            self.hard_state = HardState {
                term,
                voted_for: None,
            };
            self.leader_match_ceiling = 0;
            self.acked_index = 0;
        }
        if leader != self.leader {
            self.leader_match_ceiling = 0;
            self.acked_index = 0;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.votes.clear();
        self.transfer = None;
        self.reset_election_timer();
    }

    fn campaign(&mut self, leadership_transfer: bool) {
        if self.config.pre_vote && !leadership_transfer {
            self.role = Role::PreCandidate;
            self.leader = None;
            self.votes.clear();
            self.reset_election_timer();
            self.request_votes(self.term() + 1, true, false);
        } else {
            self.become_candidate(leadership_transfer);
        }
    }

    fn become_candidate(&mut self, leadership_transfer: bool) {
        let term = self.term() + 1;
        self.hard_state = HardState {
            term,
            voted_for: Some(self.config.id),
        };
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.progress.clear();
        self.leader_match_ceiling = 0;
        self.acked_index = 0;
        self.reset_election_timer();
        self.request_votes(term, false, leadership_transfer);
    }

    fn request_votes(&mut self, term: Term, pre_vote: bool, leadership_transfer: bool) {
        let id = self.config.id;
        self.votes.insert(id, true);
        if self.check_election_result() {
            return;
        }
        let request = RequestVote {
            term,
            last_log_index: self.log.last_index,
            last_log_term: self.log.last_term(),
            pre_vote,
            leadership_transfer,
        };
        let voters: Vec<NodeId> = {
            let m = self.log.membership();
            m.voters
                .union(&m.voters_outgoing)
                .copied()
                .filter(|&v| v != id)
                .collect()
        };
        for voter in voters {
            self.send(voter, Message::RequestVote(request.clone()));
        }
    }

    /// Returns true if the campaign ended (won or lost).
    fn check_election_result(&mut self) -> bool {
        let membership = self.log.membership();
        let votes = &self.votes;
        let won = quorum(membership, |id| votes.get(&id) == Some(&true));
        let lost = !quorum(membership, |id| votes.get(&id) != Some(&false));
        if won {
            if self.role == Role::PreCandidate {
                self.become_candidate(false);
            } else {
                self.become_leader();
            }
            true
        } else if lost {
            let term = self.term();
            self.become_follower(term, None);
            true
        } else {
            false
        }
    }

    fn become_leader(&mut self) {
        debug_assert_eq!(self.role, Role::Candidate);
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.transfer = None;
        self.rebuild_progress();
        for pr in self.progress.values_mut() {
            pr.recent_active = true;
        }
        if self.config.bugs.commit_old_term_by_counting {
            // The broken rule needs no no-op: it commits old entries anyway.
            self.maybe_commit();
            return;
        }
        // The no-op of §8: lets this leader commit entries of older terms.
        let noop = Entry::noop(self.log.last_index + 1, self.term());
        self.leader_append([noop]);
    }

    /// Leader: one progress per other member of the configuration in force.
    fn rebuild_progress(&mut self) {
        let id = self.config.id;
        let next = self.log.last_index + 1;
        let now = self.tick_count;
        let members: BTreeSet<NodeId> = self
            .log
            .membership()
            .members()
            .filter(|&m| m != id)
            .collect();
        self.progress.retain(|peer, _| members.contains(peer));
        for member in members {
            self.progress
                .entry(member)
                .or_insert_with(|| Progress::new(next, now));
        }
    }

    fn leader_append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        debug_assert_eq!(self.role, Role::Leader);
        let before = self.log.last_config_index();
        let _ = self.log.append(entries);
        if self.log.last_config_index() != before {
            self.rebuild_progress();
        }
        // A single-voter cluster commits on its own sync; others need acks.
        self.maybe_commit();
    }

    // ---- repair after a lost hard state ----

    /// Voters whose current term we have not heard yet.
    fn unreported_voters(&self) -> Vec<NodeId> {
        let membership = self.log.membership();
        membership
            .voters
            .union(&membership.voters_outgoing)
            .copied()
            .filter(|&id| id != self.config.id && !self.term_reports.contains_key(&id))
            .collect()
    }

    /// Asks the voters that have not answered yet for their term: a
    /// pre-vote for term 0 with an empty log, which no one grants and every
    /// node answers with its term (a higher term would be ignored by nodes
    /// that hear from a leader).
    fn probe_terms(&mut self) {
        let request = RequestVote {
            term: 0,
            last_log_index: 0,
            last_log_term: 0,
            pre_vote: true,
            leadership_transfer: false,
        };
        for voter in self.unreported_voters() {
            self.send(voter, Message::RequestVote(request.clone()));
        }
        self.maybe_finish_repair();
    }

    /// Once every voter reported its term, no term above the highest report
    /// holds a vote of ours: records a vote in that term (so we never vote
    /// in it) and treats it as the last term we acknowledged entries in.
    /// Returns true once done.
    fn fence_lost_votes(&mut self) -> bool {
        if !self.unreported_voters().is_empty() {
            return false;
        }
        // Our own log's last term counts too: we were at least in that term
        // (and a single-voter cluster has nobody else to ask).
        let highest = self
            .term_reports
            .values()
            .copied()
            .fold(self.term().max(self.log.last_term()), Term::max);
        if highest > self.term() {
            self.become_follower(highest, None);
        }
        if self.hard_state.voted_for.is_none() {
            self.hard_state.voted_for = Some(self.config.id);
        }
        self.start_term = self.start_term.max(highest);
        self.term_reports.clear();
        if let Some(repair) = self.repair.as_mut() {
            repair.hard_state_lost = false;
        }
        true
    }

    // ---- votes ----

    fn log_is_up_to_date(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        let our_term = self.log.last_term();
        last_log_term > our_term
            || (last_log_term == our_term && last_log_index >= self.log.last_index)
    }

    fn handle_request_vote(&mut self, from: NodeId, request: RequestVote) {
        // A repairing node may have acknowledged entries it no longer
        // holds: its log cannot vouch for the candidate's.
        let up_to_date = self.log_is_whole()
            && (self.config.bugs.vote_without_log_check
                || self.log_is_up_to_date(request.last_log_index, request.last_log_term));
        if request.pre_vote {
            let granted = up_to_date && request.term > self.term();
            let term = if granted { request.term } else { self.term() };
            self.send(
                from,
                Message::RequestVoteResponse(RequestVoteResponse {
                    term,
                    pre_vote: true,
                    granted,
                }),
            );
            return;
        }
        debug_assert_eq!(request.term, self.term());
        let can_vote = self.hard_state.voted_for == Some(from)
            || (self.hard_state.voted_for.is_none() && self.leader.is_none())
            || self.config.bugs.double_vote;
        let granted = can_vote && up_to_date;
        if granted {
            self.hard_state.voted_for = Some(from);
            self.reset_election_timer();
        }
        let term = self.term();
        self.send(
            from,
            Message::RequestVoteResponse(RequestVoteResponse {
                term,
                pre_vote: false,
                granted,
            }),
        );
    }

    fn handle_vote_response(&mut self, from: NodeId, response: RequestVoteResponse) {
        let counts = match self.role {
            Role::PreCandidate => {
                response.pre_vote && (response.term == self.term() + 1 || !response.granted)
            }
            Role::Candidate => !response.pre_vote && response.term == self.term(),
            _ => false,
        };
        if counts {
            self.votes.insert(from, response.granted);
            self.check_election_result();
        }
    }

    // ---- follower ----

    fn step_follower(&mut self, from: NodeId, message: Message) -> Result<(), StepError> {
        match message {
            Message::AppendEntries(append) => {
                self.become_follower_of(from);
                self.handle_append_entries(from, append)
            }
            Message::InstallLogStart(install) => {
                self.become_follower_of(from);
                self.handle_install_log_start(from, install)
            }
            Message::TimeoutNow(_) => {
                if self.may_campaign() {
                    self.become_candidate(true);
                }
                Ok(())
            }
            // Answers meant for a leader we no longer are.
            Message::AppendEntriesResponse(_) | Message::InstallLogStartResponse(_) => Ok(()),
            Message::RequestVote(_) | Message::RequestVoteResponse(_) => Ok(()),
        }
    }

    fn become_follower_of(&mut self, leader: NodeId) {
        if self.role != Role::Follower || self.leader != Some(leader) {
            let term = self.term();
            self.become_follower(term, Some(leader));
        } else {
            self.election_elapsed = 0;
        }
    }

    fn handle_append_entries(
        &mut self,
        from: NodeId,
        append: AppendEntries,
    ) -> Result<(), StepError> {
        let AppendEntries {
            term: _,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } = append;
        let mut expected_term = prev_log_term;
        for (offset, entry) in entries.iter().enumerate() {
            if entry.index != prev_log_index + 1 + offset as u64
                || entry.term < expected_term
                || entry.term > self.term()
            {
                return Err(StepError::BadEntries {
                    from,
                    prev_log_index,
                });
            }
            expected_term = entry.term;
        }
        let first = self.log.first_index();
        let mut entries = entries;
        let (prev_log_index, prev_log_term) = if prev_log_index + 1 < first {
            // Entries below our log start are committed, hence match.
            let skip = usize::try_from(first - 1 - prev_log_index).unwrap_or(usize::MAX);
            entries.drain(..skip.min(entries.len()));
            (first - 1, self.log.start.prev_term)
        } else {
            (prev_log_index, prev_log_term)
        };
        match self.log.term(prev_log_index) {
            Some(term) if term == prev_log_term => {}
            found => {
                let hint = match found {
                    None => RejectHint::LogTooShort {
                        last_index: self.log.last_index,
                    },
                    Some(term) => RejectHint::ConflictingTerm {
                        term,
                        first_index: self.log.first_index_of_term_at(prev_log_index),
                    },
                };
                let term = self.term();
                self.send(
                    from,
                    Message::AppendEntriesResponse(AppendEntriesResponse {
                        term,
                        repairing: self.repair.is_some(),
                        outcome: AppendOutcome::Rejected {
                            rejected_prev_index: prev_log_index,
                            hint,
                        },
                    }),
                );
                return Ok(());
            }
        }
        let last_new_index = prev_log_index + entries.len() as u64;
        let mut append_from = entries.len();
        for (position, entry) in entries.iter().enumerate() {
            match self.log.term(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    debug_assert!(
                        entry.index > self.commit_index,
                        "a committed entry is never truncated"
                    );
                    debug_assert!(
                        entry.index > self.leader_match_ceiling,
                        "entries matching this term's leader are never truncated"
                    );
                    self.truncate_from(entry.index);
                    append_from = position;
                    break;
                }
                None => {
                    append_from = position;
                    break;
                }
            }
        }
        if append_from < entries.len() {
            // A config entry that does not decode is kept but not applied;
            // the leader encoded it, so only a bug gets here.
            let _undecodable_configs = self.log.append(entries.drain(append_from..));
        }
        self.leader_match_ceiling = self.leader_match_ceiling.max(last_new_index);
        let new_commit = leader_commit.min(last_new_index);
        if new_commit > self.commit_index {
            self.commit_index = new_commit;
            self.log.forget_old_configs(self.commit_index);
        }
        let waits_for_sync = self.leader_match_ceiling > self.log.persisted_index;
        if entries.is_empty() || !waits_for_sync || self.config.bugs.ack_unpersisted {
            self.ack_leader(from, true);
        }
        Ok(())
    }

    fn truncate_from(&mut self, from: LogIndex) {
        debug_assert!(
            self.role != Role::Leader,
            "a leader never truncates its own log"
        );
        self.log.truncate_from(from);
        if from <= self.handed_out_index {
            self.pending_truncate = Some(self.pending_truncate.map_or(from, |t| t.min(from)));
            self.handed_out_index = from - 1;
        }
    }

    /// Follower: tells the leader how far our log durably matches its own.
    fn ack_leader(&mut self, leader: NodeId, always: bool) {
        let persisted = if self.config.bugs.ack_unpersisted {
            self.log.last_index
        } else {
            self.log.persisted_index
        };
        let match_index = self.leader_match_ceiling.min(persisted);
        if !always && match_index <= self.acked_index {
            return;
        }
        self.acked_index = self.acked_index.max(match_index);
        let term = self.term();
        self.send(
            leader,
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term,
                repairing: self.repair.is_some(),
                outcome: AppendOutcome::Accepted { match_index },
            }),
        );
        self.maybe_finish_repair();
    }

    fn maybe_ack_leader(&mut self) {
        if let (Role::Follower, Some(leader)) = (self.role, self.leader) {
            if self.leader_match_ceiling > 0 {
                self.ack_leader(leader, false);
            }
        }
    }

    fn handle_install_log_start(
        &mut self,
        from: NodeId,
        install: InstallLogStart,
    ) -> Result<(), StepError> {
        let start = install.log_start;
        if start.first_index == 0 {
            return Err(StepError::BadLogStart { from });
        }
        let boundary = start.first_index - 1;
        let match_index = if boundary <= self.commit_index {
            // We already hold everything up to there; our committed prefix matches.
            self.commit_index.min(self.log.persisted_index)
        } else {
            self.log.set_start(start.clone());
            // set_start kept nothing if our log did not reach the boundary
            // with the same term; either way the runtime resets storage.
            self.log.truncate_from(start.first_index);
            self.pending_reset = Some(start);
            self.pending_truncate = None;
            self.handed_out_index = boundary;
            self.commit_index = boundary;
            boundary
        };
        self.leader_match_ceiling = self.leader_match_ceiling.max(match_index);
        self.acked_index = self.acked_index.max(match_index);
        let term = self.term();
        self.send(
            from,
            Message::InstallLogStartResponse(InstallLogStartResponse { term, match_index }),
        );
        self.maybe_finish_repair();
        Ok(())
    }

    // ---- leader ----

    fn step_leader(&mut self, from: NodeId, message: Message) -> Result<(), StepError> {
        let now = self.tick_count;
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.recent_active = true;
            pr.last_heard_tick = now;
            if let Message::AppendEntriesResponse(response) = &message {
                pr.repairing = response.repairing;
            }
        }
        match message {
            Message::AppendEntriesResponse(response) => match response.outcome {
                AppendOutcome::Accepted { match_index } => self.handle_ack(from, match_index),
                AppendOutcome::Rejected {
                    rejected_prev_index,
                    hint,
                } => {
                    self.handle_reject(from, rejected_prev_index, hint);
                    Ok(())
                }
            },
            Message::InstallLogStartResponse(response) => {
                if let Some(pr) = self.progress.get_mut(&from) {
                    if pr.state == ReplicationState::LogStart {
                        pr.become_probe();
                    }
                }
                self.handle_ack(from, response.match_index)
            }
            // Another leader in our term is impossible (election safety);
            // TimeoutNow is only sent by leaders.
            Message::AppendEntries(_) | Message::InstallLogStart(_) | Message::TimeoutNow(_) => {
                Ok(())
            }
            Message::RequestVote(_) | Message::RequestVoteResponse(_) => Ok(()),
        }
    }

    fn handle_ack(&mut self, from: NodeId, match_index: LogIndex) -> Result<(), StepError> {
        let last_index = self.log.last_index;
        if match_index > last_index {
            return Err(StepError::AckBeyondLog {
                from,
                match_index,
                last_index,
            });
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        let advanced = pr.acknowledge(match_index);
        if pr.state == ReplicationState::Probe && pr.match_index + 1 >= pr.next_index {
            pr.become_replicate();
        }
        let caught_up = pr.match_index == last_index;
        if advanced {
            self.maybe_commit();
        }
        if caught_up && self.transfer.is_some_and(|(to, _)| to == from) {
            let term = self.term();
            self.send(from, Message::TimeoutNow(TimeoutNow { term }));
        }
        Ok(())
    }

    fn handle_reject(&mut self, from: NodeId, rejected: LogIndex, hint: RejectHint) {
        let Some(pr) = self.progress.get(&from) else {
            return;
        };
        let stale = match pr.state {
            ReplicationState::Replicate => rejected <= pr.match_index,
            ReplicationState::Probe => rejected + 1 != pr.next_index,
            ReplicationState::LogStart => true,
        };
        if stale {
            return;
        }
        let next = match hint {
            RejectHint::LogTooShort { last_index } => (last_index + 1).min(rejected),
            RejectHint::ConflictingTerm { term, first_index } => {
                match self.log.last_index_of_term(term, rejected) {
                    Some(last_of_term) => (last_of_term + 1).min(rejected),
                    None => first_index.min(rejected),
                }
            }
        };
        if let Some(pr) = self.progress.get_mut(&from) {
            if next <= pr.match_index {
                // The follower no longer holds entries it acknowledged: its
                // storage found damage and cut its log (it does not vote
                // until it is refilled). Stop counting them and repair it
                // from where its log now ends.
                pr.match_index = next - 1;
            }
            pr.become_probe();
            pr.next_index = next.max(pr.match_index + 1);
        }
    }

    /// Advances the commit index to the highest index a quorum has persisted
    /// whose entry is of the current term (§5.4.2: never by counting an
    /// older term's entry).
    fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let id = self.config.id;
        let own = self.log.persisted_index;
        let progress = &self.progress;
        let index_of = |peer: NodeId| {
            if peer == id {
                own
            } else {
                progress.get(&peer).map_or(0, |pr| pr.match_index)
            }
        };
        let membership = self.log.membership();
        let mut candidate = majority_index(&membership.voters, &index_of);
        if membership.is_joint() {
            candidate = candidate.min(majority_index(&membership.voters_outgoing, &index_of));
        }
        let candidate = candidate.min(self.log.last_index);
        if candidate <= self.commit_index {
            return;
        }
        let own_term = self.log.term(candidate) == Some(self.term());
        if !own_term && !self.config.bugs.commit_old_term_by_counting {
            return;
        }
        self.commit_index = candidate;
        self.commit_broadcast_due = true;
        self.on_commit_advanced();
    }

    fn on_commit_advanced(&mut self) {
        let config_index = self.log.last_config_index();
        self.log.forget_old_configs(self.commit_index);
        if config_index == 0 || config_index > self.commit_index {
            return;
        }
        let membership = self.log.membership().clone();
        if membership.is_joint() {
            // C_old,new is committed: move on to C_new.
            let mut next = membership;
            next.voters_outgoing.clear();
            let keep: BTreeSet<NodeId> = next.voters.union(&next.learners).copied().collect();
            next.addrs.retain(|id, _| keep.contains(id));
            let entry = Entry {
                index: self.log.last_index + 1,
                term: self.term(),
                kind: EntryKind::Config,
                producer: None,
                payload: next.to_bytes(),
            };
            self.leader_append([entry]);
        } else if !membership.is_voter(self.config.id) {
            // C_new without us is committed: hand over (thesis §4.2.2).
            let term = self.term();
            self.become_follower(term, None);
        }
    }

    fn send(&mut self, to: NodeId, message: Message) {
        self.messages.push((to, message));
    }

    /// Leader: fills the network within each follower's flow-control limits.
    fn replicate_all<R: LogReader>(
        &mut self,
        reader: &R,
        errors: &mut Vec<(NodeId, LogReadError)>,
    ) {
        let heartbeat = std::mem::take(&mut self.heartbeat_due);
        let commit_news = std::mem::take(&mut self.commit_broadcast_due);
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            if let Err(error) = self.replicate_to(peer, reader, heartbeat, commit_news) {
                errors.push((peer, error));
            }
        }
    }

    fn replicate_to<R: LogReader>(
        &mut self,
        peer: NodeId,
        reader: &R,
        heartbeat: bool,
        commit_news: bool,
    ) -> Result<(), LogReadError> {
        let mut sent_any = false;
        loop {
            let Some(pr) = self.progress.get(&peer) else {
                return Ok(());
            };
            let last = self.log.last_index;
            match pr.state {
                ReplicationState::LogStart => {
                    if heartbeat || !pr.paused {
                        self.send_log_start(peer);
                    }
                    return Ok(());
                }
                ReplicationState::Probe => {
                    if pr.paused && !heartbeat {
                        return Ok(());
                    }
                    return self.send_append(peer, reader);
                }
                ReplicationState::Replicate => {
                    let full = pr.inflight_full(
                        self.config.inflight_messages_max,
                        self.config.inflight_bytes_max,
                    );
                    if pr.next_index <= last && !full {
                        self.send_append(peer, reader)?;
                        sent_any = true;
                        continue;
                    }
                    if !sent_any && (heartbeat || (commit_news && pr.next_index > last)) {
                        // Heartbeat: an empty append after what we sent. A
                        // follower missing some of it rejects, and we probe.
                        self.send_append_empty(peer);
                    }
                    return Ok(());
                }
            }
        }
    }

    fn send_log_start(&mut self, peer: NodeId) {
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.state = ReplicationState::LogStart;
            pr.paused = true;
        }
        let term = self.term();
        let log_start = self.log.start.clone();
        self.send(
            peer,
            Message::InstallLogStart(InstallLogStart { term, log_start }),
        );
    }

    fn send_append_empty(&mut self, peer: NodeId) {
        let Some(pr) = self.progress.get(&peer) else {
            return;
        };
        let prev_log_index = pr.next_index - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            self.send_log_start(peer);
            return;
        };
        self.send_append_entries(peer, prev_log_index, prev_log_term, Vec::new());
    }

    /// Sends `entries` after `prev_log_index` (none: a heartbeat or probe)
    /// with this leader's term and commit index.
    fn send_append_entries(
        &mut self,
        peer: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
    ) {
        let message = Message::AppendEntries(AppendEntries {
            term: self.term(),
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.commit_index,
        });
        self.send(peer, message);
    }

    fn send_append<R: LogReader>(&mut self, peer: NodeId, reader: &R) -> Result<(), LogReadError> {
        let Some(pr) = self.progress.get(&peer) else {
            return Ok(());
        };
        let next = pr.next_index;
        let prev_log_index = next - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            self.send_log_start(peer);
            return Ok(());
        };
        let (entries, bytes) = match self.read_entries(next, reader) {
            Ok(read) => read,
            Err(LogReadError::Compacted { .. }) => {
                self.send_log_start(peer);
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let last_sent = prev_log_index + entries.len() as u64;
        if let Some(pr) = self.progress.get_mut(&peer) {
            if entries.is_empty() {
                pr.paused = pr.state != ReplicationState::Replicate;
            } else {
                pr.sent(last_sent, bytes);
            }
        }
        self.send_append_entries(peer, prev_log_index, prev_log_term, entries);
        Ok(())
    }

    /// Entries from `low`, within the per-message limits, and their size
    /// for flow control: persisted ones through the reader, the rest from
    /// the core's own unpersisted tail.
    fn read_entries<R: LogReader>(
        &self,
        low: LogIndex,
        reader: &R,
    ) -> Result<(Vec<Entry>, u64), LogReadError> {
        let last = self.log.last_index;
        if low > last {
            return Ok((Vec::new(), 0));
        }
        let count_max = self.config.append_entries_max as u64;
        let high = last.min(low + count_max - 1);
        let bytes_max = self.config.append_bytes_max;
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        let persisted = self.log.persisted_index;
        if low <= persisted {
            if low < self.log.first_index() {
                return Err(LogReadError::Compacted { index: low });
            }
            entries = reader.entries(low, high.min(persisted), bytes_max)?;
            // Trust but verify what storage returned: it must continue `low`.
            let consecutive = entries
                .iter()
                .enumerate()
                .all(|(offset, e)| e.index == low + offset as u64 && e.index <= high);
            if !consecutive || entries.is_empty() {
                return Err(LogReadError::Storage {
                    low,
                    high,
                    source: "storage returned entries that do not start at the requested index"
                        .into(),
                });
            }
            bytes = entries.iter().map(entry_bytes).sum();
            let read_to = low + entries.len() as u64 - 1;
            if read_to < high.min(persisted) || bytes >= bytes_max {
                return Ok((entries, bytes));
            }
        }
        let from = low.max(persisted + 1);
        let (front, back) = self.log.unpersisted_from(from);
        // `from` is past `high` when the reader already gave everything.
        let count_max = usize::try_from((high + 1).saturating_sub(from)).unwrap_or(usize::MAX);
        entries.reserve(count_max.min(front.len() + back.len()));
        for entry in front.iter().chain(back).take(count_max) {
            if !entries.is_empty() && bytes >= bytes_max {
                break;
            }
            debug_assert!(entry.index <= high);
            bytes += entry_bytes(entry);
            entries.push(entry.clone());
        }
        Ok((entries, bytes))
    }
}
