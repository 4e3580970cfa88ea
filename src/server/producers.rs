//! Exactly-once appends: which sequence numbers of each producer are in the log.
//!
//! A publisher tags every record with its producer id and a sequence number
//! that grows by one per record. The table remembers, per producer, the next
//! sequence it expects and where recent sequences landed in the log, so a
//! retried batch is answered with its original indexes instead of being
//! appended twice.
//!
//! The table is derived from the log: every node updates it for every entry it
//! appends (as leader or follower) and rebuilds it after a truncation or a
//! restart, so a new leader knows exactly what the old one appended. Entries
//! carry their producer id and sequence, which is what makes this possible.
//!
//! Bounds: at most `PRODUCERS_MAX` producers (the longest idle is forgotten
//! first when full) and `RUNS_PER_PRODUCER_MAX` runs of consecutive sequences
//! per producer; a producer idle for longer than the expiry window is
//! forgotten. A forgotten producer starts afresh at whatever sequence it sends.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::types::LogIndex;

/// Producers remembered at once. Each costs about 100 bytes plus its runs.
pub const PRODUCERS_MAX: usize = 100_000;
/// Runs of consecutive (sequence, index) pairs kept per producer: enough for
/// every batch a publisher can have in flight and retry.
pub const RUNS_PER_PRODUCER_MAX: usize = 1024;

/// A stretch of a producer's records with consecutive sequences at consecutive indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    first_sequence: u64,
    first_index: LogIndex,
    count: u64,
}

impl Run {
    /// `count >= 1`, and [`ProducerTable::record`] extends a run only while
    /// its next sequence exists, so this never saturates.
    fn last_sequence(&self) -> u64 {
        self.first_sequence
            .saturating_add(self.count.saturating_sub(1))
    }

    fn index_of(&self, sequence: u64) -> Option<LogIndex> {
        if sequence < self.first_sequence || sequence > self.last_sequence() {
            return None;
        }
        self.first_index.checked_add(sequence - self.first_sequence)
    }
}

#[derive(Debug)]
struct Producer {
    /// Oldest first; sequences strictly increase across runs.
    runs: VecDeque<Run>,
    last_seen: Instant,
}

impl Producer {
    /// The sequence expected next; `u64::MAX` also when a run ends there
    /// (only entries a peer or the disk supplied can: a leader refuses an
    /// append whose next sequence does not exist, so no request starts there).
    fn next_sequence(&self) -> Option<u64> {
        self.runs
            .back()
            .map(|run| run.last_sequence().saturating_add(1))
    }
}

/// What to do with an append of `count` records starting at `first_sequence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Not in the log yet: append it.
    Append,
    /// Every record is in the log already, at these indexes.
    Duplicate {
        first_index: LogIndex,
        last_index: LogIndex,
    },
    /// The batch starts after the next expected sequence: records are missing.
    Gap { expected: u64, got: u64 },
    /// Part of the batch is in the log and part is not; a publisher that
    /// retries exactly the batches it sent never does this.
    PartialOverlap { expected: u64, got: u64 },
    /// Already appended, but so long ago that its indexes are forgotten.
    DuplicateForgotten,
    /// `first_sequence + count` is past `u64::MAX`: the sequence after the
    /// batch does not exist, so the request is malformed.
    SequenceOverflow,
}

#[derive(Debug)]
pub struct ProducerTable {
    producers: HashMap<u64, Producer>,
    expiry: Duration,
}

impl ProducerTable {
    pub fn new(expiry: Duration) -> ProducerTable {
        ProducerTable {
            producers: HashMap::new(),
            expiry,
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides what an append of `count` records (count >= 1) should do.
    /// Both come from the client: a batch whose next sequence
    /// (`first_sequence + count`) would pass `u64::MAX` is refused first.
    pub fn admit(&self, producer_id: u64, first_sequence: u64, count: u64) -> Admission {
        debug_assert!(count >= 1);
        let span = count.saturating_sub(1);
        let Some(last_sequence) = first_sequence
            .checked_add(span)
            .filter(|last| last.checked_add(1).is_some())
        else {
            return Admission::SequenceOverflow;
        };
        let Some(producer) = self.producers.get(&producer_id) else {
            return Admission::Append;
        };
        let Some(expected) = producer.next_sequence() else {
            return Admission::Append;
        };
        if first_sequence == expected {
            return Admission::Append;
        }
        if first_sequence > expected {
            return Admission::Gap {
                expected,
                got: first_sequence,
            };
        }
        if last_sequence >= expected {
            return Admission::PartialOverlap {
                expected,
                got: first_sequence,
            };
        }
        let first_index = producer
            .runs
            .iter()
            .find_map(|run| run.index_of(first_sequence));
        let last_index = producer
            .runs
            .iter()
            .find_map(|run| run.index_of(last_sequence));
        match (first_index, last_index) {
            // The answer promises one index per record, contiguous: true only
            // when the batch was appended as one run.
            (Some(first_index), Some(last_index))
                if last_index.checked_sub(first_index) == Some(span) =>
            {
                Admission::Duplicate {
                    first_index,
                    last_index,
                }
            }
            _ => Admission::DuplicateForgotten,
        }
    }

    /// Notes that the record `sequence` of `producer_id` is now at `index`.
    /// Called for every tagged entry appended to the log, in index order:
    /// entries a client, a peer or the disk supplied, so any `u64` is taken
    /// without overflow (a run ending at `u64::MAX` is never extended).
    pub fn record(&mut self, producer_id: u64, sequence: u64, index: LogIndex, now: Instant) {
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= PRODUCERS_MAX {
            self.forget_longest_idle();
        }
        let producer = self.producers.entry(producer_id).or_insert(Producer {
            runs: VecDeque::new(),
            last_seen: now,
        });
        producer.last_seen = producer.last_seen.max(now);
        if let Some(last) = producer.runs.back_mut() {
            let follows = last.last_sequence().checked_add(1) == Some(sequence)
                && last.first_index.checked_add(last.count) == Some(index);
            if let (true, Some(count)) = (follows, last.count.checked_add(1)) {
                last.count = count;
                return;
            }
            if sequence <= last.last_sequence() {
                // A producer that restarted from an older sequence after its state
                // expired elsewhere: the log is the truth, start a fresh history.
                producer.runs.clear();
            }
        }
        producer.runs.push_back(Run {
            first_sequence: sequence,
            first_index: index,
            count: 1,
        });
        if producer.runs.len() > RUNS_PER_PRODUCER_MAX {
            producer.runs.pop_front();
        }
    }

    /// Forgets every record at `from_index` or above (the log's suffix was cut).
    pub fn truncate_from(&mut self, from_index: LogIndex) {
        self.producers.retain(|_, producer| {
            while let Some(last) = producer.runs.back_mut() {
                if last.first_index >= from_index {
                    producer.runs.pop_back();
                } else {
                    last.count = last.count.min(from_index - last.first_index);
                    break;
                }
            }
            !producer.runs.is_empty()
        });
    }

    /// Forgets producers idle for longer than the expiry window.
    pub fn expire(&mut self, now: Instant) {
        let expiry = self.expiry;
        self.producers
            .retain(|_, producer| now.saturating_duration_since(producer.last_seen) <= expiry);
    }

    fn forget_longest_idle(&mut self) {
        if let Some(oldest) = self
            .producers
            .iter()
            .min_by_key(|(_, producer)| producer.last_seen)
            .map(|(id, _)| *id)
        {
            self.producers.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_with(batches: &[(u64, u64, u64, LogIndex)]) -> ProducerTable {
        let now = Instant::now();
        let mut table = ProducerTable::new(Duration::from_secs(600));
        for &(producer, first_sequence, count, first_index) in batches {
            for offset in 0..count {
                table.record(producer, first_sequence + offset, first_index + offset, now);
            }
        }
        table
    }

    #[test]
    fn unknown_producer_may_start_at_any_sequence() {
        let table = table_with(&[]);
        assert_eq!(table.admit(7, 1234, 10), Admission::Append);
    }

    #[test]
    fn retried_batch_is_answered_with_its_original_indexes() {
        let table = table_with(&[(7, 0, 256, 10), (7, 256, 256, 300)]);
        assert_eq!(
            table.admit(7, 256, 256),
            Admission::Duplicate {
                first_index: 300,
                last_index: 555
            }
        );
        assert_eq!(
            table.admit(7, 0, 256),
            Admission::Duplicate {
                first_index: 10,
                last_index: 265
            }
        );
        assert_eq!(table.admit(7, 512, 1), Admission::Append);
    }

    #[test]
    fn sequence_gap_and_partial_overlap_are_refused() {
        let table = table_with(&[(7, 0, 10, 1)]);
        assert_eq!(
            table.admit(7, 11, 1),
            Admission::Gap {
                expected: 10,
                got: 11
            }
        );
        assert_eq!(
            table.admit(7, 5, 10),
            Admission::PartialOverlap {
                expected: 10,
                got: 5
            }
        );
    }

    #[test]
    fn a_batch_split_across_runs_is_not_claimed_contiguous() {
        // Sequences 0..4 at 1..4, then 4..8 at 20..24 (another producer interleaved).
        let table = table_with(&[(7, 0, 4, 1), (7, 4, 4, 20)]);
        assert_eq!(table.admit(7, 2, 4), Admission::DuplicateForgotten);
        assert_eq!(
            table.admit(7, 4, 4),
            Admission::Duplicate {
                first_index: 20,
                last_index: 23
            }
        );
    }

    #[test]
    fn truncation_forgets_records_at_and_above_the_cut() {
        let mut table = table_with(&[(7, 0, 10, 1), (8, 0, 5, 11)]);
        table.truncate_from(6);
        assert_eq!(table.admit(7, 5, 1), Admission::Append);
        assert_eq!(
            table.admit(7, 0, 5),
            Admission::Duplicate {
                first_index: 1,
                last_index: 5
            }
        );
        assert_eq!(
            table.admit(8, 3, 1),
            Admission::Append,
            "producer 8 was cut away"
        );
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn idle_producers_expire() {
        let start = Instant::now();
        let mut table = ProducerTable::new(Duration::from_secs(60));
        table.record(7, 0, 1, start);
        table.record(8, 0, 2, start + Duration::from_secs(50));
        table.expire(start + Duration::from_secs(100));
        assert_eq!(table.len(), 1);
        assert_eq!(table.admit(7, 99, 1), Admission::Append);
    }

    #[test]
    fn runs_per_producer_are_bounded() {
        let now = Instant::now();
        let mut table = ProducerTable::new(Duration::from_secs(600));
        for sequence in 0..(RUNS_PER_PRODUCER_MAX as u64 + 10) {
            // Every record lands two indexes after the last: one run each.
            table.record(7, sequence, 1 + 2 * sequence, now);
        }
        assert_eq!(table.admit(7, 0, 1), Admission::DuplicateForgotten);
        let last = RUNS_PER_PRODUCER_MAX as u64 + 9;
        assert_eq!(
            table.admit(7, last, 1),
            Admission::Duplicate {
                first_index: 1 + 2 * last,
                last_index: 1 + 2 * last
            }
        );
    }

    /// Issue 11, finding 7: a client's batch whose sequences (or the one
    /// after them) would pass u64::MAX is refused, whatever the table holds.
    #[test]
    fn a_batch_whose_next_sequence_does_not_exist_is_refused() {
        let empty = table_with(&[]);
        assert_eq!(empty.admit(7, u64::MAX, 2), Admission::SequenceOverflow);
        assert_eq!(empty.admit(7, u64::MAX, 1), Admission::SequenceOverflow);
        assert_eq!(empty.admit(7, u64::MAX - 1, 2), Admission::SequenceOverflow);
        assert_eq!(
            empty.admit(7, u64::MAX - 16, u64::MAX),
            Admission::SequenceOverflow
        );
        assert_eq!(empty.admit(7, u64::MAX - 1, 1), Admission::Append);
        let known = table_with(&[(7, u64::MAX - 3, 2, 10)]);
        assert_eq!(known.admit(7, u64::MAX - 1, 2), Admission::SequenceOverflow);
        assert_eq!(known.admit(7, u64::MAX - 1, 1), Admission::Append);
    }

    /// Issue 11, finding 7: entries from a peer or the disk may carry any
    /// sequence, u64::MAX included; the table records them without
    /// overflow and keeps answering.
    #[test]
    fn sequences_up_to_u64_max_from_the_log_are_recorded_without_overflow() {
        let now = Instant::now();
        let mut table = ProducerTable::new(Duration::from_secs(600));
        table.record(7, u64::MAX - 1, 10, now);
        table.record(7, u64::MAX, 11, now);
        // The producer's sequences are used up: retries of what is in the
        // log are still duplicates, nothing new fits.
        assert_eq!(
            table.admit(7, u64::MAX - 1, 1),
            Admission::Duplicate {
                first_index: 10,
                last_index: 10
            }
        );
        assert_eq!(table.admit(7, u64::MAX, 1), Admission::SequenceOverflow);
        assert_eq!(table.admit(7, 5, 1), Admission::DuplicateForgotten);
        // A run ending at u64::MAX is never extended; the same sequence
        // again (a producer that restarted) starts a fresh history.
        table.record(7, u64::MAX, 12, now);
        table.record(7, 0, 13, now);
        assert_eq!(
            table.admit(7, 0, 1),
            Admission::Duplicate {
                first_index: 13,
                last_index: 13
            }
        );
        // A lone u64::MAX, then anything: no overflow either.
        table.record(8, u64::MAX, 20, now);
        assert_eq!(
            table.admit(8, u64::MAX - 1, 1),
            Admission::DuplicateForgotten
        );
        table.record(8, 3, 21, now);
        assert_eq!(table.admit(8, 4, 1), Admission::Append);
        // Indexes at the top of u64 (from a peer) do not overflow a run either.
        table.record(9, 0, u64::MAX, now);
        table.record(9, 1, u64::MAX, now);
        assert_eq!(
            table.admit(9, 1, 1),
            Admission::Duplicate {
                first_index: u64::MAX,
                last_index: u64::MAX
            }
        );
        table.truncate_from(u64::MAX);
        assert_eq!(table.admit(9, 0, 1), Admission::Append);
    }
}
