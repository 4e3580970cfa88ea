//! The resuming consumer.
//!
//! It asks a node for committed records from its cursor and keeps the
//! stream open for new ones. The cursor is the index after the last record
//! returned, so after any failure it reconnects (to the next node) and asks
//! again from there: no record is returned twice and none is skipped.
//! Without `follow`, it stops at the commit index the first node reported.

use std::ops::RangeInclusive;

use bytes::Bytes;

use std::time::Instant;

use super::connection::{self, NodeConnection, Tls};
use super::pool::Pool;
use super::{ClientConfig, ClientError, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN};
use crate::net;
use crate::types::LogIndex;
use crate::wire::client::{
    ClientRequest, ClientResponse, ConsumeFrom, ConsumeRequest, ErrorResponse,
};

/// Where a consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The first record the cluster still stores.
    Start,
    /// After the last committed record: only new records.
    End,
    /// This index (or the log start, if the log no longer reaches back so far).
    Index(LogIndex),
}

#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    pub from: StartFrom,
    /// Keep waiting for new records instead of ending at the commit index
    /// seen when the consumer started.
    pub follow: bool,
}

/// A committed record and its index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub index: LogIndex,
    pub data: Bytes,
}

/// Failed reconnects in a row before `next_batch` gives up.
pub const RECONNECTS_MAX: u32 = 20;

pub struct Consumer {
    pool: Pool,
    /// Where to ask from next time; `Index(n)` once anything was read.
    cursor: StartFrom,
    /// Without `follow`: the last index to return, learned from the first answer.
    until: Option<LogIndex>,
    follow: bool,
    node: Option<NodeConnection>,
    /// The node the last failure came from, avoided by the next connection.
    failed_addr: Option<String>,
    recv: Option<quinn::RecvStream>,
    failures: u32,
    /// Indexes the last `next_batch` moved past because the node's log
    /// start had passed the cursor (retention dropped them).
    skipped: Option<RangeInclusive<LogIndex>>,
}

impl Consumer {
    pub async fn connect(
        config: ClientConfig,
        options: ConsumerOptions,
    ) -> Result<Consumer, ClientError> {
        let tls = Tls::load(&config)?;
        Consumer::with_pool(Pool::new(config, tls)?, options).await
    }

    /// A consumer on the connections of `pool`; waits until some node is
    /// reachable (to fail fast on a bad address or certificate).
    pub(super) async fn with_pool(
        pool: Pool,
        options: ConsumerOptions,
    ) -> Result<Consumer, ClientError> {
        let deadline = Instant::now() + pool.config().request_timeout;
        let node = pool.any(None, deadline).await?;
        Ok(Consumer {
            pool,
            cursor: options.from,
            until: None,
            follow: options.follow,
            node: Some(node),
            failed_addr: None,
            recv: None,
            failures: 0,
            skipped: None,
        })
    }

    /// The index the next record will have at least.
    pub fn cursor(&self) -> StartFrom {
        self.cursor
    }

    /// The address of the node the last batch came from (`None` between
    /// a failure and the next connection).
    pub fn node(&self) -> Option<&str> {
        self.node.as_ref().map(|node| node.addr.as_str())
    }

    /// The indexes the last `next_batch` call moved past without reading
    /// them because the node's log start was beyond the cursor: retention
    /// dropped them before this consumer got there. `None` when it read
    /// every index from its cursor on.
    pub fn skipped(&self) -> Option<RangeInclusive<LogIndex>> {
        self.skipped.clone()
    }

    /// The next records in index order; `Ok(None)` at the end (without
    /// `follow`). Waits for new commits with `follow`. Returns early, with
    /// what it has (maybe nothing), when it moved past records retention
    /// removed: see [`Consumer::skipped`].
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Record>>, ClientError> {
        self.skipped = None;
        loop {
            if let (Some(until), StartFrom::Index(next)) = (self.until, self.cursor) {
                if next > until {
                    return Ok(None);
                }
            }
            if self.recv.is_none() {
                if let Err(error) = self.open().await {
                    self.failed(error).await?;
                    continue;
                }
            }
            let Some(recv) = self.recv.as_mut() else {
                continue;
            };
            let frame = match net::read_frame(recv, crate::wire::FRAME_BYTES_MAX).await {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    self.failed(ClientError::Protocol {
                        addr: self.node_addr(),
                        reason: "the node ended the stream".into(),
                    })
                    .await?;
                    continue;
                }
                Err(error) => {
                    self.failed(ClientError::Protocol {
                        addr: self.node_addr(),
                        reason: error.to_string(),
                    })
                    .await?;
                    continue;
                }
            };
            match ClientResponse::decode(frame) {
                Ok(ClientResponse::Records(batch)) => {
                    self.failures = 0;
                    if self.until.is_none() && !self.follow {
                        self.until = Some(batch.commit_index);
                    }
                    let next = match self.cursor {
                        StartFrom::Index(next) => next,
                        _ => batch.start_index,
                    };
                    if batch.start_index > next {
                        // The node starts later than asked: its log start
                        // passed the cursor. Within one call the cursor
                        // only moves over skipped or non-record entries, so
                        // one range covers every skip of the call.
                        let first = self.skipped.as_ref().map_or(next, |range| *range.start());
                        self.skipped = Some(first..=batch.start_index - 1);
                    }
                    let mut records = Vec::with_capacity(batch.records.len());
                    let mut cursor = next.max(batch.start_index);
                    for (index, data) in batch.records {
                        // A resent range after a reconnect: skip what was returned.
                        if index < cursor {
                            continue;
                        }
                        if self.until.is_some_and(|until| index > until) {
                            break;
                        }
                        records.push(Record { index, data });
                        cursor = index + 1;
                    }
                    // Entries that are not records (leader no-ops, config
                    // changes) occupy indexes too: the batch says how far it got.
                    cursor = cursor.max(batch.next_index);
                    self.cursor = StartFrom::Index(cursor);
                    // A skip is returned at once, even with no record, so
                    // the caller can say so while the stream waits for more.
                    if !records.is_empty() || self.skipped.is_some() {
                        return Ok(Some(records));
                    }
                }
                Ok(ClientResponse::ConsumeEnd(end)) => {
                    // Only sent for requests without `follow`; ours always
                    // follow, so treat it as a stream to reopen from the cursor.
                    self.cursor = StartFrom::Index(end.next_index.max(match self.cursor {
                        StartFrom::Index(next) => next,
                        _ => 1,
                    }));
                    self.recv = None;
                }
                Ok(ClientResponse::Error(ErrorResponse::BelowLogStart { log_start, .. }))
                    if log_start > self.next_index() =>
                {
                    // Reserved for nodes (docs/protocol.md 4.5): the records
                    // before the log start are gone; continue there on the
                    // same node, as after a batch starting past the cursor.
                    self.recv = None;
                    self.skipped = Some(self.next_index()..=log_start - 1);
                    self.cursor = StartFrom::Index(log_start);
                    return Ok(Some(Vec::new()));
                }
                Ok(ClientResponse::Error(error)) => {
                    self.failed(ClientError::Refused(error)).await?;
                }
                Ok(other) => self.failed(connection::unexpected(&other)).await?,
                Err(error) => {
                    self.failed(ClientError::Protocol {
                        addr: self.node_addr(),
                        reason: error.to_string(),
                    })
                    .await?
                }
            }
        }
    }

    async fn open(&mut self) -> Result<(), ClientError> {
        if self.node.is_none() {
            let deadline = Instant::now() + self.pool.config().request_timeout;
            let node = self.pool.any(self.failed_addr.as_deref(), deadline).await?;
            self.node = Some(node);
        }
        let Some(node) = &self.node else {
            return Ok(());
        };
        let (mut send, recv) = node.open_stream().await?;
        let from = match self.cursor {
            StartFrom::Start => ConsumeFrom::Start,
            StartFrom::End => ConsumeFrom::End,
            StartFrom::Index(index) => ConsumeFrom::Index(index),
        };
        let request = ClientRequest::Consume(ConsumeRequest {
            from,
            follow: true,
            limit: None,
        });
        net::write_frame(&mut send, connection::encode(&request)?)
            .await
            .map_err(|error| ClientError::Protocol {
                addr: node.addr.clone(),
                reason: error.to_string(),
            })?;
        let _ = send.finish();
        self.recv = Some(recv);
        Ok(())
    }

    /// Drops the connection and moves to the next node, or gives up after
    /// too many failures in a row (or at once, for an error retrying cannot fix).
    async fn failed(&mut self, error: ClientError) -> Result<(), ClientError> {
        self.recv = None;
        if let Some(node) = self.node.take() {
            self.failed_addr = Some(node.addr);
        }
        self.failures += 1;
        if !error.is_transient() || self.failures > RECONNECTS_MAX {
            return Err(error);
        }
        // The first retry goes at once to another node; repeated failures
        // back off (jittered, doubling) so a cluster that is down for a
        // while is not asked in a tight loop.
        if self.failures > 1 {
            let backoff = RECONNECT_BACKOFF_MIN * 2u32.saturating_pow(self.failures.min(8));
            let backoff = backoff.min(RECONNECT_BACKOFF_MAX);
            tokio::time::sleep(super::pool::jittered(backoff / 2, backoff)).await;
        }
        Ok(())
    }

    /// The index the cursor stands at (1 before the first answer).
    fn next_index(&self) -> LogIndex {
        match self.cursor {
            StartFrom::Index(next) => next,
            StartFrom::Start | StartFrom::End => 1,
        }
    }

    fn node_addr(&self) -> String {
        self.node
            .as_ref()
            .map(|node| node.addr.clone())
            .unwrap_or_default()
    }
}
