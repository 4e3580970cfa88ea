//! Types the core takes and gives: roles, proposals, errors, the Ready it
//! hands out, its status and the state it starts from.

use bytes::Bytes;

use super::super::config::ConfigError;
use super::super::message::Message;
use crate::types::{Entry, HardState, LogIndex, LogStart, Membership, NodeId, ProducerSeq, Term};

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
