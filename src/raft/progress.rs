//! What a leader knows about each follower's log, and the flow control of
//! replication to it.
//!
//! Invariants: `match_index < next_index`; the in-flight queue holds the
//! last index of each unacknowledged AppendEntries in increasing order and
//! `inflight_bytes` is the sum of their sizes.

use std::collections::VecDeque;

use crate::types::LogIndex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// Unknown how far the follower's log matches: one AppendEntries at a
    /// time, waiting for its answer (or the next heartbeat) before the next.
    Probe,
    /// The follower's log is known to match up to `match_index`: stream
    /// AppendEntries back to back within the in-flight limits.
    Replicate,
    /// The follower needs entries below our log start: an InstallLogStart
    /// is outstanding.
    LogStart,
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    pub state: ReplicationState,
    /// In Probe or LogStart state: a message is out, wait before the next.
    pub paused: bool,
    pub inflight: VecDeque<(LogIndex, u64)>,
    pub inflight_bytes: u64,
    /// Heard from since the last CheckQuorum round.
    pub recent_active: bool,
    /// The core's tick count when this peer was last heard from.
    pub last_heard_tick: u64,
    /// The peer's last answer said it is repairing a damaged log.
    pub repairing: bool,
    /// In Replicate state: ticks the oldest unacknowledged AppendEntries
    /// has waited without any acknowledgement since. Heartbeats refer to
    /// the match index, so they no longer reveal a lost batch; this
    /// retransmission timer does.
    pub stalled_ticks: u64,
    /// The highest commit index the follower can have applied from what we
    /// sent it (`min(leader_commit, prev_log_index + entries)` of each
    /// AppendEntries): a commit notice it would gain nothing from is not sent,
    /// and one it needs is sent as soon as its acknowledgement shows it can
    /// use it.
    pub commit_told: LogIndex,
}

impl Progress {
    pub fn new(next_index: LogIndex, now_tick: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe,
            paused: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: true,
            last_heard_tick: now_tick,
            repairing: false,
            stalled_ticks: 0,
            commit_told: 0,
        }
    }

    pub fn become_probe(&mut self) {
        self.state = ReplicationState::Probe;
        self.paused = false;
        self.next_index = self.match_index + 1;
        self.clear_inflight();
    }

    pub fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.paused = false;
        self.next_index = self.match_index + 1;
        self.clear_inflight();
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.stalled_ticks = 0;
    }

    /// One tick passed; returns true if the batches in flight have waited
    /// `ticks_max` ticks without an acknowledgement (one was lost: a
    /// transport that drops frames under overload, or a connection break).
    pub fn tick_stalled(&mut self, ticks_max: u64) -> bool {
        if self.state != ReplicationState::Replicate || self.inflight.is_empty() {
            self.stalled_ticks = 0;
            return false;
        }
        self.stalled_ticks += 1;
        self.stalled_ticks >= ticks_max
    }

    /// The follower acknowledged its log matches up to `index`; returns true
    /// if that is news.
    pub fn acknowledge(&mut self, index: LogIndex) -> bool {
        while self
            .inflight
            .front()
            .is_some_and(|&(last, _)| last <= index)
        {
            if let Some((_, bytes)) = self.inflight.pop_front() {
                self.inflight_bytes -= bytes;
            }
        }
        if index <= self.match_index {
            return false;
        }
        self.stalled_ticks = 0;
        self.match_index = index;
        self.next_index = self.next_index.max(index + 1);
        debug_assert!(self.match_index < self.next_index);
        true
    }

    pub fn sent(&mut self, last_index: LogIndex, bytes: u64) {
        if self.state == ReplicationState::Replicate {
            self.inflight.push_back((last_index, bytes));
            self.inflight_bytes += bytes;
            self.next_index = last_index + 1;
        } else {
            self.paused = true;
        }
    }

    pub fn inflight_full(&self, messages_max: usize, bytes_max: u64) -> bool {
        self.inflight.len() >= messages_max || self.inflight_bytes >= bytes_max
    }
}
