//! The checker: pure functions from a [`History`] to the violations it
//! shows, plus availability figures.
//!
//! The rules (issue 7), each a property of the whole history:
//! - every acknowledged record is read, exactly once, at the index it was
//!   acknowledged with (unless every node's log start has passed it by the
//!   end, when nobody can read it any more: counted, not failed);
//! - two reads of one index, by any consumer from any node at any time,
//!   agree;
//! - each consumer reads in strictly increasing index order without a gap:
//!   no index that holds a record anywhere lies between two of its reads,
//!   unless the node told it that retention dropped that index;
//! - nothing is read that was never published, and no record is read at
//!   two indexes (a producer-id retry never duplicates);
//! - no consumer reads beyond what is committed at the end: every node's
//!   final log reaches every index anybody read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::Bytes;

use super::history::{parse_payload, History, LogIndex, NodeId, Op, RecordId};

/// Violations listed in full, at most; the rest are counted.
pub const VIOLATIONS_SHOWN_MAX: usize = 40;

#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<String>,
    pub invoked: usize,
    pub acked: usize,
    pub failed_attempts: usize,
    pub reads: usize,
    pub indexes_read: usize,
    /// Acknowledged records below every node's final log start that no
    /// consumer read before retention dropped them.
    pub acked_unverifiable: usize,
    /// Never acknowledged, yet in the log (an attempt that failed after it
    /// committed) / nowhere to be seen.
    pub unacked_in_log: usize,
    pub unacked_absent: usize,
    pub skips: usize,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} records invoked, {} acknowledged, {} failed attempts; {} reads of {} indexes; \
             {} retention skips; unacknowledged: {} in the log, {} absent; \
             {} acknowledged records dropped by retention before any read",
            self.invoked,
            self.acked,
            self.failed_attempts,
            self.reads,
            self.indexes_read,
            self.skips,
            self.unacked_in_log,
            self.unacked_absent,
            self.acked_unverifiable
        );
        if !self.violations.is_empty() {
            let _ = write!(text, "\n{} VIOLATIONS:", self.violations.len());
            for violation in self.violations.iter().take(VIOLATIONS_SHOWN_MAX) {
                let _ = write!(text, "\n  - {violation}");
            }
            if self.violations.len() > VIOLATIONS_SHOWN_MAX {
                let _ = write!(
                    text,
                    "\n  ... and {} more",
                    self.violations.len() - VIOLATIONS_SHOWN_MAX
                );
            }
        }
        text
    }
}

/// Where and by whom an index was first read.
struct FirstRead<'a> {
    data: &'a Bytes,
    consumer: &'a str,
    node: NodeId,
    at: Duration,
}

/// One consumer's view: its reads in order, and the ranges it was told
/// retention dropped (with the position in `reads` they came before).
#[derive(Default)]
struct ConsumerView {
    reads: Vec<(LogIndex, Duration)>,
    skips: Vec<(usize, RangeInclusive<LogIndex>)>,
}

pub fn check(history: &History) -> Report {
    let mut report = Report::default();
    let violations = &mut report.violations;

    let mut invoked: BTreeMap<RecordId, &Bytes> = BTreeMap::new();
    let mut acks: BTreeMap<RecordId, BTreeSet<LogIndex>> = BTreeMap::new();
    let mut by_index: BTreeMap<LogIndex, FirstRead> = BTreeMap::new();
    let mut located: BTreeMap<RecordId, BTreeSet<LogIndex>> = BTreeMap::new();
    let mut consumers: BTreeMap<&str, ConsumerView> = BTreeMap::new();

    for event in &history.events {
        match &event.op {
            Op::Invoke { id, data } => {
                if invoked.insert(*id, data).is_some() {
                    violations.push(format!("record {id:?} invoked twice (a suite bug)"));
                }
            }
            Op::Ack { id, index } => {
                acks.entry(*id).or_default().insert(*index);
            }
            Op::Fail { .. } => report.failed_attempts += 1,
            Op::Read {
                consumer,
                node,
                index,
                data,
            } => {
                report.reads += 1;
                match parse_payload(data) {
                    Some(id) if invoked.get(&id) == Some(&data) => {
                        located.entry(id).or_default().insert(*index);
                    }
                    _ => violations.push(format!(
                        "phantom: {consumer} read {:?} at index {index} from node {node} \
                         at {:?}, which no publisher invoked (before then)",
                        String::from_utf8_lossy(data),
                        event.at
                    )),
                }
                match by_index.get(index) {
                    Some(first) if first.data != data => violations.push(format!(
                        "divergent index {index}: {} read {:?} from node {} at {:?}, \
                         {consumer} read {:?} from node {node} at {:?}",
                        first.consumer,
                        String::from_utf8_lossy(first.data),
                        first.node,
                        first.at,
                        String::from_utf8_lossy(data),
                        event.at
                    )),
                    Some(_) => {}
                    None => {
                        by_index.insert(
                            *index,
                            FirstRead {
                                data,
                                consumer,
                                node: *node,
                                at: event.at,
                            },
                        );
                    }
                }
                let view = consumers.entry(consumer).or_default();
                if let Some(&(last, last_at)) = view.reads.last() {
                    if *index <= last {
                        violations.push(format!(
                            "order: {consumer} read index {index} from node {node} at {:?} \
                             after index {last} at {last_at:?}",
                            event.at
                        ));
                    }
                }
                view.reads.push((*index, event.at));
            }
            Op::Skip {
                consumer,
                first,
                last,
                ..
            } => {
                report.skips += 1;
                let view = consumers.entry(consumer).or_default();
                let position = view.reads.len();
                view.skips.push((position, *first..=*last));
            }
            Op::Violation { reason } => violations.push(reason.clone()),
            Op::Fault { .. } | Op::Heal => {}
        }
    }
    report.invoked = invoked.len();
    report.acked = acks.len();
    report.indexes_read = by_index.len();

    for (id, indexes) in &located {
        if indexes.len() > 1 {
            violations.push(format!(
                "duplicate: record {id:?} read at indexes {indexes:?}"
            ));
        }
    }
    for (id, indexes) in &acks {
        if indexes.len() > 1 {
            violations.push(format!(
                "retry duplicate: record {id:?} acknowledged at indexes {indexes:?}"
            ));
        }
    }

    // Gaps: an index that holds a record, between two reads of one consumer.
    for (consumer, view) in &consumers {
        for (position, pair) in view.reads.windows(2).enumerate() {
            let ((before, before_at), (after, after_at)) = (pair[0], pair[1]);
            if after <= before + 1 {
                continue;
            }
            // Skips recorded between these two reads (position + 1 is the
            // read count when `after` was read).
            let skipped: Vec<&RangeInclusive<LogIndex>> = view
                .skips
                .iter()
                .filter(|(at, _)| *at == position + 1)
                .map(|(_, range)| range)
                .collect();
            let missing: Vec<LogIndex> = by_index
                .range(before + 1..after)
                .map(|(index, _)| *index)
                .filter(|index| !skipped.iter().any(|range| range.contains(index)))
                .collect();
            if let Some(first_missing) = missing.first() {
                violations.push(format!(
                    "gap: {consumer} read index {before} at {before_at:?} then {after} at \
                     {after_at:?}, missing {} indexes that hold records (first {first_missing})",
                    missing.len()
                ));
            }
        }
    }

    // The final logs: every index anybody read is committed at the end.
    let final_ranges: BTreeMap<&str, (LogIndex, LogIndex)> = history
        .final_consumers
        .iter()
        .filter_map(|name| {
            let view = consumers.get(name.as_str())?;
            let first = view.reads.first()?.0;
            let last = view.reads.last()?.0;
            Some((name.as_str(), (first, last)))
        })
        .collect();
    for name in &history.final_consumers {
        if !final_ranges.contains_key(name.as_str()) {
            violations.push(format!("final read {name} read nothing"));
        }
    }
    let highest_read = by_index.keys().next_back().copied().unwrap_or(0);
    for (name, (_, last)) in &final_ranges {
        if highest_read > *last {
            let first = by_index.range(last + 1..).next().map(|(i, _)| *i);
            violations.push(format!(
                "beyond commit: index {first:?} (and up to {highest_read}) was read, \
                 but the final log of {name} ends at {last}"
            ));
        }
    }
    // Below every node's final log start, nothing can be read any more.
    let readable_from = final_ranges
        .values()
        .map(|(first, _)| *first)
        .min()
        .unwrap_or(0);

    for (id, indexes) in &acks {
        let Some(&acked_index) = indexes.iter().next() else {
            continue;
        };
        match located.get(id) {
            Some(read_at) if read_at.contains(&acked_index) => {}
            Some(read_at) => violations.push(format!(
                "misplaced: record {id:?} acknowledged at index {acked_index} but read at {read_at:?}"
            )),
            None if acked_index < readable_from => report.acked_unverifiable += 1,
            None => violations.push(format!(
                "lost: record {id:?} acknowledged at index {acked_index} was never read{}",
                match by_index.get(&acked_index) {
                    Some(first) => format!(
                        " ({} read {:?} there from node {})",
                        first.consumer,
                        String::from_utf8_lossy(first.data),
                        first.node
                    ),
                    None => String::new(),
                }
            )),
        }
    }
    for id in invoked.keys().filter(|id| !acks.contains_key(id)) {
        if located.contains_key(id) {
            report.unacked_in_log += 1;
        } else {
            report.unacked_absent += 1;
        }
    }
    report
}

/// For every fault that took the leader away: its kind and the time from
/// the fault to the first acknowledgement of an index above everything
/// acknowledged before it (`None` if none came).
pub fn availability(history: &History) -> Vec<(String, Option<Duration>)> {
    let mut results = Vec::new();
    for (position, event) in history.events.iter().enumerate() {
        let Op::Fault {
            kind, leader_loss, ..
        } = &event.op
        else {
            continue;
        };
        if !leader_loss {
            continue;
        }
        let acked_before = history.events[..position]
            .iter()
            .filter_map(|event| match event.op {
                Op::Ack { index, .. } => Some(index),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let recovered = history.events[position..]
            .iter()
            .find_map(|later| match later.op {
                Op::Ack { index, .. } if later.at > event.at && index > acked_before => {
                    Some(later.at - event.at)
                }
                _ => None,
            });
        results.push((kind.clone(), recovered));
    }
    results
}

/// Median and maximum of some durations.
pub fn median_and_max(durations: &[Duration]) -> Option<(Duration, Duration)> {
    let mut sorted = durations.to_vec();
    sorted.sort();
    let max = *sorted.last()?;
    let middle = sorted.len() / 2;
    let median = if sorted.len() % 2 == 0 {
        (sorted[middle - 1] + sorted[middle]) / 2
    } else {
        sorted[middle]
    };
    Some((median, max))
}

#[cfg(test)]
mod tests {
    use super::super::history::payload;
    use super::*;

    /// A small history builder: time advances 1 ms per event.
    struct Builder(History);

    impl Builder {
        fn new() -> Builder {
            Builder(History::default())
        }
        fn op(&mut self, op: Op) -> &mut Builder {
            let at = Duration::from_millis(self.0.events.len() as u64);
            self.0.push(at, op);
            self
        }
        fn invoke(&mut self, producer: u64, sequence: u64) -> &mut Builder {
            self.op(Op::Invoke {
                id: (producer, sequence),
                data: payload(producer, sequence),
            })
        }
        fn ack(&mut self, producer: u64, sequence: u64, index: LogIndex) -> &mut Builder {
            self.op(Op::Ack {
                id: (producer, sequence),
                index,
            })
        }
        fn read(&mut self, consumer: &str, index: LogIndex, record: RecordId) -> &mut Builder {
            self.op(Op::Read {
                consumer: consumer.to_string(),
                node: 1,
                index,
                data: payload(record.0, record.1),
            })
        }
        fn final_read(&mut self, consumer: &str, reads: &[(LogIndex, RecordId)]) -> &mut Builder {
            self.0.final_consumers.insert(consumer.to_string());
            for &(index, record) in reads {
                self.read(consumer, index, record);
            }
            self
        }
        fn report(&self) -> Report {
            check(&self.0)
        }
    }

    /// Three records of producer 1 at indexes 2, 3, 4 (index 1 is the
    /// leader's no-op), acknowledged, followed by a tail and read in full.
    fn healthy() -> Builder {
        let mut history = Builder::new();
        for sequence in 0..3 {
            history.invoke(1, sequence);
        }
        history.ack(1, 0, 2).ack(1, 1, 3).ack(1, 2, 4);
        history
            .read("tail", 2, (1, 0))
            .read("tail", 3, (1, 1))
            .read("tail", 4, (1, 2));
        history.final_read("final-1", &[(2, (1, 0)), (3, (1, 1)), (4, (1, 2))]);
        history
    }

    fn assert_fails(report: &Report, expected: &str) {
        assert!(
            report.violations.iter().any(|v| v.starts_with(expected)),
            "expected a `{expected}` violation, got: {}",
            report.summary()
        );
    }

    #[test]
    fn a_history_where_everything_acknowledged_is_read_once_passes() {
        let mut history = healthy();
        // A retried record acknowledged twice at the same index, a failed
        // attempt, and a record invoked but never acknowledged: all fine.
        history
            .ack(1, 1, 3)
            .invoke(1, 3)
            .op(Op::Fail {
                id: (1, 3),
                reason: "timeout".into(),
            })
            .op(Op::Skip {
                consumer: "late".into(),
                node: 2,
                first: 1,
                last: 2,
            })
            .read("late", 3, (1, 1));
        let report = history.report();
        assert!(report.is_ok(), "{}", report.summary());
        assert_eq!(report.acked, 3);
        assert_eq!(report.unacked_absent, 1);
    }

    #[test]
    fn an_acknowledged_record_nobody_read_is_lost() {
        let mut history = healthy();
        history.invoke(1, 3).ack(1, 3, 5);
        assert_fails(&history.report(), "lost");
    }

    #[test]
    fn an_acknowledged_record_read_elsewhere_is_misplaced() {
        let mut history = healthy();
        history.invoke(1, 3).ack(1, 3, 6).read("tail", 5, (1, 3));
        assert_fails(&history.report(), "misplaced");
    }

    #[test]
    fn a_record_read_at_two_indexes_is_a_duplicate() {
        let mut history = healthy();
        history
            .read("tail", 5, (1, 2))
            .final_read("final-1", &[(5, (1, 2))]);
        assert_fails(&history.report(), "duplicate");
    }

    #[test]
    fn a_retry_acknowledged_at_a_second_index_is_a_duplicate() {
        let mut history = healthy();
        history.ack(1, 2, 5);
        assert_fails(&history.report(), "retry duplicate");
    }

    #[test]
    fn two_different_records_read_at_one_index_diverge() {
        let mut history = healthy();
        history.invoke(2, 0).read("other", 3, (2, 0));
        assert_fails(&history.report(), "divergent index 3");
    }

    #[test]
    fn a_consumer_skipping_an_index_that_holds_a_record_has_a_gap() {
        let mut history = healthy();
        history.read("jumpy", 2, (1, 0)).read("jumpy", 4, (1, 2));
        assert_fails(&history.report(), "gap");
    }

    #[test]
    fn a_skip_the_node_reported_for_retention_is_no_gap() {
        let mut history = healthy();
        history
            .read("jumpy", 2, (1, 0))
            .op(Op::Skip {
                consumer: "jumpy".into(),
                node: 1,
                first: 3,
                last: 3,
            })
            .read("jumpy", 4, (1, 2));
        let report = history.report();
        assert!(report.is_ok(), "{}", report.summary());
    }

    #[test]
    fn a_consumer_going_backwards_is_out_of_order() {
        let mut history = healthy();
        history.read("tail", 3, (1, 1));
        assert_fails(&history.report(), "order");
    }

    #[test]
    fn a_record_nobody_published_is_a_phantom() {
        let mut history = healthy();
        history.read("tail", 5, (9, 9));
        assert_fails(&history.report(), "phantom");
    }

    #[test]
    fn a_read_past_the_final_log_was_never_committed() {
        let mut history = healthy();
        history.invoke(1, 3).read("tail", 5, (1, 3));
        assert_fails(&history.report(), "beyond commit");
    }

    #[test]
    fn availability_counts_from_the_fault_to_the_next_new_acknowledgement() {
        let mut history = Builder::new();
        history
            .invoke(1, 0)
            .ack(1, 0, 2)
            .op(Op::Fault {
                kind: "kill-leader".into(),
                description: String::new(),
                leader_loss: true,
            })
            .ack(1, 0, 2) // a late duplicate answer does not count
            .invoke(1, 1)
            .ack(1, 1, 4);
        let figures = availability(&history.0);
        assert_eq!(
            figures,
            vec![("kill-leader".to_string(), Some(Duration::from_millis(3)))]
        );
        assert_eq!(
            median_and_max(&[1, 5, 3].map(Duration::from_secs)),
            Some((Duration::from_secs(3), Duration::from_secs(5)))
        );
    }
}
