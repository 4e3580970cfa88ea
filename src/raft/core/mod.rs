//! The consensus core: one Raft node as a deterministic state machine.
//!
//! The core is split along Raft's concerns, so that each rule of the paper
//! lives in one place a reader can find:
//! - `election`: timeouts, PreVote, RequestVote, the vote rules (§5.2,
//!   §5.4.1, thesis §9.6) and the leader lease that keeps a live leader
//!   from being deposed (thesis §4.2.3, §6.2);
//! - `leader`: proposals, replication and flow control, acknowledgements,
//!   rejects and the commit rule (§5.3, §5.4.2), CheckQuorum;
//! - `follower`: AppendEntries and InstallLogStart on the follower side
//!   (the consistency check, truncation of conflicts, acknowledgements of
//!   what is durable);
//! - `membership`: joint consensus, learners and leadership transfer
//!   (thesis §4.3, §3.10);
//! - `repair`: a node whose storage found damage, and one that lost its
//!   term and vote (fencing the terms it may have voted in);
//! - quorum counting is in `super::quorum`, per-follower progress in
//!   `super::progress`.
//!
//! This file holds the `Core` type, its driving contract, its queries and
//! the common step: the term checks every message goes through, then one
//! dispatch on the role.

mod election;
mod follower;
mod leader;
mod membership;
mod repair;
mod types;

use std::collections::BTreeMap;

use super::config::Config;
use super::log::RaftLog;
use super::message::*;
use super::progress::Progress;
use super::rng::SplitMix64;
use crate::types::{HardState, LogIndex, LogStart, Membership, NodeId, Term};

pub use self::types::*;

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
    /// See [`Status::replication_probes`].
    replication_probes: u64,
    /// Hard state lost: this incarnation's nonce for its term probes.
    probe_nonce: u64,
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
        let stored = [
            ("term", hard_state.term, TERM_MAX),
            ("log start previous term", log_start.prev_term, TERM_MAX),
            ("log start first index", first_index, LOG_INDEX_MAX),
            ("last index", last_index, LOG_INDEX_MAX),
        ];
        let last_run_term = term_runs.last().map_or(0, |&(_, term)| term);
        for (field, value, max) in
            stored
                .into_iter()
                .chain([("last entry term", last_run_term, TERM_MAX)])
        {
            if value > max {
                return Err(InitError::OutOfRange { field, value, max });
            }
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
            replication_probes: 0,
            probe_nonce: 0,
            start_term: hard_state.term,
            term_reports: BTreeMap::new(),
            repair_log_intact: repair.is_some_and(|r| last_index >= r.until_index),
            config,
        };
        core.probe_nonce = core.rng.next_u64();
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

    /// Leader: the node a leadership transfer under way hands over to
    /// (`None` once it finished or timed out).
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|(to, _)| to)
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
            replication_probes: self.replication_probes,
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

    /// Handles one message from peer `from`.
    pub fn step(&mut self, from: NodeId, message: Message) -> Result<(), StepError> {
        if from == self.config.id {
            return Err(StepError::FromSelf { from });
        }
        check_ranges(from, &message)?;
        match message {
            Message::TermProbe(probe) => {
                // Answered whatever our role and term, changing nothing.
                let term = self.term();
                self.send(
                    from,
                    Message::TermProbeResponse(TermProbeResponse {
                        term,
                        nonce: probe.nonce,
                    }),
                );
                return Ok(());
            }
            Message::TermProbeResponse(report) => {
                self.record_term_report(from, report);
                return Ok(());
            }
            _ => {}
        }
        if self.repair.is_some_and(|r| r.hard_state_lost) {
            match &message {
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
                // Only a voter can be a transfer target, so only a voter's
                // transfer flag overrides the lease (a learner or a stranger
                // claiming a transfer must not depose a live leader).
                let transfer = request.leadership_transfer && self.log.membership().is_voter(from);
                if self.in_leader_lease() && !transfer {
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
        debug_assert!(
            self.commit_index <= self.log.last_index,
            "the commit index is within the log"
        );
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

    pub(super) fn is_voter(&self) -> bool {
        self.log.membership().is_voter(self.config.id)
    }

    pub(super) fn send(&mut self, to: NodeId, message: Message) {
        self.messages.push((to, message));
    }
}

/// Refuses a message carrying a term or an index beyond what any honest
/// cluster reaches ([`TERM_MAX`], [`LOG_INDEX_MAX`]), so that no arithmetic on
/// a value from the wire (`term + 1`, `prev_log_index + count`,
/// `last_index + 1`) can overflow.
fn check_ranges(from: NodeId, message: &Message) -> Result<(), StepError> {
    let check = |field: &'static str, value: u64, max: u64| {
        if value > max {
            Err(StepError::OutOfRange {
                from,
                field,
                value,
                max,
            })
        } else {
            Ok(())
        }
    };
    let term = |field, value| check(field, value, TERM_MAX);
    let index = |field, value| check(field, value, LOG_INDEX_MAX);
    term("term", message.term())?;
    match message {
        Message::RequestVote(m) => {
            index("last_log_index", m.last_log_index)?;
            term("last_log_term", m.last_log_term)
        }
        Message::AppendEntries(m) => {
            index("prev_log_index", m.prev_log_index)?;
            term("prev_log_term", m.prev_log_term)?;
            index("leader_commit", m.leader_commit)?;
            let count = m.entries.len() as u64;
            index(
                "prev_log_index + entry count",
                m.prev_log_index.saturating_add(count),
            )?;
            m.entries
                .iter()
                .try_for_each(|entry| term("entry term", entry.term))
        }
        Message::AppendEntriesResponse(m) => match m.outcome {
            AppendOutcome::Accepted { match_index } => index("match_index", match_index),
            AppendOutcome::Rejected {
                rejected_prev_index,
                hint,
            } => {
                index("rejected_prev_index", rejected_prev_index)?;
                match hint {
                    RejectHint::LogTooShort { last_index } => index("hint last_index", last_index),
                    RejectHint::ConflictingTerm {
                        term: t,
                        first_index,
                    } => {
                        term("hint term", t)?;
                        index("hint first_index", first_index)
                    }
                }
            }
        },
        Message::InstallLogStart(m) => {
            index("log_start.first_index", m.log_start.first_index)?;
            term("log_start.prev_term", m.log_start.prev_term)
        }
        Message::InstallLogStartResponse(m) => index("match_index", m.match_index),
        Message::RequestVoteResponse(_)
        | Message::TimeoutNow(_)
        | Message::TermProbe(_)
        | Message::TermProbeResponse(_) => Ok(()),
    }
}
