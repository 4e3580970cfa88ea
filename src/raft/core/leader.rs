//! The leader: proposals, replication within flow-control limits,
//! acknowledgements and rejects, the commit rule, heartbeats and CheckQuorum.

use std::ops::RangeInclusive;

use super::*;
use crate::raft::log::entry_bytes;
use crate::raft::progress::ReplicationState;
use crate::raft::quorum::{majority_index, quorum};
use crate::types::{Entry, EntryKind, LogIndex, NodeId, Term};

impl Core {
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.heartbeat_due = true;
        }
        // A follower that acknowledged nothing of what is in flight for an
        // election timeout lost a batch: resend from its match index.
        let stall_ticks_max = self.config.election_ticks_min;
        for pr in self.progress.values_mut() {
            if pr.tick_stalled(stall_ticks_max) {
                pr.become_probe();
                self.replication_probes += 1;
            }
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

    pub(super) fn check_can_propose(&self) -> Result<(), ProposeError> {
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

    pub(super) fn leader_append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        debug_assert_eq!(self.role, Role::Leader);
        let before = self.log.last_config_index();
        let _ = self.log.append(entries);
        if self.log.last_config_index() != before {
            self.rebuild_progress();
        }
        // A single-voter cluster commits on its own sync; others need acks.
        self.maybe_commit();
    }

    pub(super) fn step_leader(&mut self, from: NodeId, message: Message) -> Result<(), StepError> {
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
            // Answered in `step` whatever the role.
            Message::TermProbe(_) | Message::TermProbeResponse(_) => Ok(()),
        }
    }

    pub(super) fn handle_ack(
        &mut self,
        from: NodeId,
        match_index: LogIndex,
    ) -> Result<(), StepError> {
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
            // Heartbeats and commit notices refer to the match index, so a
            // follower whose acknowledgement arrives after a commit advanced
            // learns it only now: tell it at once, not a heartbeat later.
            if let Some(pr) = self.progress.get(&from) {
                if self.commit_index.min(pr.match_index) > pr.commit_told {
                    self.commit_broadcast_due = true;
                }
            }
        }
        if caught_up && self.transfer.is_some_and(|(to, _)| to == from) {
            let term = self.term();
            self.send(from, Message::TimeoutNow(TimeoutNow { term }));
        }
        Ok(())
    }

    pub(super) fn handle_reject(&mut self, from: NodeId, rejected: LogIndex, hint: RejectHint) {
        let Some(pr) = self.progress.get(&from) else {
            return;
        };
        // Index 0 always matches, so no reject of ours names it: this is a
        // node's answer to us as a stale leader of an earlier term (it
        // carries the node's term and index 0), delivered once we lead that
        // term. Taken as a reject it would move next_index to 0.
        if rejected == 0 {
            return;
        }
        let stale = match pr.state {
            // A reject at the match index itself is news: the follower
            // lost entries it acknowledged (storage damage) and must be
            // refilled, even by an idle leader.
            ReplicationState::Replicate if self.config.bugs.reject_at_match_index_is_stale => {
                rejected <= pr.match_index
            }
            ReplicationState::Replicate => rejected < pr.match_index,
            ReplicationState::Probe => rejected.checked_add(1) != Some(pr.next_index),
            ReplicationState::LogStart => true,
        };
        if stale {
            return;
        }
        let next = match hint {
            RejectHint::LogTooShort { last_index } => last_index.saturating_add(1).min(rejected),
            RejectHint::ConflictingTerm { term, first_index } => {
                match self.log.last_index_of_term(term, rejected) {
                    Some(last_of_term) => (last_of_term + 1).min(rejected),
                    None => first_index.min(rejected),
                }
            }
        };
        // Indexes start at 1 (a hint of 0 from a confused peer included).
        let next = next.max(1);
        if let Some(pr) = self.progress.get_mut(&from) {
            if next <= pr.match_index {
                // The follower no longer holds entries it acknowledged: its
                // storage found damage and cut its log (it does not vote
                // until it is refilled). Stop counting them and repair it
                // from where its log now ends.
                pr.match_index = next - 1;
            }
            if pr.state == ReplicationState::Replicate {
                self.replication_probes += 1;
            }
            pr.become_probe();
            pr.next_index = next.max(pr.match_index + 1);
        }
    }

    /// Advances the commit index to the highest index a quorum has persisted
    /// whose entry is of the current term (§5.4.2: never by counting an
    /// older term's entry).
    pub(super) fn maybe_commit(&mut self) {
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
        debug_assert!(
            self.config.bugs.any() || self.log.term(candidate) == Some(self.term()),
            "a leader commits by counting only entries of its own term (§5.4.2)"
        );
        self.commit_index = candidate;
        self.commit_broadcast_due = true;
        self.on_commit_advanced();
    }

    /// Leader: fills the network within each follower's flow-control limits.
    pub(super) fn replicate_all<R: LogReader>(
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

    pub(super) fn replicate_to<R: LogReader>(
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
                    let commit_news_for_peer = commit_news
                        && pr.next_index > last
                        && self.commit_index.min(pr.match_index) > pr.commit_told;
                    if !sent_any && (heartbeat || commit_news_for_peer) {
                        // Heartbeat: an empty append after what we sent. A
                        // follower missing some of it rejects, and we probe.
                        self.send_append_empty(peer);
                    }
                    return Ok(());
                }
            }
        }
    }

    pub(super) fn send_log_start(&mut self, peer: NodeId) {
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

    pub(super) fn send_append_empty(&mut self, peer: NodeId) {
        let Some(pr) = self.progress.get(&peer) else {
            return;
        };
        // What the follower acknowledged, not what was sent: a heartbeat
        // travels on the control lane and overtakes the batches in flight,
        // and one that referred to them would be rejected and send the
        // follower back to Probe. (Entries below our log start are
        // committed, so their boundary is a safe reference too.)
        let prev_log_index = if self.config.bugs.heartbeat_prev_is_next_index {
            pr.next_index - 1
        } else {
            pr.match_index.max(self.log.first_index() - 1)
        };
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            self.send_log_start(peer);
            return;
        };
        self.send_append_entries(peer, prev_log_index, prev_log_term, Vec::new());
    }

    /// Sends `entries` after `prev_log_index` (none: a heartbeat or probe)
    /// with this leader's term and commit index.
    pub(super) fn send_append_entries(
        &mut self,
        peer: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
    ) {
        let usable_commit = self
            .commit_index
            .min(prev_log_index.saturating_add(entries.len() as u64));
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.commit_told = pr.commit_told.max(usable_commit);
        }
        let message = Message::AppendEntries(AppendEntries {
            term: self.term(),
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.commit_index,
        });
        self.send(peer, message);
    }

    pub(super) fn send_append<R: LogReader>(
        &mut self,
        peer: NodeId,
        reader: &R,
    ) -> Result<(), LogReadError> {
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
    pub(super) fn read_entries<R: LogReader>(
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
