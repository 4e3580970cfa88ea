//! A deterministic cluster simulator: N Raft cores in one thread with a
//! virtual clock, an in-memory disk per node that separates synced from
//! unsynced writes and completes syncs asynchronously, and a network that
//! loses, delays, reorders, duplicates and partitions (freely, or in order
//! per lane as the node's transport does). One `u64` seed drives every
//! choice, so a failure replays exactly (`RAFTLOG_SIM_SEED=<seed>`, with the
//! command the failure prints). Faults follow one of two schedules
//! ([`FaultSchedule`]): independent random faults, or leader churn that cuts
//! leaders off right after they append (the interleavings of Figure 8 in
//! the Raft paper). Nodes crash between steps and in the middle of applying
//! a Ready; disks lose ranges or their hard state on up to a minority of
//! nodes at once.
//!
//! The checker ([`check`]) runs after every input a core takes: at most one
//! leader per term; log matching as entries are written; every node commits
//! the same entry at an index (state machine safety); a node's commit index
//! never decreases while it is up; a node first seen leading a term holds
//! every entry committed in an earlier term (leader completeness); no node
//! ever drops an entry known committed. After healing every fault: a leader
//! is elected and commits within a bound; an idle leader refills a follower
//! that restarts with a damaged log; repairs finish; under load on a clean
//! network that only lets heartbeats overtake batches, no leader falls back
//! to probing a follower; every entry acknowledged to a client is still
//! committed. These checks are plain code, independent of `debug_assert!`.

mod check;
mod disk;
mod network;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;

use self::check::{entry_hash, Checker};
pub use self::disk::Disk;
pub use self::network::DeliveryOrder;
use self::network::{InFlight, Network, NetworkFaults, NO_FAULTS};
use crate::raft::{
    Bugs, Config, Core, MembershipChange, Message, Proposal, Ready, Role, SplitMix64,
};
use crate::types::{LogIndex, LogStart, Membership, NodeId, Term};

/// How faults are scheduled during the faulty phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultSchedule {
    /// Independent random faults: loss, delay up to a few steps, reordering,
    /// duplication, crashes, pauses, partitions that come and go.
    Random,
    /// The random faults, milder on the network (delays of at most a step),
    /// plus leader churn aimed at Figure 8 of the Raft paper: many new
    /// leaders are, a few steps after their election, handed a proposal
    /// and then cut off (isolated, or crashed mid-broadcast) in the same
    /// step, so the entry reaches at most a minority; they return later.
    /// This is the interleaving that committing an older term's entry by
    /// counting replicas needs to go wrong, and that random faults rarely
    /// produce.
    LeaderChurn,
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    /// Voters of the initial cluster (ids 1..=voters).
    pub voters: usize,
    /// Extra nodes, outside the cluster at first, that membership changes add.
    pub spares: usize,
    /// Steps (ticks) of the faulty phase.
    pub steps: u64,
    /// Inject network and node faults during the faulty phase.
    pub faults: bool,
    /// Change membership, transfer leadership and compact logs.
    pub operations: bool,
    /// Run the safety checks after every step (off only for benchmarks).
    pub checks: bool,
    /// Deliberately broken rules (mutation tests).
    pub bugs: Bugs,
    /// Chance per step that a client proposes a batch, in thousandths.
    pub client_per_mille: u64,
    /// Chance per step that a node crashes, in thousandths.
    pub crash_per_mille: u64,
    /// Chance per step that a node crashes and its disk is found damaged at
    /// restart (its log cut at a random point, or its hard state lost), in
    /// thousandths. At most a minority of the initial voters repairs at a
    /// time: a majority damaged at once is a loss no protocol repairs.
    pub damage_per_mille: u64,
    /// Chance that a node crashes in the middle of applying a Ready (after
    /// its log changes, its appends, its hard state, or some of its
    /// messages), in hundred-thousandths per Ready.
    pub crash_mid_ready_per_100k: u64,
    /// How the network orders messages; `None` lets the seed choose.
    pub delivery: Option<DeliveryOrder>,
    pub schedule: FaultSchedule,
    /// `cargo test` arguments that replay this run given RAFTLOG_SIM_SEED
    /// (printed with a failure).
    pub replay_args: String,
}

impl SimOptions {
    pub fn new(seed: u64, voters: usize) -> SimOptions {
        SimOptions {
            seed,
            voters,
            spares: 2,
            steps: 2_000,
            faults: true,
            operations: true,
            checks: true,
            bugs: Bugs::default(),
            client_per_mille: 333,
            crash_per_mille: 3,
            damage_per_mille: 1,
            crash_mid_ready_per_100k: 20,
            delivery: None,
            schedule: FaultSchedule::Random,
            replay_args: "--test sim_cluster".to_string(),
        }
    }

    /// The leader-churn schedule: clients propose rarely in the background
    /// (each new leader that is cut off gets a proposal anyway), so an entry
    /// of a new leader's term does not spread before its cut.
    pub fn leader_churn(seed: u64, voters: usize) -> SimOptions {
        SimOptions {
            schedule: FaultSchedule::LeaderChurn,
            client_per_mille: 30,
            ..SimOptions::new(seed, voters)
        }
    }
}

/// A broken property, with where it was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    TwoLeadersInTerm {
        term: Term,
        first: NodeId,
        second: NodeId,
    },
    LogMismatch {
        node: NodeId,
        index: LogIndex,
        term: Term,
    },
    CommittedEntryDiffers {
        node: NodeId,
        index: LogIndex,
    },
    CommittedEntryMissing {
        node: NodeId,
        index: LogIndex,
    },
    /// A node dropped (truncated or reset away) an entry known committed.
    CommittedEntryTruncated {
        node: NodeId,
        index: LogIndex,
    },
    CommitIndexDecreased {
        node: NodeId,
        from: LogIndex,
        to: LogIndex,
    },
    LeaderMissesCommittedEntry {
        leader: NodeId,
        term: Term,
        index: LogIndex,
    },
    AcknowledgedEntryLost {
        index: LogIndex,
    },
    CoreRefusedMessage {
        node: NodeId,
        from: NodeId,
        error: String,
    },
    ReadyNotContiguous {
        node: NodeId,
        index: LogIndex,
        expected: LogIndex,
    },
    NoLeaderAfterHealing {
        steps: u64,
    },
    NoCommitAfterHealing {
        steps: u64,
    },
    /// A member still repairing its damaged log long after healing.
    RepairNotFinished {
        node: NodeId,
        steps: u64,
    },
    /// An idle leader did not refill a member's log (it restarted with a
    /// damaged one) within a bound.
    FollowerNotCaughtUp {
        node: NodeId,
        steps: u64,
    },
    /// On a clean network (no loss, no crash; only heartbeats overtaking
    /// batches) leaders fell back from replicating to probing followers.
    NeedlessProbe {
        probes: u64,
    },
}

/// A violation and how to replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub violation: Violation,
    /// `cargo test` arguments that replay it (from [`SimOptions::replay_args`]).
    pub replay_args: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at step {}: {:?}\nreplay: RAFTLOG_SIM_SEED={} cargo test --profile ci {} -- --nocapture",
            self.seed, self.step, self.violation, self.seed, self.replay_args
        )
    }
}

/// What a successful run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub steps: u64,
    pub committed_entries: u64,
    pub acknowledged_entries: u64,
    pub elections: u64,
    pub crashes: u64,
    pub membership_changes: u64,
    /// Disks found damaged (and repaired from the leader).
    pub damages: u64,
    /// Crashes in the middle of applying a Ready.
    pub mid_ready_crashes: u64,
    /// Sync reports the core got for a log that had changed since the sync
    /// started (a truncation or reset raced it).
    pub stale_syncs: u64,
}

struct Node {
    id: NodeId,
    core: Option<Core>,
    disk: Disk,
    paused_until: u64,
    down_until: u64,
    /// Every link to and from this node is cut while `now < isolated_until`,
    /// except to `reachable` while `now < reachable_until`.
    isolated_until: u64,
    reachable_until: u64,
    reachable: Vec<NodeId>,
    /// The commit index the checker last saw on this incarnation.
    last_commit: LogIndex,
    /// Client proposals waiting for this node's commit: (index, payload id).
    pending: Vec<(LogIndex, u64)>,
    /// The step at which the sync in flight (if any) may complete.
    sync_due_at: u64,
}

/// Rounds of message delivery within one step; a step is a 10 ms tick and
/// a round a network hop, so this bounds a step's work, not its outcome.
const DELIVERY_ROUNDS_MAX: usize = 64;
/// Entries a client proposes at once.
const CLIENT_BATCH_MAX: u64 = 4;
/// Steps a sync takes at most during the faulty phase.
const SYNC_DELAY_STEPS_MAX: u64 = 4;
/// Bounds of the checks after healing, in steps (10 ms ticks).
const ELECT_STEPS_MAX: u64 = 600;
const COMMIT_STEPS_MAX: u64 = 600;
const CATCH_UP_STEPS_MAX: u64 = 300;
const REPAIR_STEPS_MAX: u64 = 600;
/// Steps of load on a clean network that must not make a leader probe.
const CLEAN_LOAD_STEPS: u64 = 150;

/// Leader churn: the chance that a new leader is cut off, in thousandths
/// (most are: each cut is one more chance at the interleaving).
const CHURN_CUT_PER_MILLE: u64 = 900;
/// Leader churn: steps a new leader runs before its cut (exclusive bound);
/// from 0 (its first proposal never leaves) to enough to replicate older
/// entries it holds (what Figure 8 needs of the third leader).
const CHURN_CUT_DELAY_STEPS_MAX: u64 = 12;
/// Leader churn: how long a cut-off leader stays isolated or down, in steps
/// (from below to above an election timeout, so leaders return in any order).
const CHURN_AWAY_STEPS_MIN: u64 = 20;
const CHURN_AWAY_STEPS_MAX: u64 = 150;
/// Leader churn: chance that a cut is a crash rather than an isolation, in
/// thousandths (a crash loses the unsynced proposal, an isolation keeps it).
const CHURN_CRASH_PER_MILLE: u64 = 100;

/// A planned cut of one leader.
#[derive(Clone, Copy, Debug)]
struct ChurnCut {
    leader: NodeId,
    term: Term,
    at_step: u64,
    crash: bool,
}

/// Leader-churn state.
#[derive(Clone, Debug, Default)]
struct Churn {
    /// The last leader seen, to notice a new one.
    seen: Option<(NodeId, Term)>,
    planned: Option<ChurnCut>,
    /// A leader cut mid-broadcast that crashes at the start of the next step.
    crash_next: Option<NodeId>,
}

/// The whole simulated cluster.
pub struct Sim {
    options: SimOptions,
    rng: SplitMix64,
    now: u64,
    nodes: BTreeMap<NodeId, Node>,
    network: Network,
    blocked: BTreeSet<(NodeId, NodeId)>,
    churn: Churn,
    /// Faults of the faulty phase are on (off once healed).
    chaos: bool,
    /// Steps a sync may take now.
    sync_delay_steps_max: u64,
    next_payload_id: u64,
    checker: Checker,
    /// index -> (entry hash, entry term) of what clients were told.
    acknowledged: BTreeMap<LogIndex, (u64, Term)>,
    report: Report,
}

impl Sim {
    pub fn new(options: SimOptions) -> Sim {
        let mut rng = SplitMix64::new(options.seed);
        let initial = Membership::with_voters(
            (1..=options.voters as u64).map(|id| (id, format!("node-{id}:7000"))),
        );
        let mut nodes = BTreeMap::new();
        for id in 1..=(options.voters + options.spares) as u64 {
            let start = if id <= options.voters as u64 {
                LogStart::initial(initial.clone())
            } else {
                LogStart::initial(Membership::default())
            };
            let disk = Disk::new(start);
            let mut node = Node {
                id,
                core: None,
                disk,
                paused_until: 0,
                down_until: 0,
                isolated_until: 0,
                reachable_until: 0,
                reachable: Vec::new(),
                last_commit: 0,
                pending: Vec::new(),
                sync_due_at: 0,
            };
            let core = start_core(&options, &mut rng, id, &node.disk);
            node.last_commit = core.commit_index();
            node.core = Some(core);
            nodes.insert(id, node);
        }
        let faults = match (options.faults, options.schedule) {
            (false, _) => NO_FAULTS,
            (true, FaultSchedule::Random) => NetworkFaults {
                loss_per_mille: rng.range(0, 150),
                duplicate_per_mille: rng.range(0, 50),
                delay_steps_max: rng.range(0, 4),
                replication_lag_steps_max: rng.range(0, 3),
                long_delay_per_mille: rng.range(0, 10),
            },
            // Figure 8 needs each step's messages to land within a step or
            // two, so that what a cut leader did not send is all that is lost.
            (true, FaultSchedule::LeaderChurn) => NetworkFaults {
                loss_per_mille: rng.range(0, 30),
                duplicate_per_mille: rng.range(0, 20),
                delay_steps_max: rng.range(0, 2),
                replication_lag_steps_max: 0,
                long_delay_per_mille: 0,
            },
        };
        let order = options.delivery.unwrap_or_else(|| {
            if rng.chance(1, 2) {
                DeliveryOrder::Lanes
            } else {
                DeliveryOrder::Any
            }
        });
        let sync_delay_steps_max = if options.faults {
            rng.range(0, SYNC_DELAY_STEPS_MAX + 1)
        } else {
            0
        };
        Sim {
            chaos: options.faults,
            options,
            rng,
            now: 0,
            nodes,
            network: Network::new(order, faults),
            blocked: BTreeSet::new(),
            churn: Churn::default(),
            sync_delay_steps_max,
            next_payload_id: 1,
            checker: Checker::default(),
            acknowledged: BTreeMap::new(),
            report: Report::default(),
        }
    }

    /// Runs the faulty phase, heals, checks liveness and durability.
    pub fn run(mut self) -> Result<Report, Failure> {
        let result = self.run_inner();
        let step = self.now;
        let seed = self.options.seed;
        let replay_args = self.options.replay_args.clone();
        result.map_err(|violation| Failure {
            seed,
            step,
            violation,
            replay_args,
        })
    }

    fn run_inner(&mut self) -> Result<Report, Violation> {
        for _ in 0..self.options.steps {
            self.step_with_chaos()?;
        }
        self.heal();
        self.check_liveness()?;
        self.check_idle_leader_refills_a_damaged_follower()?;
        self.check_repairs_finish()?;
        self.check_no_probes_under_clean_load()?;
        self.check_acknowledged_survive()?;
        self.report.steps = self.now;
        self.report.committed_entries = self.checker.committed_count() as u64;
        self.report.acknowledged_entries = self.acknowledged.len() as u64;
        Ok(self.report.clone())
    }

    fn step_with_chaos(&mut self) -> Result<(), Violation> {
        if self.options.faults {
            self.inject_faults();
            if self.options.schedule == FaultSchedule::LeaderChurn {
                self.churn_leaders()?;
            }
        }
        if self.options.operations {
            self.operate()?;
        }
        if self.rng.chance(self.options.client_per_mille, 1000) {
            let batch = self.rng.range(1, CLIENT_BATCH_MAX + 1);
            self.client_propose(batch)?;
        }
        self.step(600)
    }

    /// One tick of virtual time: revive, tick, start syncs with probability
    /// `sync_per_mille`, deliver messages and complete syncs until quiet.
    pub fn step(&mut self, sync_per_mille: u64) -> Result<(), Violation> {
        self.now += 1;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            self.maybe_restart(id)?;
        }
        for &id in &ids {
            if let Some(core) = self.live_core(id) {
                core.tick();
                self.observe(id)?;
            }
        }
        for &id in &ids {
            if self.rng.chance(sync_per_mille, 1000) {
                self.begin_sync(id);
            }
        }
        self.settle()
    }

    fn settle(&mut self) -> Result<(), Violation> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for _ in 0..DELIVERY_ROUNDS_MAX {
            // Syncs complete between deliveries, racing the truncations and
            // resets that messages cause.
            for &id in &ids {
                if self.rng.chance(1, 2) {
                    self.finish_sync(id)?;
                }
            }
            for &id in &ids {
                self.drain_ready(id)?;
            }
            if !self.deliver_due()? {
                // Quiet: every sync that is due completes, and what it
                // unblocks goes on.
                let mut finished = false;
                for &id in &ids {
                    finished |= self.finish_sync(id)?;
                }
                if !finished {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Runs the checker on what node `id` shows now (after an input).
    fn observe(&mut self, id: NodeId) -> Result<(), Violation> {
        if !self.options.checks {
            return Ok(());
        }
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let Some(core) = node.core.as_ref() else {
            return Ok(());
        };
        self.checker.observe(id, core, &mut node.last_commit)
    }

    fn live_core(&mut self, id: NodeId) -> Option<&mut Core> {
        let now = self.now;
        let node = self.nodes.get_mut(&id)?;
        if node.paused_until > now {
            return None;
        }
        node.core.as_mut()
    }

    fn maybe_restart(&mut self, id: NodeId) -> Result<(), Violation> {
        let now = self.now;
        let Some(node) = self.nodes.get(&id) else {
            return Ok(());
        };
        if node.core.is_some() || node.down_until > now {
            return Ok(());
        }
        let core = start_core(&self.options, &mut self.rng, id, &node.disk);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.last_commit = core.commit_index();
            node.core = Some(core);
        }
        self.observe(id)
    }

    /// Starts a sync of what node `id` wrote so far (one at a time).
    fn begin_sync(&mut self, id: NodeId) {
        let now = self.now;
        let delay = self.rng.range(0, self.sync_delay_steps_max + 1);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.paused_until > now || node.core.is_none() {
            return;
        }
        if node.disk.begin_sync() {
            node.sync_due_at = now + delay;
        }
    }

    /// Completes node `id`'s sync if it is due; true if one completed.
    fn finish_sync(&mut self, id: NodeId) -> Result<bool, Violation> {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(false);
        };
        if node.paused_until > now || node.sync_due_at > now || !node.disk.sync_in_flight() {
            return Ok(false);
        }
        let Some(core) = node.core.as_mut() else {
            return Ok(false);
        };
        if let Some((index, term)) = node.disk.finish_sync() {
            if core.term_at(index) != Some(term) {
                self.report.stale_syncs += 1;
            }
            core.persisted(index, term);
        }
        self.observe(id)?;
        Ok(true)
    }

    /// Syncs node `id`'s disk at once (benchmarks and [`Sim::flush`]).
    fn sync_now(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let Some(core) = node.core.as_mut() else {
            return Ok(());
        };
        // A sync in flight covers less than this one.
        node.disk.finish_sync();
        if let Some((index, term)) = node.disk.sync() {
            core.persisted(index, term);
        }
        self.observe(id)
    }

    /// Takes and applies one node's Ready, in the documented order: log
    /// reset or truncation, appends, hard state, then messages. During the
    /// faulty phase the node may crash at any point of that.
    fn drain_ready(&mut self, id: NodeId) -> Result<(), Violation> {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if node.paused_until > now {
            return Ok(());
        }
        let Some(core) = node.core.as_mut() else {
            return Ok(());
        };
        let ready: Ready = core.take_ready(&node.disk);
        if ready.is_empty() {
            return Ok(());
        }
        // Where a crash in the middle of this Ready strikes: after stage
        // 0 (log changes), 1 (appends), 2 (hard state) or during 3 (sends).
        let crash_after = (self.chaos
            && self
                .rng
                .chance(self.options.crash_mid_ready_per_100k, 100_000))
        .then(|| self.rng.range(0, 4));
        let survivors_roll = self.rng.next_u64();
        let commit_now = core.commit_index();
        let checks = self.options.checks;
        if let Some(start) = ready.log_start_reset {
            if checks {
                self.checker
                    .discarding(id, node.disk.terms_from(start.first_index))?;
            }
            node.disk.reset(start);
        }
        if let Some(from) = ready.truncate_from {
            if checks {
                self.checker.discarding(id, node.disk.terms_from(from))?;
            }
            node.disk.truncate_from(from);
        }
        if crash_after == Some(0) {
            return self.crash_mid_ready(id, survivors_roll);
        }
        // Check the batch, then write it at once.
        let first_expected = node.disk.last_index() + 1;
        let mut prev_term = node.disk.term(first_expected - 1).unwrap_or(0);
        for (expected, entry) in (first_expected..).zip(&ready.entries) {
            if entry.index != expected {
                return Err(Violation::ReadyNotContiguous {
                    node: id,
                    index: entry.index,
                    expected,
                });
            }
            if checks {
                self.checker.written(id, entry, prev_term)?;
            }
            prev_term = entry.term;
        }
        node.disk.append_all(ready.entries);
        if crash_after == Some(1) {
            return self.crash_mid_ready(id, survivors_roll);
        }
        if let Some(hard_state) = ready.hard_state {
            node.disk.hard_state = hard_state;
        }
        // After this Ready's hard state, as the driver does.
        if ready.repair_complete {
            node.disk.repair = None;
        }
        if crash_after == Some(2) {
            return self.crash_mid_ready(id, survivors_roll);
        }
        // The commit index refers to the log after this Ready's appends.
        if checks && commit_now > node.disk.last_index() {
            return Err(Violation::CommittedEntryMissing {
                node: id,
                index: commit_now,
            });
        }
        // Client acknowledgements: the entry at the index is still ours.
        let disk = &node.disk;
        let mut acked = Vec::new();
        node.pending.retain(|&(index, payload_id)| {
            if index > commit_now {
                return true;
            }
            if let Some(entry) = disk.entry(index) {
                if entry.payload.as_ref() == payload_id.to_le_bytes() {
                    acked.push((index, (entry_hash(entry), entry.term)));
                }
            }
            false
        });
        self.acknowledged.extend(acked);
        if let Some(soft) = ready.soft_state {
            if soft.role == Role::Leader {
                self.report.elections += 1;
            }
        }
        let mut messages = ready.messages;
        if crash_after == Some(3) {
            let sent = (survivors_roll % (messages.len() as u64 + 1)) as usize;
            messages.truncate(sent);
        }
        for (to, message) in messages {
            self.send(id, to, message);
        }
        if crash_after == Some(3) {
            return self.crash_mid_ready(id, survivors_roll);
        }
        Ok(())
    }

    fn crash_mid_ready(&mut self, id: NodeId, survivors_roll: u64) -> Result<(), Violation> {
        let down_steps = 1 + survivors_roll % 40;
        self.crash(id, down_steps);
        self.report.mid_ready_crashes += 1;
        Ok(())
    }

    /// True if the link `from -> to` is down (a partition or an isolation).
    fn link_cut(&self, from: NodeId, to: NodeId) -> bool {
        let now = self.now;
        let isolates = |node: NodeId, other: NodeId| {
            self.nodes.get(&node).is_some_and(|n| {
                n.isolated_until > now && !(n.reachable_until > now && n.reachable.contains(&other))
            })
        };
        self.blocked.contains(&(from, to)) || isolates(from, to) || isolates(to, from)
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
        if self.link_cut(from, to) {
            return;
        }
        self.network
            .send(&mut self.rng, self.now, from, to, message);
    }

    /// Delivers every due message in a random order (each lane in order
    /// under [`DeliveryOrder::Lanes`]); false if none was due.
    fn deliver_due(&mut self) -> Result<bool, Violation> {
        let now = self.now;
        let nodes = &self.nodes;
        let due = self.network.take_due(&mut self.rng, now, |to| {
            nodes.get(&to).is_some_and(|n| n.paused_until > now)
        });
        if due.is_empty() {
            return Ok(false);
        }
        for InFlight {
            from, to, message, ..
        } in due
        {
            let Some(core) = self.nodes.get_mut(&to).and_then(|n| n.core.as_mut()) else {
                continue;
            };
            if let Err(error) = core.step(from, message) {
                return Err(Violation::CoreRefusedMessage {
                    node: to,
                    from,
                    error: error.to_string(),
                });
            }
            self.observe(to)?;
        }
        Ok(true)
    }

    fn inject_faults(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let pick = |rng: &mut SplitMix64| {
            ids.get(rng.range(0, ids.len() as u64) as usize)
                .copied()
                .unwrap_or(1)
        };
        let now = self.now;
        if self.rng.chance(self.options.crash_per_mille, 1000) {
            let id = pick(&mut self.rng);
            let down_steps = self.rng.range(5, 80);
            self.crash(id, down_steps);
        }
        if self.rng.chance(self.options.damage_per_mille, 1000) {
            let id = pick(&mut self.rng);
            let down_steps = self.rng.range(5, 80);
            self.damage(id, down_steps);
        }
        match self.rng.range(0, 1000) {
            3..=4 => {
                let id = pick(&mut self.rng);
                let steps = self.rng.range(5, 60);
                if let Some(node) = self.nodes.get_mut(&id) {
                    node.paused_until = now + steps;
                }
            }
            5..=6 => {
                // Isolate one node both ways.
                let id = pick(&mut self.rng);
                for &other in &ids {
                    if other != id {
                        self.blocked.insert((id, other));
                        self.blocked.insert((other, id));
                    }
                }
            }
            7..=8 => {
                // One-way link failures.
                for _ in 0..self.rng.range(1, 4) {
                    let a = pick(&mut self.rng);
                    let b = pick(&mut self.rng);
                    if a != b {
                        self.blocked.insert((a, b));
                    }
                }
            }
            9 => {
                // Split into two random halves.
                self.blocked.clear();
                let side: BTreeMap<NodeId, bool> =
                    ids.iter().map(|&id| (id, self.rng.chance(1, 2))).collect();
                for &a in &ids {
                    for &b in &ids {
                        if side.get(&a) != side.get(&b) {
                            self.blocked.insert((a, b));
                        }
                    }
                }
            }
            10..=14 => self.blocked.clear(),
            _ => {}
        }
    }

    /// Crash: every unsynced write is lost; the node restarts from its disk
    /// after `down_steps`.
    fn crash(&mut self, id: NodeId, down_steps: u64) {
        let now = self.now;
        // Half the crashes keep some unsynced writes (pages the kernel
        // wrote back on its own), which the node never acknowledged.
        let survivors_roll = self.rng.next_u64();
        if let Some(node) = self.nodes.get_mut(&id) {
            if node.core.is_some() {
                node.core = None;
                let unsynced = node.disk.unsynced_count() as u64;
                let survivors = if survivors_roll % 2 == 0 {
                    (survivors_roll / 2) % (unsynced + 1)
                } else {
                    0
                };
                node.disk.crash_keeping(survivors as usize);
                node.pending.clear();
                node.down_until = now + down_steps;
                node.last_commit = 0;
                self.report.crashes += 1;
            }
        }
    }

    /// Crashes a node and damages its disk: its log is cut at a random point
    /// of its stored entries, synced ones included, as if a range had gone
    /// bad, or its hard state is lost; it restarts repairing (see
    /// [`Disk::damage`]). Up to a minority of the initial voters repair at
    /// once.
    fn damage(&mut self, id: NodeId, down_steps: u64) {
        let repairing = self
            .nodes
            .values()
            .filter(|n| n.id != id && n.disk.repair.is_some())
            .count();
        let up = self.nodes.get(&id).is_some_and(|n| n.core.is_some());
        if repairing >= self.repairing_max() || !up {
            return;
        }
        self.crash(id, down_steps);
        if let Some(node) = self.nodes.get_mut(&id) {
            let first = node.disk.first_index();
            let last = node.disk.last_index();
            // A third of the damage takes the hard state (term and vote),
            // the rest a range of the log.
            if self.rng.chance(1, 3) {
                node.disk.lose_hard_state();
                self.report.damages += 1;
            } else if last >= first {
                let cut_from = self.rng.range(first, last + 1);
                node.disk.damage(cut_from);
                self.report.damages += 1;
            }
        }
    }

    /// Nodes that may repair a damaged disk at once: a minority of the
    /// initial voters (a majority damaged together is a loss no protocol
    /// repairs).
    fn repairing_max(&self) -> usize {
        self.options.voters.saturating_sub(1) / 2
    }

    /// Leader churn (see [`FaultSchedule::LeaderChurn`]): notices each new
    /// leader, plans whether and when to cut it off, and carries cuts out.
    /// A cut proposes to the leader and lets that step's messages reach only
    /// a random minority of the voters (the leader included), then isolates
    /// the leader or crashes it at the next step.
    fn churn_leaders(&mut self) -> Result<(), Violation> {
        if let Some(id) = self.churn.crash_next.take() {
            let down_steps = self.rng.range(CHURN_AWAY_STEPS_MIN, CHURN_AWAY_STEPS_MAX);
            self.crash(id, down_steps);
        }
        let leader = self
            .leader_id()
            .and_then(|id| self.core(id).map(|core| (id, core.term())));
        if let Some((id, term)) = leader {
            if self.churn.seen != Some((id, term)) {
                self.churn.seen = Some((id, term));
                self.churn.planned = self
                    .rng
                    .chance(CHURN_CUT_PER_MILLE, 1000)
                    .then(|| ChurnCut {
                        leader: id,
                        term,
                        at_step: self.now + self.rng.range(0, CHURN_CUT_DELAY_STEPS_MAX),
                        crash: self.rng.chance(CHURN_CRASH_PER_MILLE, 1000),
                    });
            }
        }
        let Some(cut) = self.churn.planned else {
            return Ok(());
        };
        if cut.at_step > self.now {
            return Ok(());
        }
        self.churn.planned = None;
        if leader != Some((cut.leader, cut.term)) {
            return Ok(());
        }
        let batch = self.rng.range(1, CLIENT_BATCH_MAX + 1);
        self.client_propose(batch)?;
        // Which voters the next step's messages still reach: fewer than a
        // majority counting the leader.
        let mut others: Vec<NodeId> = self
            .core(cut.leader)
            .map(|core| core.membership().voters.iter().copied())
            .into_iter()
            .flatten()
            .filter(|&v| v != cut.leader)
            .collect();
        // 1 + reachable < (others + 1) / 2 + 1, the majority of the voters.
        let reachable_max = others.len().div_ceil(2).saturating_sub(1);
        let reachable_count = self.rng.range(0, reachable_max as u64 + 1) as usize;
        for i in (1..others.len()).rev() {
            let j = self.rng.range(0, i as u64 + 1) as usize;
            others.swap(i, j);
        }
        others.truncate(reachable_count);
        let away_steps = self.rng.range(CHURN_AWAY_STEPS_MIN, CHURN_AWAY_STEPS_MAX);
        // The step about to run is `now + 1`.
        let now = self.now;
        if let Some(node) = self.nodes.get_mut(&cut.leader) {
            node.reachable = others;
            node.reachable_until = now + 2;
            node.isolated_until = if cut.crash {
                now + 2
            } else {
                now + 2 + away_steps
            };
        }
        if cut.crash {
            self.churn.crash_next = Some(cut.leader);
        }
        Ok(())
    }

    fn leader_id(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter_map(|n| n.core.as_ref().map(|c| (n.id, c)))
            .filter(|(_, c)| c.role() == Role::Leader)
            .max_by_key(|(_, c)| c.term())
            .map(|(id, _)| id)
    }

    /// A client proposes `count` unique entries to the leader it finds;
    /// the indexes they got, if a leader took them.
    pub fn client_propose(
        &mut self,
        count: u64,
    ) -> Result<Option<std::ops::RangeInclusive<LogIndex>>, Violation> {
        let Some(leader) = self.leader_id() else {
            return Ok(None);
        };
        let first_id = self.next_payload_id;
        self.next_payload_id += count;
        let proposals = (first_id..first_id + count)
            .map(|payload_id| Proposal::data(Bytes::copy_from_slice(&payload_id.to_le_bytes())))
            .collect();
        let Some(node) = self.nodes.get_mut(&leader) else {
            return Ok(None);
        };
        let Some(Ok(range)) = node.core.as_mut().map(|core| core.propose(proposals)) else {
            return Ok(None);
        };
        for (offset, index) in range.clone().enumerate() {
            node.pending.push((index, first_id + offset as u64));
        }
        self.observe(leader)?;
        Ok(Some(range))
    }

    fn operate(&mut self) -> Result<(), Violation> {
        let roll = self.rng.range(0, 1000);
        if roll >= 12 {
            return Ok(());
        }
        let Some(leader) = self.leader_id() else {
            return Ok(());
        };
        let voters_min = self.options.voters;
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        let Some(core) = self.nodes.get_mut(&leader).and_then(|n| n.core.as_mut()) else {
            return Ok(());
        };
        let membership = core.membership().clone();
        match roll {
            0..=3 => {
                let change = if let Some(&learner) = membership.learners.iter().next() {
                    MembershipChange::PromoteLearner { id: learner }
                } else if let Some(&spare) =
                    all.iter().find(|id| !membership.addrs.contains_key(id))
                {
                    MembershipChange::AddLearner {
                        id: spare,
                        addr: format!("node-{spare}:7000"),
                    }
                } else if membership.voters.len() > voters_min {
                    let voters: Vec<NodeId> = membership.voters.iter().copied().collect();
                    let pick = voters
                        .get(self.rng.range(0, voters.len() as u64) as usize)
                        .copied()
                        .unwrap_or(leader);
                    MembershipChange::Remove { id: pick }
                } else {
                    return Ok(());
                };
                if core.propose_membership_change(change).is_ok() {
                    self.report.membership_changes += 1;
                }
                self.observe(leader)
            }
            4..=5 => {
                let voters: Vec<NodeId> = membership
                    .voters
                    .iter()
                    .copied()
                    .filter(|&v| v != leader)
                    .collect();
                if let Some(&to) =
                    voters.get(self.rng.range(0, voters.len().max(1) as u64) as usize)
                {
                    let _ = core.transfer_leadership(to);
                }
                self.observe(leader)
            }
            _ => {
                // Retention: drop a committed, synced prefix of some node's log.
                let id = all
                    .get(self.rng.range(0, all.len() as u64) as usize)
                    .copied()
                    .unwrap_or(1);
                let keep = self.rng.range(0, 20);
                self.compact(id, keep);
                self.observe(id)
            }
        }
    }

    /// Drops node `id`'s committed, persisted entries but the last `keep`.
    fn compact(&mut self, id: NodeId, keep: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let upto = core
            .commit_index()
            .min(core.persisted_index())
            .saturating_sub(keep);
        if upto < core.first_index() {
            return;
        }
        if let Some(start) = node.disk.log_start_at(upto + 1) {
            if core.log_compacted(start.clone()).is_ok() {
                node.disk.compact(start);
            }
        }
    }

    fn heal(&mut self) {
        self.blocked.clear();
        self.network.faults = NO_FAULTS;
        self.chaos = false;
        self.sync_delay_steps_max = 0;
        self.churn = Churn::default();
        for node in self.nodes.values_mut() {
            node.paused_until = 0;
            node.down_until = 0;
            node.isolated_until = 0;
        }
    }

    /// The leader and its term, if one is up.
    fn leader_and_term(&self) -> Option<(NodeId, Term)> {
        self.leader_id()
            .and_then(|id| self.core(id).map(|core| (id, core.term())))
    }

    fn check_liveness(&mut self) -> Result<(), Violation> {
        // Leaders elect within a few election timeouts once the network is
        // whole; membership changes in flight may take another round.
        let start = self.now;
        while self.leader_id().is_none() {
            if self.now - start > ELECT_STEPS_MAX {
                return Err(Violation::NoLeaderAfterHealing {
                    steps: self.now - start,
                });
            }
            self.step(1000)?;
        }
        let start = self.now;
        // (leader, its term, last index proposed): a leader that lost and
        // regained leadership may have lost the proposal with the first term.
        let mut proposed: Option<(NodeId, Term, LogIndex)> = None;
        loop {
            if self.now - start > COMMIT_STEPS_MAX {
                return Err(Violation::NoCommitAfterHealing {
                    steps: self.now - start,
                });
            }
            let leader = self.leader_and_term();
            if proposed.map(|(node, term, _)| (node, term)) != leader {
                if let Some(range) = self.client_propose(3)? {
                    proposed = leader.map(|(node, term)| (node, term, *range.end()));
                }
            }
            self.step(1000)?;
            if let Some((node, _, index)) = proposed {
                if self.acknowledged.contains_key(&index)
                    && self
                        .nodes
                        .get(&node)
                        .and_then(|n| n.core.as_ref())
                        .is_some_and(|c| c.commit_index() >= index)
                {
                    return Ok(());
                }
            }
        }
    }

    /// A follower restarts with a damaged log while the cluster is idle:
    /// with no writes to push it, the leader must still notice (the
    /// follower rejects a heartbeat at the match index the leader knew) and
    /// refill it. Then every member holds the leader's last entry.
    fn check_idle_leader_refills_a_damaged_follower(&mut self) -> Result<(), Violation> {
        let leader = self.leader_id();
        let members: Vec<NodeId> = leader
            .and_then(|id| self.core(id))
            .map(|core| core.membership().addrs.keys().copied().collect())
            .unwrap_or_default();
        let followers: Vec<NodeId> = members
            .iter()
            .copied()
            .filter(|&id| Some(id) != leader)
            .collect();
        let repairing = self
            .nodes
            .values()
            .filter(|n| n.disk.repair.is_some())
            .count();
        if let Some(&victim) =
            followers.get(self.rng.range(0, followers.len().max(1) as u64) as usize)
        {
            let cut = self.nodes.get(&victim).and_then(|n| {
                let low = n.disk.first_index().max(n.last_commit.saturating_sub(8));
                (n.disk.last_index() >= low && n.disk.repair.is_none())
                    .then(|| self.rng.range(low, n.disk.last_index() + 1))
            });
            if let (Some(cut_from), true) = (cut, repairing < self.repairing_max()) {
                self.crash(victim, 0);
                if let Some(node) = self.nodes.get_mut(&victim) {
                    node.disk.damage(cut_from);
                    self.report.damages += 1;
                }
            }
        }
        let start = self.now;
        loop {
            // Against the leader's membership now: a change that was in
            // flight may still add or remove a node.
            let leader = self.leader_id().and_then(|id| self.core(id));
            let target = leader.map(|core| (core.last_index(), core.term_at(core.last_index())));
            let members: Vec<NodeId> = leader
                .map(|core| core.membership().addrs.keys().copied().collect())
                .unwrap_or_default();
            let behind = target.and_then(|(last, term)| {
                members.iter().copied().find(|&id| {
                    self.core(id)
                        .map_or(true, |core| core.term_at(last) != term)
                })
            });
            match (target, behind) {
                (Some(_), None) => return Ok(()),
                (_, node) if self.now - start > CATCH_UP_STEPS_MAX => {
                    return Err(Violation::FollowerNotCaughtUp {
                        node: node.unwrap_or(0),
                        steps: self.now - start,
                    });
                }
                _ => self.step(1000)?,
            }
        }
    }

    /// Once the cluster is whole, every member that is repairing a damaged
    /// log gets it refilled by the leader and votes again.
    fn check_repairs_finish(&mut self) -> Result<(), Violation> {
        let start = self.now;
        loop {
            let members = self
                .leader_id()
                .and_then(|id| self.core(id))
                .map(|core| core.membership().clone());
            let repairing = self.nodes.values().find(|node| {
                node.disk.repair.is_some()
                    && members
                        .as_ref()
                        .map_or(true, |m| m.addrs.contains_key(&node.id))
            });
            let Some(node) = repairing else {
                return Ok(());
            };
            if self.now - start > REPAIR_STEPS_MAX {
                return Err(Violation::RepairNotFinished {
                    node: node.id,
                    steps: self.now - start,
                });
            }
            // The log must grow past what the node held (or a new term
            // start) for the repair to end; clients keep writing.
            self.client_propose(CLIENT_BATCH_MAX)?;
            self.step(1000)?;
        }
    }

    /// Under load on a clean network where only heartbeats overtake batches
    /// (the replication lane lags a step, as a large batch behind a small
    /// heartbeat does), no leader ever falls back from replicating to
    /// probing: nothing was lost, so a fall-back is a needless resend.
    fn check_no_probes_under_clean_load(&mut self) -> Result<(), Violation> {
        self.network.order = DeliveryOrder::Lanes;
        self.network.faults = NetworkFaults {
            replication_lag_steps_max: 1,
            ..NO_FAULTS
        };
        // Let what the earlier phases left in flight (messages held back
        // included) land first.
        let settled_at = self.network.last_due().max(self.now) + 5;
        while self.now < settled_at {
            self.step(1000)?;
        }
        let probes = |sim: &Sim| -> u64 {
            sim.nodes
                .values()
                .filter_map(|n| n.core.as_ref())
                .map(|core| core.status().replication_probes)
                .sum()
        };
        let before = probes(self);
        for _ in 0..CLEAN_LOAD_STEPS {
            let batch = self.rng.range(1, CLIENT_BATCH_MAX + 1);
            self.client_propose(batch)?;
            self.step(1000)?;
        }
        let after = probes(self);
        self.network.faults = NO_FAULTS;
        if after > before {
            return Err(Violation::NeedlessProbe {
                probes: after - before,
            });
        }
        Ok(())
    }

    /// Every acknowledged entry is the committed entry at its index, and
    /// every up node that has committed that index holds it.
    fn check_acknowledged_survive(&mut self) -> Result<(), Violation> {
        for (&index, &(hash, term)) in &self.acknowledged {
            if self.checker.committed(index).map(|c| c.entry_term) != Some(term) {
                return Err(Violation::AcknowledgedEntryLost { index });
            }
            for node in self.nodes.values() {
                let Some(core) = node.core.as_ref() else {
                    continue;
                };
                if core.commit_index() < index || index < node.disk.first_index() {
                    continue;
                }
                if node.disk.entry(index).map(entry_hash) != Some(hash) {
                    return Err(Violation::AcknowledgedEntryLost { index });
                }
            }
        }
        Ok(())
    }

    // ---- accessors for tests and benches ----

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader_id()
    }

    pub fn core(&self, id: NodeId) -> Option<&Core> {
        self.nodes.get(&id).and_then(|n| n.core.as_ref())
    }

    pub fn acknowledged_count(&self) -> usize {
        self.acknowledged.len()
    }

    /// Proposes `proposals` to the leader without client bookkeeping.
    pub fn propose_raw(
        &mut self,
        proposals: Vec<Proposal>,
    ) -> Option<std::ops::RangeInclusive<LogIndex>> {
        let leader = self.leader_id()?;
        self.nodes
            .get_mut(&leader)?
            .core
            .as_mut()?
            .propose(proposals)
            .ok()
    }

    /// Drops every committed, persisted entry from every node's log (keeps
    /// long benchmark runs in bounded memory).
    pub fn compact_committed(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.compact(id, 0);
        }
    }

    /// Delivers, syncs every disk and settles without ticking the clock.
    pub fn flush(&mut self) -> Result<(), Violation> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.settle()?;
        for &id in &ids {
            self.sync_now(id)?;
        }
        self.settle()
    }
}

fn start_core(options: &SimOptions, rng: &mut SplitMix64, id: NodeId, disk: &Disk) -> Core {
    let mut config = Config::new(id);
    config.bugs = options.bugs;
    config.pre_vote = options.seed % 4 != 3;
    config.check_quorum = options.seed % 8 != 5;
    if options.faults {
        // Small windows exercise flow control and partial acknowledgements.
        config.inflight_messages_max = 8;
        config.append_entries_max = 64;
    }
    match Core::new(config, disk.persisted_state(), rng.next_u64()) {
        Ok(core) => core,
        // The simulated disk always holds a state the core accepts; a
        // failure here is a simulator bug, not a fault to survive.
        Err(error) => panic!("simulated disk of node {id} gave an invalid state: {error}"),
    }
}
