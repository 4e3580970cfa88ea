//! One memory budget, in bytes, for everything a node buffers on behalf of
//! clients: append frames read and not yet answered, consume batches read
//! from the log and not yet taken by QUIC.
//!
//! A stream takes its bytes before it buffers them and gives them back when
//! it is done; when the budget is spent, the next taker waits, so a
//! publisher's stream is simply not read (QUIC flow control pushes back on
//! it) and a consumer's next batch is not read from the log. Nothing is
//! allocated beyond the budget.
//!
//! A consumer that stops reading holds its batch for as long as its stream
//! lives. So that such consumers cannot starve the others: when less than
//! half the budget is free, consumers read small batches
//! ([`CONSUME_BATCH_BYTES_MIN`]); and a write that made no progress for
//! [`CLIENT_STALL_TIMEOUT`] while another stream waits for the budget ends
//! the stalled stream (reset with [`STREAM_RESET_STALLED`]), returning its
//! bytes. A client that reads again resumes on a new stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// Default of the budget: 64 largest-default consume batches, or four of
/// the largest frames a client may send.
pub const CLIENT_BUFFER_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Payload bytes of one consume batch while less than half the budget is free.
pub const CONSUME_BATCH_BYTES_MIN: usize = 64 * 1024;
/// A client write that made no progress for this long, while another
/// stream waits for the budget, ends its stream.
pub const CLIENT_STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The QUIC stream error code of a stream ended for stalling.
pub const STREAM_RESET_STALLED: u32 = 0x201;

const _: () = assert!(crate::wire::FRAME_BYTES_MAX <= CLIENT_BUFFER_BYTES_MAX);
const _: () = assert!(crate::wire::FRAME_BYTES_MAX <= Semaphore::MAX_PERMITS);
const _: () = assert!(CONSUME_BATCH_BYTES_MIN <= crate::server::clients::CONSUME_BATCH_BYTES_MAX);

/// The shared budget (cheap to clone).
#[derive(Clone, Debug)]
pub struct ClientBuffers {
    semaphore: Arc<Semaphore>,
    bytes_max: usize,
    /// Takers waiting for bytes now.
    waiting: Arc<AtomicUsize>,
}

/// Bytes taken from the budget; given back on drop.
#[derive(Debug)]
pub struct BufferPermit {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The budget is gone (the node is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the client buffer budget is closed")]
pub struct BudgetClosed;

impl ClientBuffers {
    /// A budget of `bytes_max` bytes (at least one largest frame, so every
    /// request fits; smaller values are raised to that).
    pub fn new(bytes_max: usize) -> ClientBuffers {
        // FRAME_BYTES_MAX (16 MiB) is far below MAX_PERMITS (2^61), so
        // the range is never empty.
        let bytes_max = bytes_max.clamp(crate::wire::FRAME_BYTES_MAX, Semaphore::MAX_PERMITS);
        ClientBuffers {
            semaphore: Arc::new(Semaphore::new(bytes_max)),
            bytes_max,
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Takes `bytes`, waiting while the budget is spent. A request larger
    /// than the whole budget takes the whole budget.
    pub async fn take(&self, bytes: usize) -> Result<BufferPermit, BudgetClosed> {
        let bytes = bytes.min(self.bytes_max);
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        if let Ok(permit) = self.semaphore.clone().try_acquire_many_owned(permits) {
            return Ok(BufferPermit { _permit: permit });
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = self.semaphore.clone().acquire_many_owned(permits).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        permit
            .map(|permit| BufferPermit { _permit: permit })
            .map_err(|_| BudgetClosed)
    }

    /// Whether some taker waits for bytes now.
    pub fn contended(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// How many payload bytes a consumer should read into its next batch.
    pub fn consume_batch_bytes(&self, batch_bytes_max: usize) -> usize {
        if self.semaphore.available_permits() >= self.bytes_max / 2 {
            batch_bytes_max
        } else {
            CONSUME_BATCH_BYTES_MIN.min(batch_bytes_max)
        }
    }

    /// Bytes taken now (for metrics and tests).
    pub fn used_bytes(&self) -> usize {
        self.bytes_max
            .saturating_sub(self.semaphore.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takers_wait_while_the_budget_is_spent_and_resume_when_bytes_return() {
        let buffers = ClientBuffers::new(crate::wire::FRAME_BYTES_MAX);
        let all = buffers
            .take(crate::wire::FRAME_BYTES_MAX)
            .await
            .expect("budget");
        assert!(!buffers.contended());
        let waiter = {
            let buffers = buffers.clone();
            tokio::spawn(async move { buffers.take(10).await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(buffers.contended(), "the second taker waits");
        assert!(!waiter.is_finished());
        drop(all);
        waiter.await.expect("task").expect("budget");
        assert_eq!(buffers.used_bytes(), 0);
    }
}
