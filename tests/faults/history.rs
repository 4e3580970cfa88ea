//! What the clients did and saw, in the order they did it: the checker's
//! only input.
//!
//! Every record a publisher invokes has a unique, self-describing payload
//! (`p<producer>:s<sequence>:` and padding), so a read can be traced back to
//! the append it came from: a payload nobody invoked is a phantom, one read
//! at two indexes a duplicate.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub type NodeId = u64;
pub type LogIndex = u64;

/// A record's identity: its producer id and sequence number.
pub type RecordId = (u64, u64);

/// Bytes of padding after the identity, so a record has a realistic size
/// and segments fill (retention needs several segments).
pub const PAYLOAD_BYTES: usize = 96;

/// The payload of record `sequence` of producer `producer`.
pub fn payload(producer: u64, sequence: u64) -> Bytes {
    let mut text = format!("p{producer}:s{sequence}:");
    while text.len() < PAYLOAD_BYTES {
        text.push('.');
    }
    Bytes::from(text)
}

/// The identity a payload names, if it has the shape of one.
pub fn parse_payload(data: &[u8]) -> Option<RecordId> {
    let text = std::str::from_utf8(data).ok()?;
    let rest = text.strip_prefix('p')?;
    let (producer, rest) = rest.split_once(":s")?;
    let (sequence, _) = rest.split_once(':')?;
    Some((producer.parse().ok()?, sequence.parse().ok()?))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A publisher handed a record to an append (once per record, before
    /// the first attempt; retries are not new invocations).
    Invoke { id: RecordId, data: Bytes },
    /// An attempt at the record was answered with its committed index.
    /// A retried record may be acknowledged more than once.
    Ack { id: RecordId, index: LogIndex },
    /// An attempt failed: the record may or may not be in the log.
    Fail { id: RecordId, reason: String },
    /// A consumer read a record from a node (node 0: unknown).
    Read {
        consumer: String,
        node: NodeId,
        index: LogIndex,
        data: Bytes,
    },
    /// A consumer's cursor was moved past `first..=last` by the node it read
    /// from, whose log start had passed them (retention).
    Skip {
        consumer: String,
        node: NodeId,
        first: LogIndex,
        last: LogIndex,
    },
    /// A fault began. `leader_loss` marks faults that take the leader away
    /// (kill, pause, isolation): availability is measured from them.
    Fault {
        kind: String,
        description: String,
        leader_loss: bool,
    },
    /// Every fault was healed.
    Heal,
    /// Something the suite itself found wrong while running (a node that
    /// exited on its own, a cluster that did not recover in time).
    Violation { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Since the history began.
    pub at: Duration,
    pub op: Op,
}

/// The whole history. Consumers named in `final_consumers` read each
/// node's full log after every fault was healed: they define "committed"
/// at the end of the run.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub events: Vec<Event>,
    pub final_consumers: BTreeSet<String>,
}

impl History {
    pub fn push(&mut self, at: Duration, op: Op) {
        self.events.push(Event { at, op });
    }
}

/// A shared, timestamped recorder the clients and the nemesis append to.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    history: History,
    /// Kept as events arrive, so waiting loops need not scan the history.
    ack_count: usize,
    acked_index_max: LogIndex,
    last_ack_at: Option<Duration>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn record(&self, op: Op) {
        self.record_all([op]);
    }

    pub fn record_all(&self, ops: impl IntoIterator<Item = Op>) {
        let at = self.start.elapsed();
        let mut inner = self.lock();
        for op in ops {
            if let Op::Ack { index, .. } = op {
                inner.ack_count += 1;
                inner.acked_index_max = inner.acked_index_max.max(index);
                inner.last_ack_at = Some(at);
            }
            inner.history.push(at, op);
        }
    }

    pub fn mark_final(&self, consumer: &str) {
        self.lock()
            .history
            .final_consumers
            .insert(consumer.to_string());
    }

    pub fn snapshot(&self) -> History {
        self.lock().history.clone()
    }

    /// How many acknowledgements there were, and the highest index acknowledged.
    pub fn acked(&self) -> (usize, LogIndex) {
        let inner = self.lock();
        (inner.ack_count, inner.acked_index_max)
    }

    /// When the latest acknowledgement came, if any did.
    pub fn last_ack_at(&self) -> Option<Duration> {
        self.lock().last_ack_at
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking client task must not hide the history from the checker.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_its_producer_and_sequence() {
        let data = payload(7, 1234);
        assert_eq!(data.len(), PAYLOAD_BYTES);
        assert_eq!(parse_payload(&data), Some((7, 1234)));
        assert_eq!(parse_payload(b"hello"), None);
        assert_eq!(parse_payload(b"p1:sx:"), None);
    }
}
