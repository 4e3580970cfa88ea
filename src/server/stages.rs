//! Where an append's time goes: per-stage latency on the leader (and the
//! follower side of replication), for `bench --breakdown` and the
//! `raftlog_append_stage_seconds` metric.
//!
//! Stages, each measured on its own (they overlap: local sync and the
//! follower round trip run side by side):
//! - `queue`: the request read off its stream → the driver takes it;
//! - `sync_wait`: an entry written → the group-commit sync that covers it
//!   starts (it waits while an earlier sync runs);
//! - `local_sync`: proposed → this node's sync covering it is done;
//! - `follower_ack`: AppendEntries handed to a peer link → that peer's ack
//!   covering its last entry arrives (network, follower write and sync);
//! - `commit`: proposed → committed (a majority holds it durably);
//! - `reply`: committed → the answer is written to the client's stream;
//! - `total`: read off the stream → answer written;
//! - `follower_sync`: on a follower, AppendEntries arrived → its entries are
//!   durable (the follower's share of `follower_ack`).
//!
//! Histograms are in microseconds (hdrhistogram, so medians are exact to
//! three digits); the tracking queues are bounded, so a node that never
//! syncs or commits does not grow them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::types::{LogIndex, NodeId};

/// One measured stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Queue,
    SyncWait,
    LocalSync,
    FollowerAck,
    Commit,
    Reply,
    Total,
    FollowerSync,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Queue,
        Stage::SyncWait,
        Stage::LocalSync,
        Stage::FollowerAck,
        Stage::Commit,
        Stage::Reply,
        Stage::Total,
        Stage::FollowerSync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Queue => "queue",
            Stage::SyncWait => "sync_wait",
            Stage::LocalSync => "local_sync",
            Stage::FollowerAck => "follower_ack",
            Stage::Commit => "commit",
            Stage::Reply => "reply",
            Stage::Total => "total",
            Stage::FollowerSync => "follower_sync",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Latencies above this are recorded as this (an hour, in microseconds).
const STAGE_US_MAX: u64 = 3_600_000_000;

/// A summary of one stage's samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageSummary {
    pub stage: Stage,
    pub samples: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub mean_us: f64,
}

/// Per-stage histograms, shared by the driver, the client tasks and
/// whoever reads them (metrics, an embedded bench).
#[derive(Clone)]
pub struct AppendStages {
    histograms: Arc<Mutex<Vec<Histogram<u64>>>>,
    /// Mirrors into the Prometheus histogram family, when registered.
    exported: Option<prometheus_client::metrics::family::Family<StageLabels, PromHistogram>>,
    /// `raftlog_commit_seconds`, fed by the `commit` stage (its own buckets).
    commit_seconds: Option<PromHistogram>,
}

type PromHistogram = prometheus_client::metrics::histogram::Histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

impl std::fmt::Debug for AppendStages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendStages").finish_non_exhaustive()
    }
}

impl Default for AppendStages {
    fn default() -> AppendStages {
        AppendStages::new(None, None)
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds fixed at compile time and valid: 1 µs .. an hour, 3 digits.
    Histogram::new_with_bounds(1, STAGE_US_MAX, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

impl AppendStages {
    pub fn new(
        exported: Option<prometheus_client::metrics::family::Family<StageLabels, PromHistogram>>,
        commit_seconds: Option<PromHistogram>,
    ) -> AppendStages {
        AppendStages {
            histograms: Arc::new(Mutex::new(
                Stage::ALL.iter().map(|_| new_histogram()).collect(),
            )),
            exported,
            commit_seconds,
        }
    }

    pub fn record(&self, stage: Stage, took: Duration) {
        let micros = u64::try_from(took.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, STAGE_US_MAX);
        if let Ok(mut histograms) = self.histograms.lock() {
            if let Some(histogram) = histograms.get_mut(stage.slot()) {
                histogram.saturating_record(micros);
            }
        }
        if let Some(family) = &self.exported {
            family
                .get_or_create(&StageLabels {
                    stage: stage.name(),
                })
                .observe(took.as_secs_f64());
        }
        if let (Stage::Commit, Some(histogram)) = (stage, &self.commit_seconds) {
            histogram.observe(took.as_secs_f64());
        }
    }

    /// Forgets every sample (a bench calls it when its warm-up ends).
    pub fn reset(&self) {
        if let Ok(mut histograms) = self.histograms.lock() {
            for histogram in histograms.iter_mut() {
                histogram.reset();
            }
        }
    }

    /// The stages with samples, in [`Stage::ALL`] order.
    pub fn summary(&self) -> Vec<StageSummary> {
        let Ok(histograms) = self.histograms.lock() else {
            return Vec::new();
        };
        Stage::ALL
            .iter()
            .filter_map(|&stage| {
                let histogram = histograms.get(stage.slot())?;
                (!histogram.is_empty()).then(|| StageSummary {
                    stage,
                    samples: histogram.len(),
                    p50_us: histogram.value_at_quantile(0.5),
                    p90_us: histogram.value_at_quantile(0.9),
                    p99_us: histogram.value_at_quantile(0.99),
                    mean_us: histogram.mean(),
                })
            })
            .collect()
    }
}

/// Entries the tracker follows at most per queue: beyond it the oldest are
/// dropped (their stages go unmeasured, nothing else changes).
const TRACKED_MAX: usize = 65_536;

/// What the driver remembers to time the stages of appends in flight.
#[derive(Debug, Default)]
pub struct StageClock {
    /// Proposed appends by their last index: when they were proposed and
    /// whether this node's sync has covered them yet.
    proposed: VecDeque<(LogIndex, Instant)>,
    /// Appends waiting for the local sync: (last index, proposed at).
    awaiting_sync: VecDeque<(LogIndex, Instant)>,
    /// When the oldest entry not yet covered by a started sync was written.
    unsynced_since: Option<Instant>,
    /// Per peer: AppendEntries sent, by the last index they carry.
    sent: BTreeMap<NodeId, VecDeque<(LogIndex, Instant)>>,
    /// On a follower: AppendEntries received, by their last index.
    received: VecDeque<(LogIndex, Instant)>,
}

fn push_bounded(queue: &mut VecDeque<(LogIndex, Instant)>, item: (LogIndex, Instant)) {
    if queue.len() >= TRACKED_MAX {
        queue.pop_front();
    }
    queue.push_back(item);
}

/// Removes the items whose index is at most `index`, returning their times.
fn drain_up_to(
    queue: &mut VecDeque<(LogIndex, Instant)>,
    index: LogIndex,
) -> impl Iterator<Item = Instant> + '_ {
    let covered = queue.iter().take_while(|(last, _)| *last <= index).count();
    queue.drain(..covered).map(|(_, at)| at)
}

impl StageClock {
    pub fn proposed(&mut self, last_index: LogIndex, at: Instant) {
        push_bounded(&mut self.proposed, (last_index, at));
        push_bounded(&mut self.awaiting_sync, (last_index, at));
    }

    pub fn written(&mut self, at: Instant) {
        self.unsynced_since.get_or_insert(at);
    }

    pub fn sync_started(&mut self, stages: &AppendStages, now: Instant) {
        if let Some(since) = self.unsynced_since.take() {
            stages.record(Stage::SyncWait, now.saturating_duration_since(since));
        }
    }

    pub fn synced(&mut self, stages: &AppendStages, index: LogIndex, now: Instant) {
        for at in drain_up_to(&mut self.awaiting_sync, index) {
            stages.record(Stage::LocalSync, now.saturating_duration_since(at));
        }
        for at in drain_up_to(&mut self.received, index) {
            stages.record(Stage::FollowerSync, now.saturating_duration_since(at));
        }
    }

    pub fn committed(&mut self, stages: &AppendStages, commit_index: LogIndex, now: Instant) {
        for at in drain_up_to(&mut self.proposed, commit_index) {
            stages.record(Stage::Commit, now.saturating_duration_since(at));
        }
    }

    pub fn sent_entries(&mut self, peer: NodeId, last_index: LogIndex, at: Instant) {
        push_bounded(self.sent.entry(peer).or_default(), (last_index, at));
    }

    pub fn acked(
        &mut self,
        stages: &AppendStages,
        peer: NodeId,
        match_index: LogIndex,
        now: Instant,
    ) {
        let Some(queue) = self.sent.get_mut(&peer) else {
            return;
        };
        // Only the newest covered send counts: older ones were re-sent or
        // overtaken, and timing them from their first send would count waits
        // that were not the network's or the follower's.
        if let Some(at) = drain_up_to(queue, match_index).last() {
            stages.record(Stage::FollowerAck, now.saturating_duration_since(at));
        }
    }

    pub fn received_entries(&mut self, last_index: LogIndex, at: Instant) {
        push_bounded(&mut self.received, (last_index, at));
    }

    /// A truncation or a role change: what is tracked may never complete.
    pub fn clear(&mut self) {
        *self = StageClock::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_is_timed_once_per_tracked_append() {
        let stages = AppendStages::default();
        let mut clock = StageClock::default();
        let start = Instant::now();
        clock.proposed(3, start);
        clock.proposed(5, start);
        clock.written(start);
        clock.sync_started(&stages, start + Duration::from_micros(10));
        clock.synced(&stages, 4, start + Duration::from_micros(100));
        clock.synced(&stages, 5, start + Duration::from_micros(200));
        clock.sent_entries(2, 5, start);
        clock.acked(&stages, 2, 5, start + Duration::from_micros(150));
        clock.acked(&stages, 2, 5, start + Duration::from_micros(170));
        clock.committed(&stages, 5, start + Duration::from_micros(160));
        let summary = stages.summary();
        let find = |stage| summary.iter().find(|s| s.stage == stage).copied();
        let local = find(Stage::LocalSync).map(|s| s.samples);
        assert_eq!(local, Some(2));
        assert_eq!(find(Stage::SyncWait).map(|s| s.p50_us), Some(10));
        assert_eq!(find(Stage::FollowerAck).map(|s| s.samples), Some(1));
        assert_eq!(find(Stage::Commit).map(|s| s.samples), Some(2));
        assert_eq!(find(Stage::Queue), None);
        stages.reset();
        assert!(stages.summary().is_empty());
    }
}
