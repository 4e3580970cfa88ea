//! The faults, one at a time: each starts, holds for a while, heals, and
//! then waits until the cluster commits a new append again (a cluster that
//! does not recover within [`RECOVERY_WAIT`] is a violation).
//!
//! Every choice (which fault, which node, how long) comes from one seeded
//! RNG, so a schedule replays from its seed; the timing of real processes
//! does not, so a replay reproduces the faults, not every interleaving.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use raftlog::client::{self, ClusterStatus};
use raftlog::raft::SplitMix64;
use raftlog::types::LogIndex;
use raftlog::wire::client::NodeRole;

use super::cluster::Cluster;
use super::firewall::Firewall;
use super::history::{NodeId, Op, Recorder};
use super::workload::Members;

/// Bound on finding a leader after a fault healed.
pub const LEADER_WAIT: Duration = Duration::from_secs(30);
/// Bound on the first new commit after a fault healed.
pub const RECOVERY_WAIT: Duration = Duration::from_secs(40);
/// Bound on the leader's log start passing a stopped follower's log.
pub const RETENTION_WAIT: Duration = Duration::from_secs(60);
/// Bound on a node catching up (status shows its match index near the
/// leader's commit index).
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    KillLeader,
    KillFollower,
    PauseLeader,
    PauseFollower,
    IsolateLeader,
    SplitMajority,
    OneWayFromLeader,
    OneWayToLeader,
    Bridge,
    TransferLeader,
    ReplaceFollower,
    ReplaceLeader,
    RollingRestart,
    LaggingFollowerReset,
    CorruptFollower,
}

impl FaultKind {
    pub const ALL: [FaultKind; 15] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::PauseLeader,
        FaultKind::PauseFollower,
        FaultKind::IsolateLeader,
        FaultKind::SplitMajority,
        FaultKind::OneWayFromLeader,
        FaultKind::OneWayToLeader,
        FaultKind::Bridge,
        FaultKind::TransferLeader,
        FaultKind::ReplaceFollower,
        FaultKind::ReplaceLeader,
        FaultKind::RollingRestart,
        FaultKind::LaggingFollowerReset,
        FaultKind::CorruptFollower,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PauseFollower => "pause-follower",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::SplitMajority => "split-majority-minority",
            FaultKind::OneWayFromLeader => "one-way-from-leader",
            FaultKind::OneWayToLeader => "one-way-to-leader",
            FaultKind::Bridge => "bridge",
            FaultKind::TransferLeader => "transfer-leader",
            FaultKind::ReplaceFollower => "add-node-remove-follower",
            FaultKind::ReplaceLeader => "add-node-remove-leader",
            FaultKind::RollingRestart => "rolling-restart",
            FaultKind::LaggingFollowerReset => "lagging-follower-reset",
            FaultKind::CorruptFollower => "corrupt-follower",
        }
    }

    pub fn needs_firewall(self) -> bool {
        matches!(
            self,
            FaultKind::IsolateLeader
                | FaultKind::SplitMajority
                | FaultKind::OneWayFromLeader
                | FaultKind::OneWayToLeader
                | FaultKind::Bridge
        )
    }

    /// How often the long run picks it, relative to the others.
    fn weight(self) -> u64 {
        match self {
            // The issue asks for failover figures over many leader kills.
            FaultKind::KillLeader => 4,
            FaultKind::RollingRestart
            | FaultKind::LaggingFollowerReset
            | FaultKind::CorruptFollower => 1,
            _ => 2,
        }
    }

    pub fn pick(rng: &mut SplitMix64) -> FaultKind {
        let total: u64 = FaultKind::ALL.iter().map(|kind| kind.weight()).sum();
        let mut draw = rng.range(0, total);
        for kind in FaultKind::ALL {
            if draw < kind.weight() {
                return kind;
            }
            draw -= kind.weight();
        }
        FaultKind::KillLeader
    }
}

pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    pub firewall: Option<Firewall>,
    pub recorder: Recorder,
    pub rng: SplitMix64,
    /// The voters as last learned from the cluster.
    pub members: BTreeSet<NodeId>,
    /// The same, as the clients see it.
    pub client_members: Members,
    /// The next never-used node slot.
    pub next_slot: NodeId,
    /// Hold times of faults are drawn from this range (milliseconds).
    pub hold_ms: (u64, u64),
    pub done: BTreeMap<&'static str, usize>,
    pub skipped: BTreeMap<&'static str, usize>,
    pub notes: Vec<String>,
}

impl Nemesis<'_> {
    fn note(&mut self, note: String) {
        eprintln!(
            "[faults {:>7.1}s] {note}",
            self.recorder.elapsed().as_secs_f64()
        );
        self.notes.push(note);
    }

    fn violation(&mut self, reason: String) {
        eprintln!(
            "[faults {:>7.1}s] VIOLATION: {reason}",
            self.recorder.elapsed().as_secs_f64()
        );
        self.recorder.record(Op::Violation { reason });
    }

    fn fault(&mut self, kind: FaultKind, description: String, leader_loss: bool) {
        eprintln!(
            "[faults {:>7.1}s] {}: {description}",
            self.recorder.elapsed().as_secs_f64(),
            kind.name()
        );
        self.recorder.record(Op::Fault {
            kind: kind.name().to_string(),
            description,
            leader_loss,
        });
    }

    fn members_vec(&self) -> Vec<NodeId> {
        self.members.iter().copied().collect()
    }

    async fn hold(&mut self) {
        let (low, high) = self.hold_ms;
        let millis = self.rng.range(low, high + 1);
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }

    /// Status as the leader sees it, asked of each running member in turn
    /// until one knows a leader: a node just removed from the cluster hears
    /// from nobody and would answer "no leader" for ever.
    pub async fn status(&self) -> Result<ClusterStatus, String> {
        let running: Vec<NodeId> = self
            .members
            .iter()
            .copied()
            .filter(|&id| self.cluster.is_running(id) && !self.cluster.is_paused(id))
            .collect();
        let mut last = Err("no member is running".to_string());
        for id in running {
            let config = self.cluster.client_config(&[id]);
            last = match tokio::time::timeout(Duration::from_secs(5), client::status(&config)).await
            {
                Ok(Ok(status)) if status.leader.is_some() => return Ok(status),
                Ok(Ok(status)) => Ok(status),
                Ok(Err(error)) => Err(format!("node {id}: {error}")),
                Err(_) => Err(format!("node {id}: no status within 5s")),
            };
        }
        last
    }

    /// The log start of the leader itself (a follower's retention runs on
    /// its own and may be ahead of the leader's; only the leader's decides
    /// whether a follower behind it needs a reset).
    async fn leader_log_start(&self) -> Option<LogIndex> {
        let status = self.status().await.ok()?;
        let leader = status.leader?;
        let config = self.cluster.client_config(&[leader]);
        match tokio::time::timeout(Duration::from_secs(5), client::status(&config)).await {
            Ok(Ok(own)) if own.leader == Some(leader) => Some(own.log_start),
            _ => None,
        }
    }

    /// The leader, once the running members agree there is one.
    pub async fn leader(&self) -> Result<(NodeId, ClusterStatus), String> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            match self.status().await {
                Ok(status) => match status.leader {
                    Some(id) if self.members.contains(&id) && self.cluster.is_running(id) => {
                        return Ok((id, status))
                    }
                    other => last = format!("leader {other:?}"),
                },
                Err(error) => last = error,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("no leader within {LEADER_WAIT:?}; last: {last}"))
    }

    fn pick_from(&mut self, ids: &[NodeId]) -> Option<NodeId> {
        if ids.is_empty() {
            return None;
        }
        Some(ids[self.rng.range(0, ids.len() as u64) as usize])
    }

    /// Restarts members that exited on their own (a crash is a violation).
    pub fn check_exits(&mut self) {
        for (id, status) in self.cluster.exited() {
            let tail = self.cluster.log_tail(id, 30);
            self.violation(format!(
                "node {id} exited on its own with {status}; its log ends:\n{tail}"
            ));
            if self.members.contains(&id) {
                self.cluster.start(id, &[], false);
            }
        }
    }

    /// Kills a follower, flips a byte inside the first frame of a segment in
    /// the middle of its log (or its only segment), and restarts it: the
    /// node must start, repair from the leader and remove its repair marker,
    /// and (the checker's part) no acknowledged record may go missing.
    async fn corrupt_follower(&mut self, kind: FaultKind, victim: NodeId) {
        self.cluster.kill(victim);
        let data_dir = self.cluster.data_dir(victim);
        let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(data_dir.join("log"))
            .map(|dir| {
                dir.filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
                    .collect()
            })
            .unwrap_or_default();
        segments.sort();
        // With three segments or more, the newest sealed one: all its
        // frames are synced and above the log start, so the damage must be
        // found. Otherwise the tail segment, whose first frames may not be.
        let strict = segments.len() >= 3;
        let pick = if strict {
            segments.len() - 2
        } else {
            segments.len().saturating_sub(1)
        };
        let Some(victim_segment) = segments.get(pick).cloned() else {
            self.note(format!("node {victim} has no segment to corrupt"));
            self.cluster.start(victim, &[], false);
            return;
        };
        // Segment header 64 bytes, frame header 48: a byte of the first
        // frame's payload (or, for an empty payload, of the next frame).
        const FLIP_AT: u64 = 64 + 48 + 4;
        let flipped = flip_byte(&victim_segment, FLIP_AT);
        self.fault(
            kind,
            format!(
                "kill -9 follower {victim}, flip byte {FLIP_AT} of {} ({flipped:?}), restart",
                victim_segment.display()
            ),
            false,
        );
        self.cluster.start(victim, &[], false);
        let marker = data_dir.join("REPAIR");
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        let mut seen = false;
        while tokio::time::Instant::now() < deadline {
            seen |= marker.exists();
            if seen && !marker.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if seen {
            self.violation(format!(
                "node {victim} still repairing after {CATCH_UP_WAIT:?}"
            ));
        } else {
            // The marker may have come and gone between two looks only if
            // the repair took under 50 ms; the node's log says either way.
            let log = std::fs::read_to_string(self.cluster.log_path(victim)).unwrap_or_default();
            if !log.contains("damaged") {
                let what = format!("node {victim} did not notice the flipped byte");
                if strict {
                    self.violation(what);
                } else {
                    self.note(format!("{what} (in its tail segment, maybe unsynced)"));
                }
            }
        }
    }

    /// Waits for an append committed after now; a violation if none comes.
    async fn wait_recovered(&mut self, what: &str) {
        let since = self.recorder.elapsed();
        let deadline = tokio::time::Instant::now() + RECOVERY_WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.recorder.last_ack_at().is_some_and(|at| at > since) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = self.status().await;
        self.violation(format!(
            "no append was committed within {RECOVERY_WAIT:?} after {what} healed; status: {status:?}"
        ));
    }

    /// Heals everything: no rules, no paused process, every member running.
    pub fn heal_all(&mut self) {
        if let Some(firewall) = &self.firewall {
            if let Err(error) = firewall.heal() {
                self.violation(format!("cannot remove the partition rules: {error}"));
            }
        }
        for id in self.members_vec() {
            if self.cluster.is_paused(id) {
                self.cluster.resume(id);
            }
            if !self.cluster.is_running(id) {
                self.cluster.start(id, &[], false);
            }
        }
        self.recorder.record(Op::Heal);
    }

    /// Runs one fault to its end (healed and recovered). `Err` when it
    /// could not run here (the reason is counted as a skip).
    pub async fn run(&mut self, kind: FaultKind) -> Result<(), String> {
        if kind.needs_firewall() && self.firewall.is_none() {
            return Err("iptables is not usable here".into());
        }
        self.check_exits();
        let (leader, status) = self.leader().await?;
        let followers: Vec<NodeId> = self
            .members
            .iter()
            .copied()
            .filter(|&id| id != leader)
            .collect();
        match kind {
            FaultKind::KillLeader => {
                self.cluster.kill(leader);
                self.fault(kind, format!("kill -9 leader {leader}"), true);
                self.hold().await;
                self.cluster.start(leader, &[], false);
            }
            FaultKind::KillFollower => {
                let victim = self.pick_from(&followers).ok_or("no follower")?;
                self.cluster.kill(victim);
                self.fault(kind, format!("kill -9 follower {victim}"), false);
                self.hold().await;
                self.cluster.start(victim, &[], false);
            }
            FaultKind::PauseLeader => {
                self.cluster.pause(leader);
                self.fault(kind, format!("SIGSTOP leader {leader}"), true);
                self.hold().await;
                self.cluster.resume(leader);
                self.check_paused_leader_deposed(leader, status.term).await;
            }
            FaultKind::PauseFollower => {
                let victim = self.pick_from(&followers).ok_or("no follower")?;
                self.cluster.pause(victim);
                self.fault(kind, format!("SIGSTOP follower {victim}"), false);
                self.hold().await;
                self.cluster.resume(victim);
            }
            FaultKind::IsolateLeader => {
                let others: Vec<NodeId> = followers.clone();
                self.partition(&[leader], &others, true)?;
                self.fault(
                    kind,
                    format!("isolate leader {leader} from {others:?}"),
                    true,
                );
                self.hold().await;
            }
            FaultKind::SplitMajority => {
                let mut shuffled = self.members_vec();
                for i in (1..shuffled.len()).rev() {
                    let j = self.rng.range(0, i as u64 + 1) as usize;
                    shuffled.swap(i, j);
                }
                let minority_size = (shuffled.len() - 1) / 2;
                let minority = shuffled[..minority_size].to_vec();
                let majority = shuffled[minority_size..].to_vec();
                self.partition(&minority, &majority, true)?;
                let leader_loss = minority.contains(&leader);
                self.fault(
                    kind,
                    format!("minority {minority:?} | majority {majority:?} (leader {leader})"),
                    leader_loss,
                );
                self.hold().await;
            }
            FaultKind::OneWayFromLeader => {
                self.partition(&[leader], &followers, false)?;
                self.fault(
                    kind,
                    format!("drop everything leader {leader} sends to {followers:?}"),
                    true,
                );
                self.hold().await;
            }
            FaultKind::OneWayToLeader => {
                self.partition(&followers, &[leader], false)?;
                self.fault(
                    kind,
                    format!("drop everything {followers:?} send to leader {leader}"),
                    true,
                );
                self.hold().await;
            }
            FaultKind::Bridge => {
                // The bridge sees both halves; the halves do not see each other.
                let bridge = self.pick_from(&self.members_vec()).ok_or("no member")?;
                let mut rest: Vec<NodeId> = self
                    .members
                    .iter()
                    .copied()
                    .filter(|&id| id != bridge)
                    .collect();
                let half = rest.len() / 2;
                let right = rest.split_off(half);
                let left = rest;
                self.partition(&left, &right, true)?;
                self.fault(
                    kind,
                    format!("{left:?} | {right:?}, bridged by {bridge} (leader {leader})"),
                    false,
                );
                self.hold().await;
            }
            FaultKind::TransferLeader => {
                let target = self.pick_from(&followers).ok_or("no follower")?;
                self.fault(
                    kind,
                    format!("transfer leadership {leader} -> {target}"),
                    false,
                );
                let members = self.members_vec();
                if let Err(error) = self
                    .cluster
                    .cli(&["admin", "transfer-leader", &target.to_string()], &members)
                    .await
                {
                    // Refusing (e.g. the target is behind) is allowed; say so.
                    self.note(format!("transfer to {target} refused: {error}"));
                }
            }
            FaultKind::ReplaceFollower | FaultKind::ReplaceLeader => {
                let victim = if kind == FaultKind::ReplaceLeader {
                    leader
                } else {
                    self.pick_from(&followers).ok_or("no follower")?
                };
                self.replace(kind, victim).await?;
            }
            FaultKind::RollingRestart => {
                self.fault(
                    kind,
                    format!("restart {:?} one by one", self.members),
                    false,
                );
                for id in self.members_vec() {
                    match self.cluster.terminate(id) {
                        Some(status) if status.success() => {}
                        other => {
                            let tail = self.cluster.log_tail(id, 30);
                            self.violation(format!(
                                "node {id} did not exit 0 on SIGTERM ({other:?}); log:\n{tail}"
                            ));
                        }
                    }
                    self.cluster.start(id, &[], false);
                    self.wait_recovered(&format!("the restart of node {id}"))
                        .await;
                }
            }
            FaultKind::LaggingFollowerReset => {
                let victim = self.pick_from(&followers).ok_or("no follower")?;
                self.lagging_reset(kind, victim, status).await?;
            }
            FaultKind::CorruptFollower => {
                let victim = self.pick_from(&followers).ok_or("no follower")?;
                self.corrupt_follower(kind, victim).await;
            }
        }
        self.heal_all();
        self.wait_recovered(kind.name()).await;
        self.check_exits();
        *self.done.entry(kind.name()).or_default() += 1;
        Ok(())
    }

    /// Drops traffic from every node of `from` to every node of `to`, and
    /// back when `both_ways`.
    fn partition(&mut self, from: &[NodeId], to: &[NodeId], both_ways: bool) -> Result<(), String> {
        let firewall = self.firewall.as_ref().ok_or("no firewall")?;
        for &a in from {
            for &b in to {
                let (ip_a, ip_b) = (self.cluster.ip(a), self.cluster.ip(b));
                if both_ways {
                    firewall.drop_both_ways(ip_a, ip_b)?;
                } else {
                    firewall.drop_one_way(ip_a, ip_b)?;
                }
            }
        }
        Ok(())
    }

    /// A leader paused past the election timeout must be deposed: after it
    /// wakes, the cluster's leader is in a newer term.
    async fn check_paused_leader_deposed(&mut self, old_leader: NodeId, old_term: u64) {
        match self.leader().await {
            Ok((_, status)) if status.term > old_term => {}
            Ok((leader, status)) => self.note(format!(
                "after pausing leader {old_leader} in term {old_term}, leader {leader} \
                 is in term {} (the pause was shorter than an election)",
                status.term
            )),
            Err(error) => self.violation(format!(
                "no leader after leader {old_leader} woke up: {error}"
            )),
        }
    }

    /// Adds a fresh node (started with `--join`), waits until it votes, then
    /// removes `victim` and stops it for good.
    async fn replace(&mut self, kind: FaultKind, victim: NodeId) -> Result<(), String> {
        let fresh = self.next_slot;
        if fresh > self.cluster.slot_count() {
            return Err("no fresh node slot left".into());
        }
        self.next_slot += 1;
        let members = self.members_vec();
        self.cluster.start(fresh, &members, true);
        self.fault(
            kind,
            format!("add node {fresh}, then remove node {victim} (members {members:?})"),
            false,
        );
        let addr = format!("{fresh}={}", self.cluster.addr(fresh));
        if let Err(error) = self
            .cluster
            .cli(&["admin", "add-node", &addr], &members)
            .await
        {
            // The answer may be lost or late (the change goes on): the
            // membership the cluster reports decides.
            self.note(format!("add-node {fresh}: {error}"));
        }
        if let Err(error) = self
            .wait_membership(|membership| membership.contains(&fresh))
            .await
        {
            // Removing a node now would leave fewer voters than planned.
            self.violation(format!("node {fresh} never became a voter: {error}"));
            return Ok(());
        }
        let members = self.members_vec();
        if let Err(error) = self
            .cluster
            .cli(&["admin", "remove-node", &victim.to_string()], &members)
            .await
        {
            self.note(format!("remove-node {victim}: {error}"));
        }
        if let Err(error) = self
            .wait_membership(|membership| !membership.contains(&victim))
            .await
        {
            self.violation(format!("node {victim} was never removed: {error}"));
            return Ok(());
        }
        self.cluster.kill(victim);
        Ok(())
    }

    /// Waits until the cluster's voters satisfy `done`; keeps `members` in
    /// step with what the cluster reports.
    async fn wait_membership(
        &mut self,
        done: impl Fn(&BTreeSet<NodeId>) -> bool,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            match self.status().await {
                Ok(status) if status.leader.is_some() => {
                    let voters: BTreeSet<NodeId> = status
                        .nodes
                        .iter()
                        .filter(|node| node.role != NodeRole::Learner)
                        .map(|node| node.id)
                        .collect();
                    if done(&voters) {
                        self.members = voters;
                        let addrs = self
                            .members
                            .iter()
                            .map(|&id| self.cluster.addr(id).to_string())
                            .collect();
                        self.client_members.set(addrs);
                        return Ok(());
                    }
                    last = format!("voters {voters:?}");
                }
                Ok(status) => last = format!("no leader in {status:?}"),
                Err(error) => last = error,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("not within {CATCH_UP_WAIT:?}; last: {last}"))
    }

    /// Stops `victim` until the leader's log start has passed everything it
    /// has, restarts it, and checks it was reset to the leader's log start
    /// and caught up.
    async fn lagging_reset(
        &mut self,
        kind: FaultKind,
        victim: NodeId,
        status: ClusterStatus,
    ) -> Result<(), String> {
        self.cluster.kill(victim);
        // What the follower holds, read from its stopped disk (entries may
        // have reached it after `status` was taken; if it holds the entry
        // just below the leader's new log start, InstallLogStart keeps its
        // log and no reset is due).
        let victim_last = raftlog::storage::verify::verify_data_dir(self.cluster.data_dir(victim))
            .ok()
            .and_then(|report| report.last_index)
            .unwrap_or(status.last_index)
            .max(status.last_index);
        self.fault(
            kind,
            format!("kill -9 follower {victim} (at index {victim_last}) until retention passes it"),
            false,
        );
        let deadline = tokio::time::Instant::now() + RETENTION_WAIT;
        let mut log_start = 0;
        while tokio::time::Instant::now() < deadline {
            if let Some(leader_log_start) = self.leader_log_start().await {
                log_start = leader_log_start;
                if log_start > victim_last + 1 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if log_start <= victim_last + 1 {
            self.note(format!(
                "retention did not pass node {victim}'s index {victim_last} within \
                 {RETENTION_WAIT:?} (log start {log_start}); restarting it anyway"
            ));
        }
        self.cluster.start(victim, &[], false);
        let reset_seen = async {
            for _ in 0..300 {
                let log =
                    std::fs::read_to_string(self.cluster.log_path(victim)).unwrap_or_default();
                if log.contains("log reset to the leader's log start") {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
        .await;
        if log_start > victim_last + 1 && !reset_seen {
            self.violation(format!(
                "node {victim} (last index {victim_last}) came back behind the log start \
                 {log_start} but never logged a reset to it"
            ));
        }
        Ok(())
    }
}

/// Flips every bit of the byte at `offset` of `path`; returns the new byte.
fn flip_byte(path: &std::path::Path, offset: u64) -> Result<u8, String> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|error| error.to_string())?;
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut byte))
        .map_err(|error| error.to_string())?;
    byte[0] ^= 0xff;
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.write_all(&byte))
        .and_then(|_| file.sync_all())
        .map_err(|error| error.to_string())?;
    Ok(byte[0])
}
