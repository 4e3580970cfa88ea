//! Exactly-once appends: which sequence numbers of each producer are in the log.
//!
//! A publisher tags every record with its producer id and a sequence number
//! that grows by one per record. The table remembers, per producer, the next
//! sequence it expects and where recent sequences landed in the log (with a
//! digest of each record's payload), so a retried record is answered with its
//! original index instead of being appended twice, and a reused sequence with
//! another payload is refused instead of being answered with the old index.
//!
//! The table is derived from the log: every node updates it for every entry it
//! appends (as leader or follower) and rebuilds it after a truncation or a
//! restart, so a new leader knows exactly what the old one appended. Entries
//! carry their producer id and sequence, which is what makes this possible.
//! What retention drops from the log's front is kept in a snapshot of the
//! table as of the log start ([`ProducerTable::snapshot`]), stored in the
//! log-start file and sent with InstallLogStart: a node rebuilds the table
//! from the snapshot plus the entries it stores, the same on every node.
//!
//! Bounds: at most `PRODUCERS_MAX` producers (the one whose newest record is
//! oldest in the log is forgotten first when full), and per producer its
//! newest `RUNS_PER_PRODUCER_MAX` runs of consecutive sequences and newest
//! `RECORDS_PER_PRODUCER_MAX` records; all producers together hold at most
//! `TABLE_RECORDS_MAX` records (beyond it the producers whose newest record is
//! oldest keep only that one). A producer idle for longer than the expiry
//! window is forgotten. A forgotten producer starts afresh at whatever
//! sequence it sends; a forgotten record of a known producer is refused.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::{AppendedIndexes, LogIndex, LOG_INDEX_MAX};
use crate::wire::client::{PRODUCER_WINDOW_BATCHES_MAX, PRODUCER_WINDOW_RECORDS_MAX};

/// Producers remembered at once. Each costs about 100 bytes plus its runs.
pub const PRODUCERS_MAX: usize = 100_000;
/// Runs of consecutive (sequence, index) pairs kept per producer: every batch
/// a publisher can have in flight and retry (its window is capped to this).
pub const RUNS_PER_PRODUCER_MAX: usize = PRODUCER_WINDOW_BATCHES_MAX;
/// Records (with their digests) kept per producer, for the same reason.
pub const RECORDS_PER_PRODUCER_MAX: usize = PRODUCER_WINDOW_RECORDS_MAX;
/// Records kept by all producers together: 8 bytes of digest each, 32 MiB.
pub const TABLE_RECORDS_MAX: usize = 4 << 20;
/// Largest snapshot: it rides in one InstallLogStart frame (16 MiB) next to
/// a membership (about 1 MiB at most) and in the log-start file.
pub const SNAPSHOT_BYTES_MAX: usize = 8 << 20;

/// Snapshot layout version (storage-format.md, section 5.1).
const SNAPSHOT_VERSION: u8 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 1 + 4;
/// A producer's header: id u64, run count u32.
const SNAPSHOT_PRODUCER_BYTES: usize = 8 + 4;
/// A run: first sequence u64, first index u64, count u32.
const SNAPSHOT_RUN_BYTES: usize = 8 + 8 + 4;
const SNAPSHOT_DIGEST_BYTES: usize = 8;
/// What a producer costs with only its newest record kept.
const SNAPSHOT_PRODUCER_MIN_BYTES: usize =
    SNAPSHOT_PRODUCER_BYTES + SNAPSHOT_RUN_BYTES + SNAPSHOT_DIGEST_BYTES;
// Every producer's next sequence always fits the snapshot: dropping a
// producer from it would let a re-send be appended twice.
const _: () = assert!(
    SNAPSHOT_HEADER_BYTES + PRODUCERS_MAX * SNAPSHOT_PRODUCER_MIN_BYTES <= SNAPSHOT_BYTES_MAX
);
const _: () = assert!(RECORDS_PER_PRODUCER_MAX <= u32::MAX as usize);
// ... and the log-start file.
const _: () = assert!(SNAPSHOT_BYTES_MAX <= crate::storage::LOG_START_PRODUCERS_BYTES_MAX);

/// A record's payload digest: its CRC32 in the low half, the low 32 bits of
/// its length in the high half.
pub type Digest = u64;

pub fn digest(payload: &[u8]) -> Digest {
    (u64::from(payload.len() as u32) << 32) | u64::from(crc32fast::hash(payload))
}

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

    fn last_index(&self) -> LogIndex {
        self.first_index
            .saturating_add(self.count.saturating_sub(1))
    }
}

#[derive(Clone, Debug)]
struct Producer {
    /// Oldest first; sequences and indexes strictly increase across runs.
    runs: VecDeque<Run>,
    /// One per record of `runs`, in the same order.
    digests: VecDeque<Digest>,
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

    fn newest_index(&self) -> LogIndex {
        self.runs.back().map_or(0, Run::last_index)
    }

    /// Where `sequence` is: (run position, position of its digest).
    fn locate(&self, sequence: u64) -> Option<(usize, usize)> {
        let mut digests_before = 0usize;
        for (position, run) in self.runs.iter().enumerate() {
            if sequence >= run.first_sequence && sequence <= run.last_sequence() {
                let offset = usize::try_from(sequence - run.first_sequence).ok()?;
                return Some((position, digests_before.checked_add(offset)?));
            }
            digests_before = digests_before.saturating_add(run.count as usize);
        }
        None
    }

    /// Drops the oldest record.
    fn forget_oldest_record(&mut self) {
        self.digests.pop_front();
        if let Some(front) = self.runs.front_mut() {
            if front.count <= 1 {
                self.runs.pop_front();
            } else {
                // No overflow: the run holds the next sequence and index.
                front.first_sequence = front.first_sequence.saturating_add(1);
                front.first_index = front.first_index.saturating_add(1);
                front.count -= 1;
            }
        }
    }

    fn forget_oldest_run(&mut self) {
        if let Some(run) = self.runs.pop_front() {
            let count = usize::try_from(run.count).unwrap_or(usize::MAX);
            self.digests.drain(..count.min(self.digests.len()));
        }
    }
}

/// What to do with an append of records starting at `first_sequence`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The first `known` records of the batch are in the log already, at
    /// `indexes` (empty when `known` is 0); the rest are new: append them.
    /// `known` equal to the batch's length: a pure re-send.
    Append {
        known: usize,
        indexes: AppendedIndexes,
    },
    /// The batch starts after the next expected sequence: records are missing.
    Gap { expected: u64, got: u64 },
    /// `sequence` was appended, but so long ago that its index is forgotten.
    DuplicateForgotten { sequence: u64 },
    /// `sequence` is in the log at `index` with another payload.
    PayloadMismatch { sequence: u64, index: LogIndex },
    /// `first_sequence + count` is past `u64::MAX`: the sequence after the
    /// batch does not exist, so the request is malformed.
    SequenceOverflow,
}

impl Admission {
    fn new() -> Admission {
        Admission::Append {
            known: 0,
            indexes: AppendedIndexes::default(),
        }
    }
}

/// Why a snapshot does not decode.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("producer snapshot is {len} bytes, over the limit of {SNAPSHOT_BYTES_MAX}")]
    TooLarge { len: usize },
    #[error("producer snapshot version {0} is not known")]
    UnknownVersion(u8),
    #[error("producer snapshot ends inside {0}")]
    Truncated(&'static str),
    #[error("producer snapshot: {0}")]
    Invalid(&'static str),
}

#[derive(Clone, Debug)]
pub struct ProducerTable {
    producers: HashMap<u64, Producer>,
    /// Digests held by all producers.
    records: usize,
    expiry: Duration,
}

impl ProducerTable {
    pub fn new(expiry: Duration) -> ProducerTable {
        ProducerTable {
            producers: HashMap::new(),
            records: 0,
            expiry,
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides what an append of `payloads` (at least one) starting at
    /// `first_sequence` should do. Both come from the client: a batch whose
    /// next sequence (`first_sequence + count`) would pass `u64::MAX` is
    /// refused first.
    pub fn admit<P: AsRef<[u8]>>(
        &self,
        producer_id: u64,
        first_sequence: u64,
        payloads: &[P],
    ) -> Admission {
        debug_assert!(!payloads.is_empty());
        let count = payloads.len() as u64;
        // The sequence after the batch must exist: `first + count <= u64::MAX`.
        if first_sequence.checked_add(count).is_none() {
            return Admission::SequenceOverflow;
        }
        let Some(producer) = self.producers.get(&producer_id) else {
            return Admission::new();
        };
        let Some(expected) = producer.next_sequence() else {
            return Admission::new();
        };
        if first_sequence >= expected {
            return if first_sequence == expected {
                Admission::new()
            } else {
                Admission::Gap {
                    expected,
                    got: first_sequence,
                }
            };
        }
        // first_sequence < expected: the records before `expected` are in the log.
        let known = (expected - first_sequence).min(count);
        let Some((mut run_at, mut digest_at)) = producer.locate(first_sequence) else {
            return Admission::DuplicateForgotten {
                sequence: first_sequence,
            };
        };
        let mut indexes = AppendedIndexes::default();
        let mut sequence = first_sequence;
        for payload in payloads.iter().take(known as usize) {
            // Walk forward: the same run, else the next one if it continues
            // with this sequence; a hole between runs is forgotten history.
            let run = match producer.runs.get(run_at) {
                Some(run) if sequence <= run.last_sequence() => *run,
                _ => match producer.runs.get(run_at.saturating_add(1)) {
                    Some(next) if next.first_sequence == sequence => {
                        run_at += 1;
                        *next
                    }
                    _ => return Admission::DuplicateForgotten { sequence },
                },
            };
            let Some(index) = run
                .first_index
                .checked_add(sequence - run.first_sequence)
                .filter(|index| *index <= LOG_INDEX_MAX)
            else {
                return Admission::DuplicateForgotten { sequence };
            };
            if producer.digests.get(digest_at) != Some(&digest(payload.as_ref())) {
                return Admission::PayloadMismatch { sequence, index };
            }
            if indexes.push_run(index, 1).is_none() {
                return Admission::DuplicateForgotten { sequence };
            }
            digest_at = digest_at.saturating_add(1);
            sequence = sequence.saturating_add(1);
        }
        Admission::Append {
            known: known as usize,
            indexes,
        }
    }

    /// Notes that the record `sequence` of `producer_id`, with payload digest
    /// `digest`, is now at `index`. Called for every tagged entry appended to
    /// the log, in index order: entries a client, a peer or the disk
    /// supplied, so any `u64` is taken without overflow (a run ending at
    /// `u64::MAX` is never extended).
    pub fn record(
        &mut self,
        producer_id: u64,
        sequence: u64,
        index: LogIndex,
        digest: Digest,
        now: Instant,
    ) {
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= PRODUCERS_MAX {
            self.forget_oldest_producer();
        }
        let producer = self.producers.entry(producer_id).or_insert(Producer {
            runs: VecDeque::new(),
            digests: VecDeque::new(),
            last_seen: now,
        });
        producer.last_seen = producer.last_seen.max(now);
        let before = producer.digests.len();
        let mut extended = false;
        if let Some(last) = producer.runs.back_mut() {
            let follows = last.last_sequence().checked_add(1) == Some(sequence)
                && last.first_index.checked_add(last.count) == Some(index);
            if let (true, Some(count)) = (follows, last.count.checked_add(1)) {
                last.count = count;
                extended = true;
            } else if sequence <= last.last_sequence() || index <= last.last_index() {
                // A producer that restarted from an older sequence after its state
                // expired elsewhere: the log is the truth, start a fresh history.
                producer.runs.clear();
                producer.digests.clear();
            }
        }
        if !extended {
            producer.runs.push_back(Run {
                first_sequence: sequence,
                first_index: index,
                count: 1,
            });
        }
        producer.digests.push_back(digest);
        if producer.runs.len() > RUNS_PER_PRODUCER_MAX {
            producer.forget_oldest_run();
        }
        while producer.digests.len() > RECORDS_PER_PRODUCER_MAX {
            producer.forget_oldest_record();
        }
        let after = producer.digests.len();
        self.records = self.records.saturating_sub(before).saturating_add(after);
        if self.records > TABLE_RECORDS_MAX {
            self.shrink_to(TABLE_RECORDS_MAX - TABLE_RECORDS_MAX / 8);
        }
    }

    /// Forgets every record at `from_index` or above (the log's suffix was cut).
    pub fn truncate_from(&mut self, from_index: LogIndex) {
        let mut records = 0usize;
        self.producers.retain(|_, producer| {
            while let Some(last) = producer.runs.back_mut() {
                if last.first_index >= from_index {
                    let count = usize::try_from(last.count).unwrap_or(usize::MAX);
                    let keep = producer.digests.len().saturating_sub(count);
                    producer.digests.truncate(keep);
                    producer.runs.pop_back();
                } else {
                    let kept = last.count.min(from_index - last.first_index);
                    let cut = usize::try_from(last.count - kept).unwrap_or(usize::MAX);
                    let keep = producer.digests.len().saturating_sub(cut);
                    producer.digests.truncate(keep);
                    last.count = kept;
                    break;
                }
            }
            records = records.saturating_add(producer.digests.len());
            !producer.runs.is_empty()
        });
        self.records = records;
    }

    /// Forgets producers idle for longer than the expiry window.
    pub fn expire(&mut self, now: Instant) {
        let expiry = self.expiry;
        self.producers
            .retain(|_, producer| now.saturating_duration_since(producer.last_seen) <= expiry);
        self.records = self
            .producers
            .values()
            .map(|producer| producer.digests.len())
            .sum();
    }

    /// Full: the producer whose newest record is oldest in the log goes (the
    /// same one on every node, unlike the longest idle).
    fn forget_oldest_producer(&mut self) {
        if let Some((&oldest, producer)) = self
            .producers
            .iter()
            .min_by_key(|(id, producer)| (producer.newest_index(), **id))
        {
            self.records = self.records.saturating_sub(producer.digests.len());
            self.producers.remove(&oldest);
        }
    }

    /// Brings the records held down to `target`: the producers whose newest
    /// record is oldest keep only that one (which keeps their next sequence).
    fn shrink_to(&mut self, target: usize) {
        let mut order: Vec<(LogIndex, u64)> = self
            .producers
            .iter()
            .filter(|(_, producer)| producer.digests.len() > 1)
            .map(|(id, producer)| (producer.newest_index(), *id))
            .collect();
        order.sort_unstable();
        for (_, id) in order {
            if self.records <= target {
                break;
            }
            if let Some(producer) = self.producers.get_mut(&id) {
                let before = producer.digests.len();
                while producer.digests.len() > 1 {
                    producer.forget_oldest_record();
                }
                self.records = self.records.saturating_sub(before - producer.digests.len());
            }
        }
    }

    /// The table as of just before `below` (every record at `below` or above
    /// left out), encoded for the log-start file and InstallLogStart; at most
    /// [`SNAPSHOT_BYTES_MAX`] bytes. Every producer is in it with at least
    /// its newest record; older records are kept while they fit, those of
    /// the producers with the newest records first. Deterministic: the same
    /// table gives the same bytes.
    pub fn snapshot(&self, below: LogIndex) -> Bytes {
        let mut view = self.clone();
        view.truncate_from(below);
        let mut producers: Vec<(u64, &Producer)> =
            view.producers.iter().map(|(id, p)| (*id, p)).collect();
        if producers.is_empty() {
            return Bytes::new();
        }
        // Newest first for the budget; every producer's newest record first.
        producers.sort_unstable_by_key(|(id, producer)| {
            (std::cmp::Reverse(producer.newest_index()), *id)
        });
        let mut budget = SNAPSHOT_BYTES_MAX
            .saturating_sub(SNAPSHOT_HEADER_BYTES)
            .saturating_sub(producers.len().saturating_mul(SNAPSHOT_PRODUCER_MIN_BYTES));
        let mut keep: HashMap<u64, usize> = HashMap::with_capacity(producers.len());
        for (id, producer) in &producers {
            let mut kept = 1usize;
            // Walk back from the newest record, run by run.
            'runs: for (back, run) in producer.runs.iter().rev().enumerate() {
                let in_run = usize::try_from(run.count).unwrap_or(usize::MAX);
                let first = if back == 0 { 1 } else { 0 };
                for position in first..in_run {
                    let cost = SNAPSHOT_DIGEST_BYTES
                        + if position == 0 && back > 0 {
                            SNAPSHOT_RUN_BYTES
                        } else {
                            0
                        };
                    if cost > budget {
                        break 'runs;
                    }
                    budget -= cost;
                    kept += 1;
                }
            }
            keep.insert(*id, kept);
        }
        producers.sort_unstable_by_key(|(id, _)| *id);
        let mut out = BytesMut::new();
        out.put_u8(SNAPSHOT_VERSION);
        out.put_u32_le(producers.len() as u32);
        for (id, producer) in producers {
            let kept = keep.get(&id).copied().unwrap_or(1);
            // The newest `kept` records: the runs they cover, oldest first.
            let mut runs: Vec<Run> = Vec::new();
            let mut left = kept as u64;
            for run in producer.runs.iter().rev() {
                if left == 0 {
                    break;
                }
                let take = run.count.min(left);
                let skip = run.count - take;
                runs.push(Run {
                    first_sequence: run.first_sequence.saturating_add(skip),
                    first_index: run.first_index.saturating_add(skip),
                    count: take,
                });
                left -= take;
            }
            runs.reverse();
            out.put_u64_le(id);
            out.put_u32_le(runs.len() as u32);
            for run in &runs {
                out.put_u64_le(run.first_sequence);
                out.put_u64_le(run.first_index);
                // At most RECORDS_PER_PRODUCER_MAX: fits a u32.
                out.put_u32_le(run.count as u32);
            }
            let skip = producer.digests.len().saturating_sub(kept);
            for digest in producer.digests.iter().skip(skip) {
                out.put_u64_le(*digest);
            }
        }
        debug_assert!(out.len() <= SNAPSHOT_BYTES_MAX);
        out.freeze()
    }

    /// The table a snapshot holds (empty bytes: an empty table). Every
    /// record must be below `below` (the log start it was taken for). The
    /// bytes come from the disk or a peer: every field is checked.
    pub fn from_snapshot(
        mut bytes: &[u8],
        below: LogIndex,
        expiry: Duration,
        now: Instant,
    ) -> Result<ProducerTable, SnapshotError> {
        use SnapshotError::{Invalid, Truncated};
        let mut table = ProducerTable::new(expiry);
        if bytes.is_empty() {
            return Ok(table);
        }
        if bytes.len() > SNAPSHOT_BYTES_MAX {
            return Err(SnapshotError::TooLarge { len: bytes.len() });
        }
        fn take<const N: usize>(
            bytes: &mut &[u8],
            what: &'static str,
        ) -> Result<[u8; N], SnapshotError> {
            let (head, rest) = bytes.split_first_chunk::<N>().ok_or(Truncated(what))?;
            *bytes = rest;
            Ok(*head)
        }
        let version = take::<1>(&mut bytes, "the version")?[0];
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnknownVersion(version));
        }
        let producer_count = u32::from_le_bytes(take(&mut bytes, "the producer count")?) as usize;
        if producer_count > PRODUCERS_MAX {
            return Err(Invalid("more producers than a table holds"));
        }
        let mut previous_id: Option<u64> = None;
        for _ in 0..producer_count {
            let id = u64::from_le_bytes(take(&mut bytes, "a producer id")?);
            if previous_id.is_some_and(|previous| previous >= id) {
                return Err(Invalid("producer ids not increasing"));
            }
            previous_id = Some(id);
            let run_count = u32::from_le_bytes(take(&mut bytes, "a run count")?) as usize;
            if run_count == 0 || run_count > RUNS_PER_PRODUCER_MAX {
                return Err(Invalid("a producer's run count is 0 or over the limit"));
            }
            let mut runs = VecDeque::with_capacity(run_count);
            let mut records = 0usize;
            for _ in 0..run_count {
                let first_sequence = u64::from_le_bytes(take(&mut bytes, "a run")?);
                let first_index = u64::from_le_bytes(take(&mut bytes, "a run")?);
                let count = u64::from(u32::from_le_bytes(take(&mut bytes, "a run")?));
                let run = Run {
                    first_sequence,
                    first_index,
                    count,
                };
                let last_index = first_index.checked_add(count.wrapping_sub(1));
                let fits = count >= 1
                    && first_index >= 1
                    && last_index.is_some_and(|last| last < below && last <= LOG_INDEX_MAX)
                    && first_sequence.checked_add(count - 1).is_some();
                if !fits {
                    return Err(Invalid(
                        "a run is empty, or its indexes or sequences are out of range",
                    ));
                }
                if let Some(previous) = runs.back() {
                    let previous: &Run = previous;
                    if first_sequence <= previous.last_sequence()
                        || first_index <= previous.last_index()
                    {
                        return Err(Invalid("runs not increasing"));
                    }
                }
                records = records.saturating_add(count as usize);
                runs.push_back(run);
            }
            if records > RECORDS_PER_PRODUCER_MAX {
                return Err(Invalid("a producer's records over the limit"));
            }
            if bytes.len() / SNAPSHOT_DIGEST_BYTES < records {
                return Err(Truncated("the digests"));
            }
            let mut digests = VecDeque::with_capacity(records);
            for _ in 0..records {
                digests.push_back(u64::from_le_bytes(take(&mut bytes, "the digests")?));
            }
            table.records = table.records.saturating_add(records);
            table.producers.insert(
                id,
                Producer {
                    runs,
                    digests,
                    last_seen: now,
                },
            );
        }
        if !bytes.is_empty() {
            return Err(Invalid("trailing bytes"));
        }
        if table.records > TABLE_RECORDS_MAX {
            table.shrink_to(TABLE_RECORDS_MAX);
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// The payload the tests give record `sequence` of `producer`.
    fn payload(producer: u64, sequence: u64) -> Vec<u8> {
        format!("{producer}-{sequence}").into_bytes()
    }

    fn payloads(producer: u64, first_sequence: u64, count: u64) -> Vec<Vec<u8>> {
        (0..count)
            .map(|offset| payload(producer, first_sequence.wrapping_add(offset)))
            .collect()
    }

    fn record_batch(table: &mut ProducerTable, batch: (u64, u64, u64, LogIndex)) {
        let (producer, first_sequence, count, first_index) = batch;
        let now = Instant::now();
        for offset in 0..count {
            let sequence = first_sequence + offset;
            let digest = digest(&payload(producer, sequence));
            table.record(producer, sequence, first_index + offset, digest, now);
        }
    }

    fn table_with(batches: &[(u64, u64, u64, LogIndex)]) -> ProducerTable {
        let mut table = ProducerTable::new(HOUR);
        for &batch in batches {
            record_batch(&mut table, batch);
        }
        table
    }

    fn admit(table: &ProducerTable, producer: u64, first_sequence: u64, count: u64) -> Admission {
        table.admit(
            producer,
            first_sequence,
            &payloads(producer, first_sequence, count),
        )
    }

    fn new_batch() -> Admission {
        Admission::Append {
            known: 0,
            indexes: AppendedIndexes::default(),
        }
    }

    fn known(count: usize, runs: &[(LogIndex, u64)]) -> Admission {
        let mut indexes = AppendedIndexes::default();
        for &(first, run) in runs {
            indexes.push_run(first, run).unwrap();
        }
        Admission::Append {
            known: count,
            indexes,
        }
    }

    #[test]
    fn unknown_producer_may_start_at_any_sequence() {
        let table = table_with(&[]);
        assert_eq!(admit(&table, 7, 1234, 10), new_batch());
    }

    #[test]
    fn retried_batch_is_answered_with_its_original_indexes() {
        let table = table_with(&[(7, 0, 256, 10), (7, 256, 256, 300)]);
        assert_eq!(admit(&table, 7, 256, 256), known(256, &[(300, 256)]));
        assert_eq!(admit(&table, 7, 0, 256), known(256, &[(10, 256)]));
        assert_eq!(admit(&table, 7, 512, 1), new_batch());
    }

    #[test]
    fn a_sequence_gap_is_refused() {
        let table = table_with(&[(7, 0, 10, 1)]);
        assert_eq!(
            admit(&table, 7, 11, 1),
            Admission::Gap {
                expected: 10,
                got: 11
            }
        );
    }

    /// Issue 13: the batch 0..600 re-sent over a log holding 0..500 (as two
    /// batches of 256 and 244) was refused as a partial overlap; its first
    /// 500 records are known, the last 100 new.
    #[test]
    fn a_batch_straddling_the_end_is_split_into_known_and_new_records() {
        let table = table_with(&[(7, 0, 256, 1), (7, 256, 244, 257)]);
        assert_eq!(admit(&table, 7, 0, 600), known(500, &[(1, 500)]));
        assert_eq!(admit(&table, 7, 256, 256), known(244, &[(257, 244)]));
        assert_eq!(admit(&table, 7, 499, 2), known(1, &[(500, 1)]));
    }

    /// Issue 13: a re-send spanning runs interleaved with another producer
    /// has indexes that are not one range; they are listed run by run.
    #[test]
    fn a_batch_across_runs_is_answered_run_by_run() {
        // Sequences 0..4 at 1..4, then 4..8 at 20..24 (another producer interleaved).
        let table = table_with(&[(7, 0, 4, 1), (8, 0, 15, 5), (7, 4, 4, 20)]);
        assert_eq!(admit(&table, 7, 2, 4), known(4, &[(3, 2), (20, 2)]));
        assert_eq!(admit(&table, 7, 2, 10), known(6, &[(3, 2), (20, 4)]));
        assert_eq!(admit(&table, 7, 4, 4), known(4, &[(20, 4)]));
    }

    /// Issue 13: a re-sent sequence with another payload is refused, never
    /// answered with the index of the record that holds that sequence.
    #[test]
    fn a_resent_sequence_with_another_payload_is_refused() {
        let table = table_with(&[(7, 0, 10, 1)]);
        let mut batch = payloads(7, 0, 12);
        batch[5] = b"something else".to_vec();
        assert_eq!(
            table.admit(7, 0, &batch),
            Admission::PayloadMismatch {
                sequence: 5,
                index: 6
            }
        );
        // Past the known records a payload is new, whatever it is.
        let mut batch = payloads(7, 8, 4);
        batch[3] = b"new".to_vec();
        assert_eq!(table.admit(7, 8, &batch), known(2, &[(9, 2)]));
        // Same length, another byte: the CRC half of the digest differs.
        let mut batch = payloads(7, 3, 1);
        batch[0][0] ^= 1;
        assert!(matches!(
            table.admit(7, 3, &batch),
            Admission::PayloadMismatch { sequence: 3, .. }
        ));
    }

    #[test]
    fn truncation_forgets_records_at_and_above_the_cut() {
        let mut table = table_with(&[(7, 0, 10, 1), (8, 0, 5, 11)]);
        table.truncate_from(6);
        assert_eq!(admit(&table, 7, 5, 1), new_batch());
        assert_eq!(admit(&table, 7, 0, 5), known(5, &[(1, 5)]));
        assert_eq!(
            admit(&table, 8, 3, 1),
            new_batch(),
            "producer 8 was cut away"
        );
        assert_eq!(table.len(), 1);
        assert_eq!(table.records, 5);
    }

    #[test]
    fn idle_producers_expire() {
        let start = Instant::now();
        let mut table = ProducerTable::new(Duration::from_secs(60));
        table.record(7, 0, 1, 0, start);
        table.record(8, 0, 2, 0, start + Duration::from_secs(50));
        table.expire(start + Duration::from_secs(100));
        assert_eq!(table.len(), 1);
        assert_eq!(admit(&table, 7, 99, 1), new_batch());
    }

    #[test]
    fn runs_per_producer_are_bounded() {
        let mut table = ProducerTable::new(HOUR);
        for sequence in 0..(RUNS_PER_PRODUCER_MAX as u64 + 10) {
            // Every record lands two indexes after the last: one run each.
            let digest = digest(&payload(7, sequence));
            table.record(7, sequence, 1 + 2 * sequence, digest, Instant::now());
        }
        assert_eq!(
            admit(&table, 7, 0, 1),
            Admission::DuplicateForgotten { sequence: 0 }
        );
        let last = RUNS_PER_PRODUCER_MAX as u64 + 9;
        assert_eq!(admit(&table, 7, last, 1), known(1, &[(1 + 2 * last, 1)]));
        assert_eq!(table.records, RUNS_PER_PRODUCER_MAX);
    }

    /// Issue 13, limits: a publisher's largest window (capped to the
    /// producer window) is remembered whole, in batches and in records.
    #[test]
    fn a_full_publisher_window_is_remembered() {
        let mut table = ProducerTable::new(HOUR);
        let batch = (PRODUCER_WINDOW_RECORDS_MAX / PRODUCER_WINDOW_BATCHES_MAX) as u64;
        let mut index = 1;
        // Twice the window, every batch its own run (another producer between).
        for number in 0..2 * PRODUCER_WINDOW_BATCHES_MAX as u64 {
            record_batch(&mut table, (7, number * batch, batch, index));
            index += batch + 1;
        }
        let window_start = PRODUCER_WINDOW_BATCHES_MAX as u64 * batch;
        let full = crate::wire::RECORDS_PER_APPEND_MAX;
        let Admission::Append { known: found, .. } = admit(&table, 7, window_start, full as u64)
        else {
            panic!("the window's first batch is forgotten");
        };
        assert_eq!(found, full);
        assert_eq!(
            admit(&table, 7, window_start - 1, 1),
            Admission::DuplicateForgotten {
                sequence: window_start - 1
            }
        );
        // And records: one long run keeps its newest RECORDS_PER_PRODUCER_MAX.
        let mut table = ProducerTable::new(HOUR);
        let total = RECORDS_PER_PRODUCER_MAX as u64 + 100;
        record_batch(&mut table, (9, 0, total, 1));
        assert_eq!(table.records, RECORDS_PER_PRODUCER_MAX);
        assert_eq!(
            admit(&table, 9, 99, 1),
            Admission::DuplicateForgotten { sequence: 99 }
        );
        assert_eq!(admit(&table, 9, 100, 2), known(2, &[(101, 2)]));
    }

    #[test]
    fn the_table_keeps_every_producers_next_sequence_when_over_its_records() {
        let mut table = ProducerTable::new(HOUR);
        let per = RECORDS_PER_PRODUCER_MAX as u64;
        let producers = (TABLE_RECORDS_MAX as u64 / per) + 2;
        for producer in 0..producers {
            record_batch(&mut table, (producer, 0, per, 1 + producer * per));
        }
        assert!(table.records <= TABLE_RECORDS_MAX);
        assert_eq!(table.len() as u64, producers);
        // The oldest producer kept its newest record, so its next sequence.
        assert_eq!(admit(&table, 0, per - 1, 1), known(1, &[(per, 1)]));
        assert_eq!(
            admit(&table, 0, 0, 1),
            Admission::DuplicateForgotten { sequence: 0 }
        );
        let newest = producers - 1;
        assert_eq!(
            admit(&table, newest, 0, 1),
            known(1, &[(1 + newest * per, 1)])
        );
    }

    /// Issue 13: the table survives retention and a follower reset through
    /// a snapshot as of the log start; rebuilt from it plus the entries
    /// above, it answers like the table that saw the whole log.
    #[test]
    fn a_snapshot_plus_the_entries_above_it_rebuild_the_table() {
        let batches = [
            (7, 0, 256, 1),
            (8, 0, 10, 257),
            (7, 256, 244, 267),
            (9, 0, 3, 511),
        ];
        let whole = table_with(&batches);
        let start = 300; // retention dropped 1..300
        let snapshot = whole.snapshot(start);
        let mut rebuilt =
            ProducerTable::from_snapshot(&snapshot, start, HOUR, Instant::now()).unwrap();
        // Replay what the log still holds: 7's records from index 300 on, and 9.
        let now = Instant::now();
        for index in start..=510 {
            let sequence = 256 + (index - 267);
            rebuilt.record(7, sequence, index, digest(&payload(7, sequence)), now);
        }
        record_batch(&mut rebuilt, (9, 0, 3, 511));
        for (producer, first, count) in
            [(7, 0, 600), (7, 250, 10), (8, 0, 10), (8, 3, 9), (9, 1, 5)]
        {
            assert_eq!(
                admit(&rebuilt, producer, first, count),
                admit(&whole, producer, first, count),
                "producer {producer} from {first}"
            );
        }
        assert_eq!(rebuilt.snapshot(start), snapshot, "deterministic");
        assert_eq!(
            ProducerTable::new(HOUR).snapshot(10),
            Bytes::new(),
            "empty table, empty snapshot"
        );
    }

    #[test]
    fn a_snapshot_is_bounded_and_keeps_every_producer() {
        let mut table = ProducerTable::new(HOUR);
        let per = RECORDS_PER_PRODUCER_MAX as u64;
        let producers = (SNAPSHOT_BYTES_MAX as u64 / (per * 8)) + 4;
        for producer in 0..producers {
            record_batch(&mut table, (producer, 0, per, 1 + producer * per));
        }
        let below = 1 + producers * per;
        let snapshot = table.snapshot(below);
        assert!(snapshot.len() <= SNAPSHOT_BYTES_MAX, "{}", snapshot.len());
        let rebuilt = ProducerTable::from_snapshot(&snapshot, below, HOUR, Instant::now()).unwrap();
        assert_eq!(rebuilt.len() as u64, producers);
        for producer in 0..producers {
            // Everyone's next sequence survives; the newest keep their history.
            assert_eq!(admit(&rebuilt, producer, per, 1), new_batch());
        }
        assert_eq!(
            admit(&rebuilt, producers - 1, 0, 1),
            known(1, &[(1 + (producers - 1) * per, 1)])
        );
        assert_eq!(
            admit(&rebuilt, 0, 0, 1),
            Admission::DuplicateForgotten { sequence: 0 }
        );
    }

    #[test]
    fn a_bad_snapshot_is_refused_never_trusted() {
        let table = table_with(&[(7, 0, 4, 1), (8, 0, 2, 5)]);
        let snapshot = table.snapshot(100);
        let now = Instant::now();
        for len in 1..snapshot.len() {
            assert!(
                ProducerTable::from_snapshot(&snapshot[..len], 100, HOUR, now).is_err(),
                "prefix {len}"
            );
        }
        let mut trailing = snapshot.to_vec();
        trailing.push(0);
        assert!(ProducerTable::from_snapshot(&trailing, 100, HOUR, now).is_err());
        // Records at or above the log start it claims to precede.
        assert!(ProducerTable::from_snapshot(&snapshot, 6, HOUR, now).is_err());
        let mut version = snapshot.to_vec();
        version[0] = 9;
        assert_eq!(
            ProducerTable::from_snapshot(&version, 100, HOUR, now).unwrap_err(),
            SnapshotError::UnknownVersion(9)
        );
        // A run count of u32::MAX, a record count past the limit: refused
        // before anything is allocated.
        let mut runs = snapshot.to_vec();
        runs[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ProducerTable::from_snapshot(&runs, 100, HOUR, now).is_err());
        let mut count = snapshot.to_vec();
        count[33..37].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ProducerTable::from_snapshot(&count, 100, HOUR, now).is_err());
    }

    /// Issue 11, finding 7: a client's batch whose sequences (or the one
    /// after them) would pass u64::MAX is refused, whatever the table holds.
    #[test]
    fn a_batch_whose_next_sequence_does_not_exist_is_refused() {
        let empty = table_with(&[]);
        assert_eq!(admit(&empty, 7, u64::MAX, 2), Admission::SequenceOverflow);
        assert_eq!(admit(&empty, 7, u64::MAX, 1), Admission::SequenceOverflow);
        assert_eq!(
            admit(&empty, 7, u64::MAX - 1, 2),
            Admission::SequenceOverflow
        );
        assert_eq!(admit(&empty, 7, u64::MAX - 1, 1), new_batch());
        let known_table = table_with(&[(7, u64::MAX - 3, 2, 10)]);
        assert_eq!(
            admit(&known_table, 7, u64::MAX - 1, 2),
            Admission::SequenceOverflow
        );
        assert_eq!(admit(&known_table, 7, u64::MAX - 1, 1), new_batch());
    }

    /// Issue 11, finding 7: entries from a peer or the disk may carry any
    /// sequence, u64::MAX included; the table records them without
    /// overflow and keeps answering.
    #[test]
    fn sequences_up_to_u64_max_from_the_log_are_recorded_without_overflow() {
        let now = Instant::now();
        let mut table = ProducerTable::new(HOUR);
        let d = |sequence| digest(&payload(7, sequence));
        table.record(7, u64::MAX - 1, 10, d(u64::MAX - 1), now);
        table.record(7, u64::MAX, 11, d(u64::MAX), now);
        // The producer's sequences are used up: retries of what is in the
        // log are still duplicates, nothing new fits.
        assert_eq!(admit(&table, 7, u64::MAX - 1, 1), known(1, &[(10, 1)]));
        assert_eq!(admit(&table, 7, u64::MAX, 1), Admission::SequenceOverflow);
        assert_eq!(
            admit(&table, 7, 5, 1),
            Admission::DuplicateForgotten { sequence: 5 }
        );
        // A run ending at u64::MAX is never extended; the same sequence
        // again (a producer that restarted) starts a fresh history.
        table.record(7, u64::MAX, 12, d(u64::MAX), now);
        table.record(7, 0, 13, d(0), now);
        assert_eq!(admit(&table, 7, 0, 1), known(1, &[(13, 1)]));
        // A lone u64::MAX, then anything: no overflow either.
        table.record(8, u64::MAX, 20, 0, now);
        assert_eq!(
            admit(&table, 8, u64::MAX - 1, 1),
            Admission::DuplicateForgotten {
                sequence: u64::MAX - 1
            }
        );
        table.record(8, 3, 21, 0, now);
        assert_eq!(admit(&table, 8, 4, 1), new_batch());
        // Indexes at the top of u64 (from a peer) do not overflow a run
        // either, and are never answered (over LOG_INDEX_MAX).
        table.record(9, 0, u64::MAX, d(0), now);
        table.record(9, 1, u64::MAX, d(1), now);
        assert!(matches!(
            table.admit(9, 1, &[payload(9, 1)]),
            Admission::DuplicateForgotten { .. } | Admission::Append { .. }
        ));
        table.truncate_from(u64::MAX);
        assert_eq!(admit(&table, 9, 0, 1), new_batch());
    }
}
