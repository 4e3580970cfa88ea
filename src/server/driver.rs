//! The driver: the one task that owns the consensus core and writes the log.
//!
//! Each turn of its loop takes one event (a tick, a peer message, a client
//! request, a finished sync), then drains whatever else is already waiting
//! (bounded), so proposals arriving together become one append and one sync.
//! Then it applies the core's `Ready` in the order the core's contract
//! demands: reset / truncate / append the log, make hard state durable, and
//! only then send messages. Group commit runs on a blocking thread while
//! appends and sends go on; its completion comes back as an event.
//!
//! Invariants kept here:
//! - an entry counts toward commit on this node only after a sync covering it
//!   (`--fsync always`), because `persisted` is only reported then;
//! - a client is answered with an index only once that index is committed and
//!   still holds the entry of the term it was proposed in;
//! - the commit index published to consumers never decreases.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::config::{Fsync, ServerConfig};
use super::metrics::{self, FrameSource, Metrics, RejectLabels};
use super::producers::{self, Admission, ProducerTable};
use super::resolve::{Resolution, Resolver};
use super::stages::{Stage, StageClock};
use crate::net::peers::{Lane, PeerLinks};
use crate::raft::{
    AppendOutcome, Core, LogReadError, LogReader, MembershipChange, MembershipChangeError, Message,
    Proposal, ProposeError, Ready, Role, TransferError,
};
use crate::storage::{Log, RetentionPolicy, StorageError, SyncDone};
use crate::types::{
    AppendedIndexes, Entry, EntryKind, LogIndex, LogStart, Membership, NodeId, ProducerSeq, Term,
};
use crate::wire::client::{
    AdminRequest, AppendRequest, ClientRequest, ClientResponse, ClusterStatus, ErrorResponse,
    NodeRole, NodeStatus,
};
use crate::wire::peer::PeerLane;

/// The log, shared between the driver (the only writer) and consumer tasks.
pub type SharedLog = Arc<RwLock<Log>>;

/// What consumers may read: the commit index and where the log starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Commit {
    pub commit_index: LogIndex,
    pub first_index: LogIndex,
}

/// A request from a client task.
pub enum DriverRequest {
    Append {
        request: AppendRequest,
        reply: oneshot::Sender<ClientResponse>,
        /// When the request was read off its stream (for the stage timings).
        received: Instant,
    },
    /// Status and admin requests.
    Other {
        request: ClientRequest,
        reply: oneshot::Sender<ClientResponse>,
    },
}

/// Events handled per turn beyond the first, at most: bounds the time one
/// turn takes so ticks and heartbeats stay on time under load.
pub const EVENTS_PER_TURN_MAX: usize = 1024;
/// Client requests queued for the driver, at most (then clients wait).
pub const REQUEST_QUEUE_MAX: usize = 4096;
/// Records in one append request, at most.
pub const RECORDS_PER_APPEND_MAX: usize = crate::wire::client::RECORDS_PER_APPEND_MAX;
/// How long an admin request waits for its change to take effect.
pub const ADMIN_WAIT: Duration = Duration::from_secs(10);
/// A learner is promoted once it is this close to the leader's last index.
pub const LEARNER_CATCH_UP_ENTRIES: u64 = 1024;

struct PendingAppend {
    /// Where the append's records are, in request order.
    indexes: AppendedIndexes,
    /// The term of the entry at the highest of them (the key of
    /// `pending_appends`) when the append was taken: if the log holds
    /// another term there when it commits, they were replaced and the
    /// client must retry. Same term there: the same log up to it (log
    /// matching), so every lower index is unchanged too.
    term: Term,
    reply: oneshot::Sender<ClientResponse>,
}

enum AdminGoal {
    /// Node `id` is a voter of a committed, non-joint membership.
    Voter(NodeId),
    /// Node `id` is in no committed, non-joint membership.
    Removed(NodeId),
    /// Node `id` leads.
    Leader(NodeId),
}

struct PendingAdmin {
    goal: AdminGoal,
    deadline: Instant,
    reply: oneshot::Sender<ClientResponse>,
}

pub struct Driver {
    pub config: ServerConfig,
    pub core: Core,
    pub log: SharedLog,
    pub links: Arc<PeerLinks>,
    pub metrics: Metrics,
    pub commit_tx: watch::Sender<Commit>,
    pub producers: ProducerTable,
    /// Producer entries up to this index are in the table already.
    pub producers_recorded_index: LogIndex,
    /// Appends waiting for their highest index to commit. Several may wait
    /// on one index: a batch retried (on another stream) while the original
    /// still waits is answered with the same indexes, and both get them.
    pending_appends: BTreeMap<LogIndex, Vec<PendingAppend>>,
    pending_admin: Vec<PendingAdmin>,
    sync_in_flight: bool,
    /// Index of the latest config entry, to know when a membership is committed.
    membership_index: LogIndex,
    /// Learners a promotion was proposed for in this term.
    promoting: BTreeSet<NodeId>,
    /// Every config entry still in the log, to know the membership in force
    /// at a new log start when retention drops segments.
    config_history: BTreeMap<LogIndex, Membership>,
    /// Members' names, resolved off the runtime threads.
    resolver: Resolver,
    /// Non-members whose dropped frames were logged (once each).
    non_members_logged: BTreeSet<NodeId>,
    /// Times the stages of appends in flight (`stages`).
    stage_clock: StageClock,
}

/// Non-member node ids remembered for logging once; beyond it drops are
/// only counted (ids come from CA-signed certificates, so this bounds what
/// an operator who issued many stray certificates can make us remember).
pub const NON_MEMBERS_LOGGED_MAX: usize = 1024;

/// The events the driver waits on.
pub struct DriverInputs {
    pub requests: mpsc::Receiver<DriverRequest>,
    pub peer_frames: crate::net::PeerInbound,
    pub shutdown: watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    #[error("the log lock is poisoned (a reader panicked)")]
    Poisoned,
    /// A read found a damaged entry; it is recorded in the repair marker,
    /// and the node must be restarted to cut its log and repair it.
    #[error("storage damage found at entry {index} ({reason}); recorded for repair at restart")]
    Damaged { index: LogIndex, reason: String },
}

/// Why reading the stored log at start failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Entry `index` is unreadable (a checksum failed): the log is damaged there.
    #[error("entry {index} is damaged: {source}")]
    Damaged {
        index: LogIndex,
        #[source]
        source: StorageError,
    },
}

/// The first index in `low..=high` whose entry cannot be read, reading one
/// entry at a time (only after a batch read failed).
pub fn first_unreadable_index(log: &Log, low: LogIndex, high: LogIndex) -> Option<LogIndex> {
    (low..=high.min(log.last_index())).find(|&index| log.entries(index, index, 1).is_err())
}

/// Reads entries for replication straight from the mapped log.
struct StorageReader<'a>(&'a Log);

impl LogReader for StorageReader<'_> {
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, LogReadError> {
        if low < self.0.first_index() {
            return Err(LogReadError::Compacted { index: low });
        }
        self.0
            .entries(low, high, usize::try_from(bytes_max).unwrap_or(usize::MAX))
            .map_err(|error| LogReadError::Storage {
                low,
                high,
                source: Box::new(error),
            })
    }
}

/// A repairing node that finds no leader for long says so loudly: when a
/// majority lost the same committed entries no leader can be elected, and
/// an operator must restore a node from a backup or accept the loss.
#[derive(Default)]
struct StalledRepair {
    leaderless_since: Option<Instant>,
    last_report: Option<Instant>,
}

impl StalledRepair {
    /// Election timeouts without a leader before a repairing node reports.
    const TIMEOUTS_BEFORE_REPORT: u32 = 20;
    const REPORT_EVERY: Duration = Duration::from_secs(60);

    fn check(&mut self, core: &Core, election_timeout_max: Duration) {
        let Some(repair) = core.status().repair else {
            *self = StalledRepair::default();
            return;
        };
        if core.leader().is_some() {
            self.leaderless_since = None;
            return;
        }
        let now = Instant::now();
        let since = *self.leaderless_since.get_or_insert(now);
        let stalled =
            now.duration_since(since) >= election_timeout_max * Self::TIMEOUTS_BEFORE_REPORT;
        let due = self
            .last_report
            .map_or(true, |at| now.duration_since(at) >= Self::REPORT_EVERY);
        if stalled && due {
            self.last_report = Some(now);
            error!(
                until_index = repair.until_index,
                leaderless_for = ?now.duration_since(since),
                "this node cannot finish its repair: no leader is elected. If a majority of the nodes lost the same entries, those entries cannot be repaired from the cluster; check `raftlog verify` on every node"
            );
        }
    }
}

fn refused(error: ErrorResponse) -> ClientResponse {
    ClientResponse::Error(error)
}

/// Why an append whose sequences run past `u64::MAX` is refused.
fn sequence_overflow(producer_id: u64, sequence: u64, count: usize) -> String {
    format!(
        "producer {producer_id}: sequence {sequence} with {count} records runs past the last usable sequence 2^64 - 2 (sequence + record_count must be at most 2^64 - 1)"
    )
}

fn invalid(reason: impl Into<String>) -> ClientResponse {
    refused(ErrorResponse::InvalidRequest {
        reason: reason.into(),
    })
}

fn node_role(role: Role, is_learner: bool) -> NodeRole {
    if is_learner {
        return NodeRole::Learner;
    }
    match role {
        Role::Leader => NodeRole::Leader,
        Role::Candidate | Role::PreCandidate => NodeRole::Candidate,
        Role::Follower => NodeRole::Follower,
    }
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: ServerConfig,
        core: Core,
        log: SharedLog,
        links: Arc<PeerLinks>,
        metrics: Metrics,
        commit_tx: watch::Sender<Commit>,
        producers: ProducerTable,
        producers_recorded_index: LogIndex,
        config_history: BTreeMap<LogIndex, Membership>,
    ) -> Driver {
        let membership_index = config_history
            .keys()
            .next_back()
            .copied()
            .unwrap_or_else(|| core.first_index().saturating_sub(1));
        Driver {
            config,
            core,
            log,
            links,
            metrics,
            commit_tx,
            producers,
            producers_recorded_index,
            pending_appends: BTreeMap::new(),
            pending_admin: Vec::new(),
            sync_in_flight: false,
            membership_index,
            promoting: BTreeSet::new(),
            config_history,
            resolver: Resolver::new(),
            non_members_logged: BTreeSet::new(),
            stage_clock: StageClock::default(),
        }
    }

    /// Runs until shutdown; on the way out a leader hands over leadership
    /// (best effort, bounded) and the log is synced.
    pub async fn run(mut self, mut inputs: DriverInputs) -> Result<(), DriverError> {
        let mut ticker = tokio::time::interval(super::config::TICK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (sync_tx, mut sync_rx) = mpsc::channel::<Result<(SyncDone, Duration), StorageError>>(4);
        let mut last_expiry = Instant::now();
        let mut stalled_repair = StalledRepair::default();
        let mut draining_since: Option<Instant> = None;
        let mut resolved = self.resolver.changed();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.core.tick();
                    if last_expiry.elapsed() > Duration::from_secs(1) {
                        self.producers.expire(Instant::now());
                        self.expire_admin();
                        self.apply_retention()?;
                        stalled_repair.check(&self.core, self.config.election_timeout_max);
                        last_expiry = Instant::now();
                    }
                    self.promote_caught_up_learners();
                }
                Ok(()) = resolved.changed() => self.refresh_peer_links(),
                Some((from, frame)) = inputs.peer_frames.recv() => {
                    self.on_peer_frame(from, frame);
                    for _ in 0..EVENTS_PER_TURN_MAX {
                        match inputs.peer_frames.try_recv() {
                            Ok((from, frame)) => self.on_peer_frame(from, frame),
                            Err(_) => break,
                        }
                    }
                }
                Some(request) = inputs.requests.recv() => {
                    self.on_request(request);
                    for _ in 0..EVENTS_PER_TURN_MAX {
                        match inputs.requests.try_recv() {
                            Ok(request) => self.on_request(request),
                            Err(_) => break,
                        }
                    }
                }
                Some(done) = sync_rx.recv() => {
                    self.sync_in_flight = false;
                    let (done, took) = done?;
                    self.metrics.fsync_seconds.observe(took.as_secs_f64());
                    let mut log = self.log.write().map_err(|_| DriverError::Poisoned)?;
                    let index = log.mark_synced(done);
                    let term = log.term_at(index)?.unwrap_or(0);
                    drop(log);
                    self.stage_clock.synced(&self.metrics.stages, index, Instant::now());
                    if index > 0 {
                        self.core.persisted(index, term);
                    }
                }
                changed = inputs.shutdown.changed(), if draining_since.is_none() => {
                    if changed.is_err() || *inputs.shutdown.borrow() {
                        draining_since = Some(Instant::now());
                        self.hand_over_leadership();
                    }
                }
            }
            self.process_ready()?;
            self.maybe_start_sync(&sync_tx)?;
            if let Some(since) = draining_since {
                let handed_over = self.core.role() != Role::Leader;
                if handed_over || since.elapsed() > self.config.election_timeout_max * 2 {
                    return self.finish();
                }
            }
        }
    }

    fn finish(&mut self) -> Result<(), DriverError> {
        if self.config.fsync == Fsync::Always {
            self.log
                .write()
                .map_err(|_| DriverError::Poisoned)?
                .sync()?;
        }
        self.fail_pending_appends(refused(ErrorResponse::ShuttingDown));
        Ok(())
    }

    /// A leader that is asked to stop passes leadership to the most
    /// caught-up voter, so the cluster does not wait an election timeout.
    fn hand_over_leadership(&mut self) {
        if self.core.role() != Role::Leader {
            return;
        }
        let membership = self.core.membership().clone();
        let target = self
            .core
            .status()
            .peers
            .into_iter()
            .filter(|peer| membership.is_voter(peer.id) && peer.recently_heard)
            .max_by_key(|peer| peer.match_index);
        if let Some(peer) = target {
            info!(to = peer.id, "shutting down: transferring leadership");
            let _ = self.core.transfer_leadership(peer.id);
        }
    }

    /// Whether a frame from `from` may reach the core: a node certificate
    /// proves only which id its holder has, not that the id belongs to the
    /// cluster, so a node outside the current configuration (never added,
    /// or removed) must not vote, raise terms, campaign or append. Admitted:
    /// - every member of the configuration in force (voters of both halves
    ///   of a joint configuration and learners);
    /// - the leader we follow, even when it is not a member: a leader that
    ///   removed itself leads until the new configuration commits and needs
    ///   our acknowledgements for it (it became our leader while a member);
    /// - anyone while we know no configuration at all (a node started with
    ///   `--join` learns it from the leader that adds it).
    ///
    /// Known gap: a node whose log stopped before the entry that added node
    /// N (it was down meanwhile) does not hear N if N leads when it comes
    /// back; it rejoins once a node it knows leads. Closing it needs the
    /// core to say which configuration a leader's messages come from.
    fn admits_peer(&self, from: NodeId) -> bool {
        let membership = self.core.membership();
        membership.addrs.is_empty()
            || membership.addrs.contains_key(&from)
            || self.core.leader() == Some(from)
    }

    fn drop_non_member_frame(&mut self, from: NodeId) {
        self.metrics.peer_frames_dropped_non_member.inc();
        if self.non_members_logged.contains(&from) {
            return;
        }
        if self.non_members_logged.len() < NON_MEMBERS_LOGGED_MAX {
            self.non_members_logged.insert(from);
            warn!(
                peer = from,
                membership = %describe_membership(self.core.membership()),
                "dropping messages from a node that is not a member of the current configuration (logged once per node; counted in raftlog_peer_frames_dropped_non_member)"
            );
        }
    }

    fn on_peer_frame(&mut self, from: NodeId, frame: Bytes) {
        if !self.admits_peer(from) {
            self.drop_non_member_frame(from);
            return;
        }
        let message = match crate::wire::peer::decode_message(frame) {
            Ok(message) => message,
            Err(error) => {
                self.reject_peer_frame(from, &error.to_string());
                return;
            }
        };
        // What the leader says is committed, for `/readyz`: how far behind
        // this node is. Committed indexes never go back, so the highest
        // heard from any leader still stands.
        let leader_commit = match &message {
            Message::AppendEntries(append) => {
                if let Some(last) = append.entries.last() {
                    self.stage_clock
                        .received_entries(last.index, Instant::now());
                }
                Some(append.leader_commit)
            }
            Message::AppendEntriesResponse(response) => {
                if let AppendOutcome::Accepted { match_index } = response.outcome {
                    self.stage_clock
                        .acked(&self.metrics.stages, from, match_index, Instant::now());
                }
                None
            }
            _ => None,
        };
        if let Err(error) = self.core.step(from, message) {
            self.reject_peer_frame(from, &error.to_string());
        } else if let Some(commit) = leader_commit.filter(|_| self.core.leader() == Some(from)) {
            let commit = i64::try_from(commit).unwrap_or(i64::MAX);
            if commit > self.metrics.leader_commit_index.get() {
                self.metrics.leader_commit_index.set(commit);
            }
        }
    }

    fn reject_peer_frame(&self, from: NodeId, reason: &str) {
        self.metrics
            .rejected_frames
            .get_or_create(&RejectLabels {
                source: FrameSource::Peer,
            })
            .inc();
        warn!(peer = from, reason, "refused a peer message");
    }

    /// The answer of a node that cannot take a leader's request: where the
    /// leader is, when known.
    fn not_leader(&self) -> ClientResponse {
        let leader_id = self.core.leader().filter(|&id| id != self.config.id);
        match leader_id {
            Some(id) => refused(ErrorResponse::NotLeader {
                leader_id: Some(id),
                leader_addr: self.core.membership().addrs.get(&id).cloned(),
            }),
            None => refused(ErrorResponse::Unavailable),
        }
    }

    fn on_request(&mut self, request: DriverRequest) {
        match request {
            DriverRequest::Append {
                request,
                reply,
                received,
            } => {
                self.metrics.stages.record(Stage::Queue, received.elapsed());
                self.on_append(request, reply)
            }
            DriverRequest::Other { request, reply } => match request {
                ClientRequest::Status => {
                    let _ = reply.send(self.status_response());
                }
                ClientRequest::Admin(admin) => self.on_admin(admin, reply),
                _ => {
                    let _ = reply.send(invalid("appends and consumes need a stream of their own"));
                }
            },
        }
    }

    fn on_append(&mut self, request: AppendRequest, reply: oneshot::Sender<ClientResponse>) {
        let refuse = |reply: oneshot::Sender<ClientResponse>, response| {
            let _ = reply.send(response);
        };
        if self.core.role() != Role::Leader {
            return refuse(reply, self.not_leader());
        }
        let count = request.records.len();
        if count == 0 {
            return refuse(reply, invalid("an append needs at least one record"));
        }
        if let Err(error) = request.check_limits(self.config.record_bytes_max) {
            return refuse(reply, refused(error));
        }
        // The first `known` records are in the log already (a re-send), at
        // `known_indexes`; the rest are new.
        let (known, known_indexes) = match request.producer {
            None => (0, AppendedIndexes::default()),
            Some(producer) => match self.producers.admit(
                producer.producer_id,
                producer.sequence,
                &request.records,
            ) {
                Admission::Append { known, indexes } => (known, indexes),
                Admission::Gap { expected, got } => {
                    return refuse(
                        reply,
                        refused(ErrorResponse::SequenceGap {
                            producer_id: producer.producer_id,
                            expected,
                            got,
                        }),
                    );
                }
                Admission::PayloadMismatch { sequence, index } => {
                    return refuse(
                        reply,
                        refused(ErrorResponse::PayloadMismatch {
                            producer_id: producer.producer_id,
                            sequence,
                            index,
                        }),
                    );
                }
                Admission::SequenceOverflow => {
                    return refuse(
                        reply,
                        invalid(sequence_overflow(
                            producer.producer_id,
                            producer.sequence,
                            count,
                        )),
                    );
                }
                Admission::DuplicateForgotten { sequence } => {
                    return refuse(
                        reply,
                        invalid(format!(
                            "producer {}: sequence {sequence} was appended long ago and its index is forgotten (a node remembers a producer's newest {} runs and {} records); it is not appended again",
                            producer.producer_id,
                            producers::RUNS_PER_PRODUCER_MAX,
                            producers::RECORDS_PER_PRODUCER_MAX,
                        )),
                    );
                }
            },
        };
        if known >= count {
            // Every record is in the log: answer with the original indexes
            // once they are committed.
            let Some((_, highest)) = known_indexes.bounds() else {
                return refuse(reply, invalid("an append needs at least one record"));
            };
            let term = self.core.term_at(highest).unwrap_or(0);
            self.wait_for_commit(known_indexes, highest, term, reply);
            return;
        }
        // Record `offset` of the new ones has sequence `sequence + known +
        // offset`: `admit` refused a batch whose sequences pass u64::MAX,
        // checked again here.
        let new_records: Vec<Bytes> = request.records.into_iter().skip(known).collect();
        let digests: Vec<producers::Digest> = match request.producer {
            Some(_) => new_records
                .iter()
                .map(|payload| producers::digest(payload))
                .collect(),
            None => Vec::new(),
        };
        let first_new_sequence = request
            .producer
            .map(|producer| producer.sequence.checked_add(known as u64));
        let mut proposals: Vec<Proposal> = Vec::with_capacity(new_records.len());
        for (offset, payload) in (0u64..).zip(new_records) {
            let producer = match (request.producer, first_new_sequence) {
                (Some(producer), Some(Some(first))) => match first.checked_add(offset) {
                    Some(sequence) => Some(ProducerSeq {
                        producer_id: producer.producer_id,
                        sequence,
                    }),
                    None => {
                        let reason =
                            sequence_overflow(producer.producer_id, producer.sequence, count);
                        return refuse(reply, invalid(reason));
                    }
                },
                (Some(producer), _) => {
                    let reason = sequence_overflow(producer.producer_id, producer.sequence, count);
                    return refuse(reply, invalid(reason));
                }
                (None, _) => None,
            };
            proposals.push(Proposal { producer, payload });
        }
        let accepted = Instant::now();
        match self.core.propose(proposals) {
            Ok(range) => {
                let (first_index, last_index) = (*range.start(), *range.end());
                if let (Some(producer), Some(Some(first))) = (request.producer, first_new_sequence)
                {
                    let now = Instant::now();
                    for ((index, sequence), digest) in
                        (first_index..=last_index).zip(first..).zip(&digests)
                    {
                        self.producers
                            .record(producer.producer_id, sequence, index, *digest, now);
                    }
                    self.producers_recorded_index = self.producers_recorded_index.max(last_index);
                }
                // The known records first (request order), then the new ones.
                let mut indexes = known_indexes;
                let new_count = last_index.saturating_sub(first_index).saturating_add(1);
                if indexes.push_run(first_index, new_count).is_none() {
                    return refuse(
                        reply,
                        refused(ErrorResponse::Internal {
                            reason: format!(
                                "proposed an impossible index range {first_index}..={last_index}"
                            ),
                        }),
                    );
                }
                let term = self.core.term();
                // Also what `raftlog_commit_seconds` observes (a re-sent
                // batch already in the log is not proposed, so not timed).
                self.stage_clock.proposed(last_index, accepted);
                self.wait_for_commit(indexes, last_index, term, reply);
            }
            Err(ProposeError::NotLeader { .. }) => refuse(reply, self.not_leader()),
            // Routine, not the caller's fault: the client waits and retries.
            Err(ProposeError::TransferInProgress { .. }) => {
                refuse(reply, refused(ErrorResponse::ChangeInProgress))
            }
            Err(ProposeError::Backpressure { .. }) => refuse(reply, refused(ErrorResponse::Busy)),
            Err(error) => refuse(reply, invalid(error.to_string())),
        }
    }

    /// Answers `indexes` once `highest` (the highest of them) is committed.
    fn wait_for_commit(
        &mut self,
        indexes: AppendedIndexes,
        highest: LogIndex,
        term: Term,
        reply: oneshot::Sender<ClientResponse>,
    ) {
        if highest <= self.core.commit_index() {
            let _ = reply.send(ClientResponse::appended(indexes));
            return;
        }
        self.pending_appends
            .entry(highest)
            .or_default()
            .push(PendingAppend {
                indexes,
                term,
                reply,
            });
    }

    /// Answers every pending append whose entries are now committed.
    fn answer_committed(&mut self, commit_index: LogIndex) {
        while let Some(entry) = self.pending_appends.first_entry() {
            let last_index = *entry.key();
            if last_index > commit_index {
                break;
            }
            let term = self.core.term_at(last_index);
            for pending in entry.remove() {
                let response = if term == Some(pending.term) {
                    ClientResponse::appended(pending.indexes)
                } else {
                    refused(ErrorResponse::Unavailable)
                };
                let _ = pending.reply.send(response);
            }
        }
    }

    fn fail_pending_appends(&mut self, response: ClientResponse) {
        for pending in std::mem::take(&mut self.pending_appends)
            .into_values()
            .flatten()
        {
            let _ = pending.reply.send(response.clone());
        }
    }

    fn status_response(&self) -> ClientResponse {
        let status = self.core.status();
        if status.soft_state.role != Role::Leader
            && status
                .soft_state
                .leader
                .is_some_and(|id| id != self.config.id)
        {
            return self.not_leader();
        }
        let membership = self.core.membership();
        let nodes = membership
            .addrs
            .iter()
            .map(|(&id, addr)| {
                let peer = status.peers.iter().find(|peer| peer.id == id);
                let is_self = id == self.config.id;
                NodeStatus {
                    id,
                    addr: addr.clone(),
                    role: if is_self {
                        node_role(status.soft_state.role, membership.is_learner(id))
                    } else if Some(id) == status.soft_state.leader {
                        NodeRole::Leader
                    } else if membership.is_learner(id) {
                        NodeRole::Learner
                    } else {
                        NodeRole::Follower
                    },
                    match_index: if is_self {
                        Some(status.persisted_index)
                    } else {
                        peer.map(|peer| peer.match_index)
                    },
                    reachable: is_self || peer.is_some_and(|peer| peer.recently_heard),
                    repairing: if is_self {
                        status.repair.is_some()
                    } else {
                        peer.is_some_and(|peer| peer.repairing)
                    },
                }
            })
            .collect();
        ClientResponse::Status(ClusterStatus {
            leader: status.soft_state.leader,
            term: status.soft_state.term,
            commit_index: status.commit_index,
            log_start: status.first_index,
            last_index: status.last_index,
            nodes,
        })
    }

    /// Starts an admin change; the answer goes out when it takes effect
    /// (or when it is refused, or times out).
    fn on_admin(&mut self, request: AdminRequest, reply: oneshot::Sender<ClientResponse>) {
        if self.core.role() != Role::Leader {
            let _ = reply.send(self.not_leader());
            return;
        }
        let result = match &request {
            AdminRequest::AddNode { id, addr } => self
                .core
                .propose_membership_change(MembershipChange::AddLearner {
                    id: *id,
                    addr: addr.clone(),
                })
                .map(|_| AdminGoal::Voter(*id))
                .map_err(membership_error),
            AdminRequest::RemoveNode { id } => self
                .core
                .propose_membership_change(MembershipChange::Remove { id: *id })
                .map(|_| AdminGoal::Removed(*id))
                .map_err(membership_error),
            AdminRequest::TransferLeader { id } => self
                .core
                .transfer_leadership(*id)
                .map(|()| AdminGoal::Leader(*id))
                .map_err(|error| match error {
                    TransferError::NotVoter { to } => ErrorResponse::UnknownNode { id: to },
                    error => ErrorResponse::ChangeRefused {
                        reason: error.to_string(),
                    },
                }),
        };
        match result {
            Ok(goal) => self.pending_admin.push(PendingAdmin {
                goal,
                deadline: Instant::now() + ADMIN_WAIT,
                reply,
            }),
            Err(reason) => {
                let _ = reply.send(refused(reason));
            }
        }
    }

    fn membership_committed(&self) -> bool {
        self.membership_index <= self.core.commit_index() && !self.core.membership().is_joint()
    }

    /// Answers admin requests whose change took effect.
    fn check_admin(&mut self) {
        let membership = self.core.membership().clone();
        let committed = self.membership_committed();
        let leader = self.core.leader();
        let pending = std::mem::take(&mut self.pending_admin);
        let leading = self.core.role() == Role::Leader;
        let transfer_target = self.core.transfer_target();
        for admin in pending {
            let done = match admin.goal {
                AdminGoal::Voter(id) => committed && membership.voters.contains(&id),
                AdminGoal::Removed(id) => committed && !membership.addrs.contains_key(&id),
                AdminGoal::Leader(id) => leader == Some(id),
            };
            // A transfer that cannot succeed any more is answered now, not
            // after ADMIN_WAIT: the caller may retry at once.
            let failed = match admin.goal {
                AdminGoal::Leader(id) if !done && leading && transfer_target != Some(id) => Some(
                    format!("the transfer to node {id} did not finish within an election timeout (is it caught up?); this node still leads"),
                ),
                AdminGoal::Leader(id) => match leader {
                    Some(other) if other != id && other != self.config.id => Some(format!(
                        "node {other} won the election instead of node {id}"
                    )),
                    _ => None,
                },
                _ => None,
            };
            if done {
                let _ = admin.reply.send(ClientResponse::Admin(membership.clone()));
            } else if let Some(reason) = failed {
                let _ = admin
                    .reply
                    .send(refused(ErrorResponse::ChangeRefused { reason }));
            } else {
                self.pending_admin.push(admin);
            }
        }
    }

    fn expire_admin(&mut self) {
        let now = Instant::now();
        let membership = describe_membership(self.core.membership());
        let (expired, waiting) = std::mem::take(&mut self.pending_admin)
            .into_iter()
            .partition(|admin| now >= admin.deadline);
        self.pending_admin = waiting;
        for admin in expired {
            let _ = admin.reply.send(refused(ErrorResponse::Internal {
                reason: format!(
                    "the change did not take effect within {ADMIN_WAIT:?}; membership now: {membership}"
                ),
            }));
        }
    }

    /// The leader promotes a learner once it has nearly caught up, so a new
    /// node never votes (or counts toward a quorum) while far behind.
    fn promote_caught_up_learners(&mut self) {
        if self.core.role() != Role::Leader || !self.membership_committed() {
            return;
        }
        let last_index = self.core.last_index();
        let learners = self.core.membership().learners.clone();
        let status = self.core.status();
        for peer in status.peers {
            if learners.contains(&peer.id)
                && peer.match_index.saturating_add(LEARNER_CATCH_UP_ENTRIES) >= last_index
                && !self.promoting.contains(&peer.id)
            {
                match self
                    .core
                    .propose_membership_change(MembershipChange::PromoteLearner { id: peer.id })
                {
                    Ok(_) => {
                        info!(node = peer.id, "learner caught up: promoting to voter");
                        self.promoting.insert(peer.id);
                    }
                    Err(error) => warn!(node = peer.id, %error, "cannot promote learner yet"),
                }
                return; // one change at a time
            }
        }
    }

    /// Applies every pending `Ready`, in the order the core's contract requires.
    fn process_ready(&mut self) -> Result<(), DriverError> {
        loop {
            let ready = {
                let log = self.log.read().map_err(|_| DriverError::Poisoned)?;
                self.core.take_ready(&StorageReader(&log))
            };
            if ready.is_empty() {
                return Ok(());
            }
            self.apply_ready(ready)?;
        }
    }

    fn apply_ready(&mut self, ready: Ready) -> Result<(), DriverError> {
        let Ready {
            log_start_reset,
            truncate_from,
            entries,
            hard_state,
            messages,
            commit_index,
            soft_state,
            membership,
            read_errors,
            repair_complete,
        } = ready;
        {
            let shared_log = self.log.clone();
            let mut log = shared_log.write().map_err(|_| DriverError::Poisoned)?;
            if let Some(start) = log_start_reset {
                info!(
                    first_index = start.first_index,
                    "log reset to the leader's log start"
                );
                log.reset(start.clone())?;
                // The leader's table as of its log start: what the entries
                // this node no longer gets appended. The entries from
                // `first_index` on are recorded as they arrive.
                self.producers = producer_table_at(&start, self.config.producer_expiry);
                // A leader's log start: the codec refuses first_index 0.
                self.producers_recorded_index = start.first_index.saturating_sub(1);
                self.membership_index = start.first_index.saturating_sub(1);
                self.config_history.clear();
            }
            if let Some(from_index) = truncate_from {
                self.stage_clock.clear();
                log.truncate_suffix(from_index)?;
                self.producers.truncate_from(from_index);
                self.config_history.split_off(&from_index);
                self.producers_recorded_index = self
                    .producers_recorded_index
                    .min(from_index.saturating_sub(1));
            }
            if !entries.is_empty() {
                log.append(&entries)?;
                self.note_appended(&entries);
                let now = Instant::now();
                if self.config.fsync == Fsync::Never {
                    let last = log.last_index();
                    let term = log.last_term();
                    self.stage_clock.synced(&self.metrics.stages, last, now);
                    self.core.persisted(last, term);
                } else {
                    self.stage_clock.written(now);
                }
            }
            if let Some(state) = hard_state {
                // Durable before any message of this Ready leaves: a vote is
                // never sent before it is on disk.
                log.store_hard_state(&state)?;
            }
            if repair_complete {
                // After this Ready's hard state: the node votes from now on.
                log.clear_repair()?;
                info!("repair complete: the log is whole again; voting again");
            }
            if let Some(job) = log.spare_job() {
                // Allocating and syncing a whole segment takes a while: do it
                // on a blocking thread, not under this lock, so the next roll
                // only writes a header.
                let shared_log = shared_log.clone();
                tokio::task::spawn_blocking(move || {
                    let spare = job.run();
                    if let Ok(mut log) = shared_log.write() {
                        log.install_spare(spare);
                    }
                });
            }
        }
        // In steady state every follower gets the same AppendEntries; encode
        // it once (each entry's checksum is computed in the encoding).
        let mut last_encoded: Option<(Message, Bytes)> = None;
        let sent_at = Instant::now();
        for (to, message) in messages {
            if let Message::AppendEntries(append) = &message {
                if let Some(last) = append.entries.last() {
                    self.stage_clock.sent_entries(to, last.index, sent_at);
                }
            }
            let lane = match PeerLane::of(&message) {
                PeerLane::Replication => Lane::Replication,
                PeerLane::Control => Lane::Control,
            };
            let frame = match &last_encoded {
                Some((previous, frame)) if same_append(previous, &message) => frame.clone(),
                _ => {
                    let frame = crate::wire::peer::encode_message(&message);
                    if matches!(message, Message::AppendEntries(_)) {
                        last_encoded = Some((message, frame.clone()));
                    }
                    frame
                }
            };
            // A full queue drops the message: Raft retries on its own.
            let _ = self.links.send(to, lane, frame);
        }
        for (peer, error) in read_errors {
            if let LogReadError::Storage { low, high, source } = &error {
                if matches!(
                    source.downcast_ref::<StorageError>(),
                    Some(StorageError::Corrupt { .. })
                ) {
                    return Err(self.record_damage(*low, *high, source.to_string()));
                }
            }
            warn!(peer, %error, "cannot read entries to replicate");
        }
        if let Some(membership) = membership {
            self.on_membership(membership);
        }
        // Commit news before role news: what committed in this Ready is
        // answered as committed even if the node also stepped down (a leader
        // that removed itself steps down as the removal commits).
        if let Some(commit_index) = commit_index {
            self.stage_clock
                .committed(&self.metrics.stages, commit_index, Instant::now());
            self.answer_committed(commit_index);
            let first_index = self.core.first_index();
            self.commit_tx.send_if_modified(|commit| {
                debug_assert!(
                    commit_index >= commit.commit_index,
                    "commit index never decreases"
                );
                let changed =
                    commit.commit_index != commit_index || commit.first_index != first_index;
                commit.commit_index = commit.commit_index.max(commit_index);
                commit.first_index = first_index;
                changed
            });
        }
        self.check_admin();
        if let Some(soft) = soft_state {
            self.on_soft_state(soft.role, soft.term, soft.leader);
        }
        self.update_metrics();
        Ok(())
    }

    /// A read found damage in `low..=high`: records its first bad index in
    /// the repair marker so that the next start cuts the log there and the
    /// node repairs from its peers, and stops the node.
    fn record_damage(&mut self, low: LogIndex, high: LogIndex, reason: String) -> DriverError {
        let log = self.log.clone();
        let mut log = match log.write() {
            Ok(log) => log,
            Err(_) => return DriverError::Poisoned,
        };
        let index = first_unreadable_index(&log, low, high).unwrap_or(low);
        error!(index, %reason, "storage damage found while reading the log; stopping to repair it from peers");
        match log.record_damage(index, &reason) {
            Ok(_) => DriverError::Damaged { index, reason },
            Err(error) => DriverError::Storage(error),
        }
    }

    fn note_appended(&mut self, entries: &[Entry]) {
        let now = Instant::now();
        let mut records = 0u64;
        let mut bytes = 0u64;
        for entry in entries {
            match entry.kind {
                EntryKind::Data => {
                    records += 1;
                    bytes += entry.payload.len() as u64;
                    if entry.index > self.producers_recorded_index {
                        if let Some(producer) = entry.producer {
                            self.producers.record(
                                producer.producer_id,
                                producer.sequence,
                                entry.index,
                                producers::digest(&entry.payload),
                                now,
                            );
                        }
                    }
                }
                EntryKind::Config => {
                    self.membership_index = entry.index;
                    if let Ok(membership) = Membership::decode(&entry.payload) {
                        self.config_history.insert(entry.index, membership);
                    }
                }
                EntryKind::Noop => {}
            }
        }
        if let Some(last) = entries.last() {
            self.producers_recorded_index = self.producers_recorded_index.max(last.index);
        }
        self.metrics.appended_records.inc_by(records);
        self.metrics.appended_bytes.inc_by(bytes);
    }

    fn on_membership(&mut self, membership: Membership) {
        info!(membership = %describe_membership(&membership), "membership changed");
        self.refresh_peer_links();
        self.promoting.retain(|id| membership.learners.contains(id));
    }

    /// Links to every member, and to the leader we follow even when it is
    /// not one: a leader that removes itself leads until the new membership
    /// commits, and needs our acknowledgements to commit it.
    fn refresh_peer_links(&mut self) {
        let membership = self.core.membership();
        if membership.addrs.is_empty() {
            // Joining: keep the links to the nodes we were told of.
            return;
        }
        let mut addrs: BTreeMap<NodeId, SocketAddr> = membership
            .addrs
            .iter()
            .filter(|(&id, _)| id != self.config.id)
            .filter_map(|(&id, addr)| match self.resolver.resolve(addr) {
                Resolution::Ready(socket) => Some((id, socket)),
                // Linked once the lookup ends (`resolver.changed()` in `run`);
                // a failure was logged by the lookup.
                Resolution::Pending | Resolution::Failed => None,
            })
            .collect();
        if let Some(leader) = self.core.leader().filter(|&id| id != self.config.id) {
            if let (std::collections::btree_map::Entry::Vacant(slot), Some(&addr)) =
                (addrs.entry(leader), self.links.peers().get(&leader))
            {
                slot.insert(addr);
            }
        }
        if addrs != self.links.peers() {
            self.links.set_peers(addrs);
        }
    }

    fn on_soft_state(&mut self, role: Role, term: Term, leader: Option<NodeId>) {
        info!(?role, term, ?leader, "role changed");
        // A removed leader's link is kept only while it leads.
        self.refresh_peer_links();
        if matches!(role, Role::PreCandidate | Role::Candidate) {
            self.metrics.elections.inc();
        }
        if role != Role::Leader {
            self.promoting.clear();
            self.stage_clock.clear();
            let not_leader = self.not_leader();
            self.fail_pending_appends(not_leader);
            let not_leader = self.not_leader();
            // Stepping down is how a leadership transfer succeeds: those keep
            // waiting until the target leads (check_admin; expire_admin bounds it).
            let (transfers, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_admin)
                .into_iter()
                .partition(|admin| matches!(admin.goal, AdminGoal::Leader(_)));
            self.pending_admin = transfers;
            for admin in others {
                let _ = admin.reply.send(not_leader.clone());
            }
        }
    }

    fn update_metrics(&self) {
        let status = self.core.status();
        let is_learner = self.core.membership().is_learner(self.config.id);
        self.metrics.role.set(if is_learner {
            metrics::ROLE_LEARNER
        } else {
            match status.soft_state.role {
                Role::Leader => metrics::ROLE_LEADER,
                Role::Candidate | Role::PreCandidate => metrics::ROLE_CANDIDATE,
                Role::Follower => metrics::ROLE_FOLLOWER,
            }
        });
        self.metrics.term.set(status.soft_state.term as i64);
        self.metrics.commit_index.set(status.commit_index as i64);
        self.metrics.last_index.set(status.last_index as i64);
        self.metrics.log_start_index.set(status.first_index as i64);
        let leading = status.soft_state.role == Role::Leader;
        self.metrics.set_leader(status.soft_state.leader, leading);
        if leading {
            let commit = status.commit_index as i64;
            if commit > self.metrics.leader_commit_index.get() {
                self.metrics.leader_commit_index.set(commit);
            }
        }
        // The core counts since it started, which is when this process did.
        let probes_new = status
            .replication_probes
            .saturating_sub(self.metrics.replication_probes.get());
        self.metrics.replication_probes.inc_by(probes_new);
        // Only a leader's view of its peers is current; a follower's
        // progress is what it had when it last led, so it exports none.
        let peers: Vec<(u64, i64, i64)> = status
            .peers
            .iter()
            .filter(|_| leading)
            .map(|peer| {
                let lag = status.last_index.saturating_sub(peer.match_index);
                (peer.id, peer.match_index as i64, lag as i64)
            })
            .collect();
        self.metrics.set_peers(&peers);
        self.metrics
            .peer_connections
            .set(i64::try_from(self.links.open_connections()).unwrap_or(i64::MAX));
    }

    /// Drops the oldest whole segments the retention policy allows, never
    /// an entry above the floor: the commit index and, on a leader, the match
    /// index of every follower heard from recently (a follower that is down
    /// does not hold the log back; when it returns it is reset to the log start).
    fn apply_retention(&mut self) -> Result<(), DriverError> {
        if self.config.retention_bytes.is_none() && self.config.retention.is_none() {
            return Ok(());
        }
        let status = self.core.status();
        let mut floor = status.commit_index.min(status.persisted_index);
        if status.soft_state.role == Role::Leader {
            for peer in status.peers.iter().filter(|peer| peer.recently_heard) {
                floor = floor.min(peer.match_index);
            }
        }
        let policy = RetentionPolicy {
            retention_bytes: self.config.retention_bytes,
            retention_ms: self.config.retention.map(|age| age.as_millis() as u64),
        };
        let mut log = self.log.write().map_err(|_| DriverError::Poisoned)?;
        let Some(first_index) = log.retention_first_index(&policy, floor, SystemTime::now()) else {
            return Ok(());
        };
        let prev_term = log.term_at(first_index - 1)?.unwrap_or(0);
        let membership = self
            .config_history
            .range(..first_index)
            .next_back()
            .map(|(_, membership)| membership.clone())
            .or_else(|| log.log_start().map(|start| start.membership.clone()))
            .unwrap_or_else(|| self.core.log_start().membership.clone());
        // The producers of the entries retention drops live on in the log
        // start, so a restart (which rebuilds the table from the log) and a
        // follower reset to this start still know them.
        let start = LogStart {
            first_index,
            prev_term,
            membership,
            producers: self.producers.snapshot(first_index),
        };
        if let Err(error) = self.core.log_compacted(start.clone()) {
            warn!(%error, first_index, "retention skipped");
            return Ok(());
        }
        log.advance_start(start)?;
        drop(log);
        // Keep the newest config entry below the new start: it is the membership in force there.
        let keep_from = self
            .config_history
            .range(..first_index)
            .next_back()
            .map(|(index, _)| *index);
        if let Some(keep_from) = keep_from {
            self.config_history = self.config_history.split_off(&keep_from);
        }
        info!(first_index, "retention dropped the oldest segments");
        self.commit_tx
            .send_modify(|commit| commit.first_index = first_index);
        Ok(())
    }

    /// Starts one group commit when entries wait for a sync and none runs.
    fn maybe_start_sync(
        &mut self,
        sync_tx: &mpsc::Sender<Result<(SyncDone, Duration), StorageError>>,
    ) -> Result<(), DriverError> {
        if self.config.fsync == Fsync::Never || self.sync_in_flight {
            return Ok(());
        }
        let request = {
            let mut log = self.log.write().map_err(|_| DriverError::Poisoned)?;
            if log.durable_index() >= log.last_index() {
                return Ok(());
            }
            log.sync_request()
        };
        self.sync_in_flight = true;
        self.stage_clock
            .sync_started(&self.metrics.stages, Instant::now());
        let sync_tx = sync_tx.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = request.run().map(|done| (done, started.elapsed()));
            let _ = sync_tx.blocking_send(result);
        });
        Ok(())
    }
}

/// True when two AppendEntries encode to the same bytes. Cheap: entries
/// read for replication are slices of the same stored bytes, so comparing
/// where their payloads live (and the headers) stands in for comparing them.
fn same_append(a: &Message, b: &Message) -> bool {
    let (Message::AppendEntries(a), Message::AppendEntries(b)) = (a, b) else {
        return false;
    };
    a.term == b.term
        && a.prev_log_index == b.prev_log_index
        && a.prev_log_term == b.prev_log_term
        && a.leader_commit == b.leader_commit
        && a.entries.len() == b.entries.len()
        && a.entries.iter().zip(&b.entries).all(|(x, y)| {
            x.index == y.index
                && x.term == y.term
                && x.kind == y.kind
                && x.producer == y.producer
                && x.payload.len() == y.payload.len()
                && x.payload.as_ptr() == y.payload.as_ptr()
        })
}

fn membership_error(error: MembershipChangeError) -> ErrorResponse {
    match error {
        MembershipChangeError::ChangeInProgress { .. } => ErrorResponse::ChangeInProgress,
        MembershipChangeError::AlreadyMember { id } => ErrorResponse::AlreadyMember { id },
        MembershipChangeError::NotMember { id } => ErrorResponse::UnknownNode { id },
        error => ErrorResponse::ChangeRefused {
            reason: error.to_string(),
        },
    }
}

pub fn describe_membership(membership: &Membership) -> String {
    let list = |ids: &BTreeSet<NodeId>| {
        ids.iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut text = format!("voters [{}]", list(&membership.voters));
    if membership.is_joint() {
        text.push_str(&format!(" leaving [{}]", list(&membership.voters_outgoing)));
    }
    if !membership.learners.is_empty() {
        text.push_str(&format!(" learners [{}]", list(&membership.learners)));
    }
    text
}

/// The producer table a log start carries, as of `first_index - 1`. One
/// that does not decode (a bug, or a newer build's layout) leaves the table
/// empty, loudly: the node keeps serving; re-sends of the dropped entries'
/// producers may then be appended again, as after their expiry.
fn producer_table_at(start: &LogStart, expiry: Duration) -> ProducerTable {
    ProducerTable::from_snapshot(&start.producers, start.first_index, expiry, Instant::now())
        .unwrap_or_else(|error| {
            error!(%error, first_index = start.first_index, "the log start's producer table is unreadable; starting with none");
            ProducerTable::new(expiry)
        })
}

/// What the driver needs from the stored log to build the core.
pub struct Recovered {
    pub log_start: LogStart,
    pub term_runs: Vec<(LogIndex, Term)>,
    pub config_entries: Vec<(LogIndex, Membership)>,
    pub producers: ProducerTable,
}

/// Reads the stored log once: term runs and config entries for the core,
/// and the exactly-once producer table. Linear in the log's size (about
/// 30 M entries/s from the page cache); see the README's notes.
pub fn recover(
    log: &Log,
    log_start: LogStart,
    producer_expiry: Duration,
) -> Result<Recovered, RecoverError> {
    /// Bytes read per step of the scan.
    const SCAN_BYTES: usize = 8 << 20;
    let mut term_runs: Vec<(LogIndex, Term)> = Vec::new();
    let mut config_entries = Vec::new();
    let mut producers = producer_table_at(&log_start, producer_expiry);
    let now = Instant::now();
    let mut next = log.first_index();
    let last = log.last_index();
    while next <= last {
        let entries = match log.entries(next, last, SCAN_BYTES) {
            Ok(entries) => entries,
            Err(source @ StorageError::Corrupt { .. }) => {
                let index = first_unreadable_index(log, next, last).unwrap_or(next);
                return Err(RecoverError::Damaged { index, source });
            }
            Err(error) => return Err(error.into()),
        };
        let Some(last_read) = entries.last().map(|entry| entry.index) else {
            break;
        };
        for entry in &entries {
            if term_runs.last().map(|run| run.1) != Some(entry.term) {
                term_runs.push((entry.index, entry.term));
            }
            match entry.kind {
                EntryKind::Config => match Membership::decode(&entry.payload) {
                    Ok(membership) => config_entries.push((entry.index, membership)),
                    Err(error) => {
                        return Err(RecoverError::Damaged {
                            index: entry.index,
                            source: StorageError::Corrupt {
                                path: log.dir().to_path_buf(),
                                offset: 0,
                                reason: format!(
                                    "config entry {} does not decode: {error}",
                                    entry.index
                                ),
                            },
                        })
                    }
                },
                EntryKind::Data => {
                    if let Some(producer) = entry.producer {
                        let digest = producers::digest(&entry.payload);
                        producers.record(
                            producer.producer_id,
                            producer.sequence,
                            entry.index,
                            digest,
                            now,
                        );
                    }
                }
                EntryKind::Noop => {}
            }
        }
        next = last_read + 1;
    }
    Ok(Recovered {
        log_start,
        term_runs,
        config_entries,
        producers,
    })
}
