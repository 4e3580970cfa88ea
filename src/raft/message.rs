//! The messages Raft cores exchange. Plain data: the wire codec (src/wire)
//! owns their byte layout, the core owns their meaning.
//!
//! Every message carries the sender's current `term`; the sender's id is not
//! in the message, it comes with the transport (`Core::step(from, message)`),
//! which authenticates peers.

use crate::types::{Entry, LogIndex, LogStart, Term};

pub use crate::types::{LOG_INDEX_MAX, TERM_MAX};

/// One message between two cores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    RequestVote(RequestVote),
    RequestVoteResponse(RequestVoteResponse),
    AppendEntries(AppendEntries),
    AppendEntriesResponse(AppendEntriesResponse),
    TimeoutNow(TimeoutNow),
    InstallLogStart(InstallLogStart),
    InstallLogStartResponse(InstallLogStartResponse),
    TermProbe(TermProbe),
    TermProbeResponse(TermProbeResponse),
}

impl Message {
    /// The sender's term (for a pre-vote request: the term it would campaign in).
    pub fn term(&self) -> Term {
        match self {
            Message::RequestVote(m) => m.term,
            Message::RequestVoteResponse(m) => m.term,
            Message::AppendEntries(m) => m.term,
            Message::AppendEntriesResponse(m) => m.term,
            Message::TimeoutNow(m) => m.term,
            Message::InstallLogStart(m) => m.term,
            Message::InstallLogStartResponse(m) => m.term,
            // A probe asks for a term and claims none.
            Message::TermProbe(_) => 0,
            Message::TermProbeResponse(m) => m.term,
        }
    }
}

/// A candidate asks for a vote (Raft §5.2), or a would-be candidate asks
/// whether it could win (PreVote, thesis §9.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestVote {
    /// The candidate's term; for a pre-vote, the term it would campaign in
    /// (its current term + 1) without having raised its own term yet.
    pub term: Term,
    /// Index of the candidate's last log entry (up-to-date check, §5.4.1).
    pub last_log_index: LogIndex,
    /// Term of the candidate's last log entry (up-to-date check, §5.4.1).
    pub last_log_term: Term,
    /// True for a pre-vote: no voter changes its term or vote on it.
    pub pre_vote: bool,
    /// True when the campaign was started by `TimeoutNow` (leadership
    /// transfer): voters grant it even if they heard from a leader recently.
    pub leadership_transfer: bool,
}

/// The answer to a [`RequestVote`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestVoteResponse {
    /// The voter's term; for a granted pre-vote, the term of the request.
    pub term: Term,
    /// True when this answers a pre-vote request.
    pub pre_vote: bool,
    /// True if the vote (or pre-vote) is granted.
    pub granted: bool,
}

/// The leader replicates entries or sends a heartbeat (Raft §5.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntries {
    /// The leader's term.
    pub term: Term,
    /// Index of the entry just before `entries` (consistency check).
    pub prev_log_index: LogIndex,
    /// Term of the entry at `prev_log_index` (0 when it is 0).
    pub prev_log_term: Term,
    /// Entries to store, consecutive from `prev_log_index + 1`; empty for a
    /// heartbeat or a probe.
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub leader_commit: LogIndex,
}

/// The answer to an [`AppendEntries`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntriesResponse {
    /// The follower's term.
    pub term: Term,
    pub outcome: AppendOutcome,
    /// The follower is repairing a damaged log and does not vote: the
    /// leader shows it in status and hands leadership elsewhere.
    pub repairing: bool,
}

/// What a follower did with an [`AppendEntries`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The follower's log matches the leader's up to `match_index`, and every
    /// entry up to it is persisted on the follower. A follower may send this
    /// more than once for one request (again when its sync completes).
    Accepted { match_index: LogIndex },
    /// The consistency check failed at `rejected_prev_index` (the request's
    /// `prev_log_index`); `hint` lets the leader skip a whole term at once.
    Rejected {
        rejected_prev_index: LogIndex,
        hint: RejectHint,
    },
}

/// Fast log backtracking (Raft §5.3, the optimisation in its last paragraphs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectHint {
    /// The follower has no entry at the rejected index; its log ends at `last_index`.
    LogTooShort { last_index: LogIndex },
    /// The follower's entry at the rejected index has term `term`, and the
    /// first entry of that term in its log is at `first_index`.
    ConflictingTerm { term: Term, first_index: LogIndex },
}

/// The leader tells the target of a leadership transfer to campaign now,
/// without waiting for its election timeout (thesis §3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutNow {
    /// The leader's term.
    pub term: Term,
}

/// The leader tells a follower that needs entries the leader no longer
/// stores to reset its log to the leader's log start (this log service's
/// equivalent of InstallSnapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallLogStart {
    /// The leader's term.
    pub term: Term,
    /// The leader's log start: first index it stores, the term of the entry
    /// before it, and the membership in force at that point.
    pub log_start: LogStart,
}

/// The answer to an [`InstallLogStart`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallLogStartResponse {
    /// The follower's term.
    pub term: Term,
    /// The follower's log matches the leader's up to this index, durably
    /// (after a reset: `log_start.first_index - 1`).
    pub match_index: LogIndex,
}

/// A node that lost its term and vote asks a voter for its current term
/// (see `Repair::hard_state_lost`). Every node answers, whatever its role
/// and term, and changes nothing on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermProbe {
    /// Drawn afresh by each incarnation of the asking node (each start of
    /// its core), so that an answer to an earlier incarnation's probe,
    /// delayed in the network, is recognised and ignored.
    pub nonce: u64,
}

/// The answer to a [`TermProbe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermProbeResponse {
    /// The voter's current term when it answered.
    pub term: Term,
    /// The probe's nonce, echoed.
    pub nonce: u64,
}
