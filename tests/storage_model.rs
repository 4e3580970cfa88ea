//! Model-based test of the storage engine: random sequences of append, sync,
//! truncate_suffix, advance_start, reset and reopen run against the real log
//! and against a plain in-memory vector; after every step the readable log
//! must equal the model (storage-format.md, "Recovery" and "Durability").
//!
//! One u64 seed drives every case and is printed; replay a failure with
//! `PROPTEST_RNG_SEED=<seed> cargo test --profile ci --test storage_model`.
//! `PROPTEST_CASES` sets the number of cases (default 64).

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use raftlog::storage::frame::decode_frames;
use raftlog::storage::{Log, LogConfig};
use raftlog::types::{Entry, EntryKind, LogIndex, LogStart, Membership, ProducerSeq, Term};

#[derive(Clone, Debug)]
enum Op {
    Append {
        count: u64,
        payload_bytes: usize,
        new_term: bool,
    },
    Sync,
    Truncate {
        back: u64,
    },
    AdvanceStart {
        forward: u64,
    },
    Reset {
        gap: u64,
    },
    Reopen,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..24, 0usize..400, any::<bool>()).prop_map(|(count, payload_bytes, new_term)| Op::Append {
            count,
            payload_bytes,
            new_term
        }),
        2 => Just(Op::Sync),
        2 => (0u64..40).prop_map(|back| Op::Truncate { back }),
        1 => (0u64..60).prop_map(|forward| Op::AdvanceStart { forward }),
        1 => (0u64..5).prop_map(|gap| Op::Reset { gap }),
        2 => Just(Op::Reopen),
    ]
}

struct Model {
    first_index: LogIndex,
    prev_term: Term,
    entries: Vec<Entry>,
    term: Term,
}

impl Model {
    fn last_index(&self) -> LogIndex {
        self.first_index + self.entries.len() as u64 - 1
    }
    fn last_term(&self) -> Term {
        self.entries.last().map_or(self.prev_term, |e| e.term)
    }
}

fn membership() -> Membership {
    Membership::with_voters([
        (1, "127.0.0.1:7001".to_string()),
        (2, "127.0.0.1:7002".to_string()),
    ])
}

fn make_entry(index: LogIndex, term: Term, payload_bytes: usize) -> Entry {
    let payload: Vec<u8> = (0..payload_bytes)
        .map(|i| (index as usize * 31 + i) as u8)
        .collect();
    let kind = match index % 7 {
        0 => EntryKind::Noop,
        3 => EntryKind::Config,
        _ => EntryKind::Data,
    };
    Entry {
        index,
        term,
        kind,
        producer: (index % 3 == 0).then_some(ProducerSeq {
            producer_id: index * 5,
            sequence: index,
        }),
        payload: if kind == EntryKind::Noop {
            Bytes::new()
        } else {
            Bytes::from(payload)
        },
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        preallocate: false,
    }
}

fn check(log: &Log, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.first_index(), model.first_index);
    prop_assert_eq!(log.last_index(), model.last_index());
    prop_assert_eq!(log.last_term(), model.last_term());
    prop_assert_eq!(
        log.term_at(model.first_index - 1).ok().flatten(),
        Some(model.prev_term)
    );
    prop_assert_eq!(log.term_at(model.last_index() + 1).ok().flatten(), None);
    for entry in &model.entries {
        prop_assert_eq!(log.term_at(entry.index).ok().flatten(), Some(entry.term));
    }
    if model.entries.is_empty() {
        return Ok(());
    }
    let read = log
        .entries(model.first_index, model.last_index(), usize::MAX)
        .map_err(|e| TestCaseError::fail(format!("read failed: {e}")))?;
    prop_assert_eq!(&read, &model.entries);
    // A tiny byte budget still returns one entry.
    let one = log
        .entries(model.first_index, model.last_index(), 1)
        .map_err(|e| TestCaseError::fail(format!("read failed: {e}")))?;
    prop_assert_eq!(&one[..], &model.entries[..1]);
    // Raw frames decode to the same entries, chunk by chunk.
    let mut low = model.first_index;
    let mut decoded = Vec::new();
    while low <= model.last_index() {
        let (frames, last) = log
            .frames(low, model.last_index(), 1000)
            .map_err(|e| TestCaseError::fail(format!("frames failed: {e}")))?;
        let entries = decode_frames(&frames)
            .map_err(|e| TestCaseError::fail(format!("decode failed: {e}")))?;
        prop_assert_eq!(entries.last().map(|e| e.index), Some(last));
        decoded.extend(entries);
        low = last + 1;
    }
    prop_assert_eq!(&decoded, &model.entries);
    Ok(())
}

fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let fail = |e: raftlog::storage::StorageError| TestCaseError::fail(e.to_string());
    let mut log = Log::open(dir.path(), config()).map_err(fail)?.log;
    let mut model = Model {
        first_index: 1,
        prev_term: 0,
        entries: Vec::new(),
        term: 1,
    };
    // Payloads read earlier must stay intact whatever happens later.
    let mut held: Vec<Entry> = Vec::new();
    for op in ops {
        match op {
            Op::Append {
                count,
                payload_bytes,
                new_term,
            } => {
                if new_term {
                    model.term += 1;
                }
                let start = model.last_index() + 1;
                let batch: Vec<Entry> = (start..start + count)
                    .map(|i| make_entry(i, model.term, payload_bytes))
                    .collect();
                log.append(&batch).map_err(fail)?;
                model.entries.extend(batch);
            }
            Op::Sync => {
                let durable = log.sync().map_err(fail)?;
                prop_assert_eq!(durable, model.last_index());
            }
            Op::Truncate { back } => {
                let from = (model.last_index() + 1)
                    .saturating_sub(back)
                    .max(model.first_index);
                if let Ok(entries) = log.entries(model.first_index, model.last_index(), usize::MAX)
                {
                    held = entries;
                }
                log.truncate_suffix(from).map_err(fail)?;
                model.entries.truncate((from - model.first_index) as usize);
                prop_assert!(log.durable_index() <= model.last_index());
            }
            Op::AdvanceStart { forward } => {
                let first = (model.first_index + forward).min(model.last_index() + 1);
                let keep_from = (first - model.first_index) as usize;
                let prev_term = if keep_from == 0 {
                    model.prev_term
                } else {
                    model.entries[keep_from - 1].term
                };
                log.advance_start(LogStart {
                    first_index: first,
                    prev_term,
                    membership: membership(),
                    producers: Default::default(),
                })
                .map_err(fail)?;
                model.entries.drain(..keep_from);
                model.first_index = first;
                model.prev_term = prev_term;
            }
            Op::Reset { gap } => {
                let first = model.last_index() + 1 + gap;
                model.term += 1;
                log.reset(LogStart {
                    first_index: first,
                    prev_term: model.term,
                    membership: membership(),
                    producers: Default::default(),
                })
                .map_err(fail)?;
                model.entries.clear();
                model.first_index = first;
                model.prev_term = model.term;
            }
            Op::Reopen => {
                drop(log);
                let opened = Log::open(dir.path(), config()).map_err(fail)?;
                log = opened.log;
                if model.first_index != 1 || model.prev_term != 0 {
                    prop_assert_eq!(
                        opened.log_start.map(|s| (s.first_index, s.prev_term)),
                        Some((model.first_index, model.prev_term))
                    );
                }
            }
        }
        check(&log, &model)?;
        for entry in &held {
            prop_assert_eq!(
                &entry.payload,
                &make_entry(entry.index, entry.term, entry.payload.len()).payload
            );
        }
    }
    Ok(())
}

fn seed() -> u64 {
    std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// storage-format.md "Recovery": after any sequence of operations and clean
/// reopens, the log reads back exactly as the in-memory model says.
#[test]
fn storage_matches_an_in_memory_model_after_every_operation() {
    let seed = seed();
    eprintln!("storage_model seed = {seed} (replay: PROPTEST_RNG_SEED={seed})");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op_strategy(), 1..60), run_ops);
    if let Err(e) = result {
        panic!("{e}\nseed = {seed} (replay: PROPTEST_RNG_SEED={seed})");
    }
}
