//! The exactly-once, pipelined publisher.
//!
//! One task owns the connection. Batches go out in order on one stream and
//! the node answers them in order, so the n-th answer belongs to the oldest
//! unanswered batch. On any failure the task reconnects (to the leader it was
//! told of, else the next address) and resends every unanswered batch in
//! order with its original sequences; the leader answers those already in its
//! log with their original indexes, so nothing is appended twice.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::connection::{self, NodeConnection, Tls};
use super::pool::Pool;
use super::{
    ClientConfig, ClientError, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN, RETRY_DEADLINE,
};
use crate::net;
use crate::types::{AppendedIndexes, ProducerSeq};
use crate::wire::client::{
    AppendRequest, ClientRequest, ClientResponse, ErrorResponse, PRODUCER_WINDOW_BATCHES_MAX,
    PRODUCER_WINDOW_RECORDS_MAX, RECORDS_PER_APPEND_MAX, RECORD_BYTES_MAX_LIMIT,
};

/// Appends a publisher keeps in flight unless told otherwise.
pub const INFLIGHT_DEFAULT: usize = 8;
/// Upper bound on `inflight_max`: the node's per-stream queue is bounded too.
/// A larger window than the node's dedup memory for a producer
/// ([`PRODUCER_WINDOW_BATCHES_MAX`] appends, [`PRODUCER_WINDOW_RECORDS_MAX`]
/// records) is capped to it: what is resent after a failover must still be
/// remembered, or it is refused as forgotten.
pub const INFLIGHT_MAX: usize = 4096;

#[derive(Clone, Debug)]
pub struct PublisherOptions {
    /// The exactly-once identity; a random one when `None`.
    pub producer_id: Option<u64>,
    /// Sequence number of the first record this publisher sends.
    pub first_sequence: u64,
    /// Appends sent and not yet answered, at most (capped at
    /// [`PRODUCER_WINDOW_BATCHES_MAX`], and records in flight at
    /// [`PRODUCER_WINDOW_RECORDS_MAX`]).
    pub inflight_max: usize,
}

impl Default for PublisherOptions {
    fn default() -> PublisherOptions {
        PublisherOptions {
            producer_id: None,
            first_sequence: 0,
            inflight_max: INFLIGHT_DEFAULT,
        }
    }
}

type AppendResult = Result<AppendedIndexes, ClientError>;

/// Resolves to the indexes of a batch's records once they are committed.
pub struct AppendTicket {
    answer: oneshot::Receiver<AppendResult>,
}

impl Future for AppendTicket {
    type Output = AppendResult;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<AppendResult> {
        Pin::new(&mut self.answer)
            .poll(context)
            .map(|answer| answer.unwrap_or(Err(ClientError::Closed)))
    }
}

struct Batch {
    first_sequence: u64,
    records: Vec<Bytes>,
    reply: oneshot::Sender<AppendResult>,
    /// Frees a window slot when the batch is answered.
    _permit: OwnedSemaphorePermit,
    /// Frees its records' share of the records window then.
    _records_permit: OwnedSemaphorePermit,
}

/// One Append request: the records of consecutive batches, sent (and after
/// a failure resent) together with the sequence of the first.
struct Request {
    first_sequence: u64,
    records: Vec<Bytes>,
    /// The callers' batches it carries, in order, with their record counts.
    batches: Vec<(Batch, u64)>,
    /// When it was first sent, for the retry deadline.
    first_sent: Option<Instant>,
    /// When it was last sent, for the request timeout.
    last_sent: Option<Instant>,
}

/// Append requests a publisher keeps in flight on its stream. Batches that
/// arrive while these are unanswered wait and travel together in the next
/// request (Kafka's producer batches the same way while requests are in
/// flight): many single-record appends become a few large requests, and a
/// lone append on an idle link still goes out at once.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4;
/// Record bytes one request carries at most when it joins several batches
/// (a single batch is sent whole, whatever its size).
const REQUEST_JOIN_BYTES_MAX: usize = 1024 * 1024;
/// Batches taken from the queue at once: the publisher's window bounds it
/// too, this only bounds one turn of the session.
const PENDING_BATCHES_MAX: usize = 4096;

pub struct Publisher {
    batches: mpsc::Sender<Batch>,
    window: Arc<Semaphore>,
    /// Records in flight, at most [`PRODUCER_WINDOW_RECORDS_MAX`].
    records_window: Arc<Semaphore>,
    producer_id: u64,
    next_sequence: u64,
    task: JoinHandle<()>,
}

impl Publisher {
    /// Connects to some node of the cluster (to fail fast on a bad address or
    /// certificate) and starts the publisher's task.
    pub async fn connect(
        config: ClientConfig,
        options: PublisherOptions,
    ) -> Result<Publisher, ClientError> {
        let tls = Tls::load(&config)?;
        Publisher::with_pool(Pool::new(config, tls)?, options).await
    }

    /// A publisher on the connections of `pool`; waits until some node is
    /// reachable (to fail fast on a bad address or certificate).
    pub(super) async fn with_pool(
        pool: Pool,
        options: PublisherOptions,
    ) -> Result<Publisher, ClientError> {
        if options.inflight_max == 0 || options.inflight_max > INFLIGHT_MAX {
            return Err(ClientError::InvalidInput(format!(
                "in-flight window must be between 1 and {INFLIGHT_MAX}"
            )));
        }
        let deadline = Instant::now() + pool.config().request_timeout;
        pool.any(None, deadline).await?;
        let producer_id = options.producer_id.unwrap_or_else(random_producer_id);
        let (batches, incoming) = mpsc::channel(options.inflight_max);
        let session = Session {
            pool,
            producer_id,
            node: None,
            stream: None,
            generation: 0,
            pending: VecDeque::new(),
            unanswered: VecDeque::new(),
            backoff: RECONNECT_BACKOFF_MIN,
            last_progress: Instant::now(),
            search: None,
        };
        let task = tokio::spawn(session.run(incoming));
        Ok(Publisher {
            batches,
            window: Arc::new(Semaphore::new(
                options.inflight_max.min(PRODUCER_WINDOW_BATCHES_MAX),
            )),
            records_window: Arc::new(Semaphore::new(PRODUCER_WINDOW_RECORDS_MAX)),
            producer_id,
            next_sequence: options.first_sequence,
            task,
        })
    }

    pub fn producer_id(&self) -> u64 {
        self.producer_id
    }

    /// The sequence number the next record will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Queues a batch; waits while the in-flight window is full. The ticket
    /// resolves once every record of the batch is committed.
    pub async fn send(&mut self, records: Vec<Bytes>) -> Result<AppendTicket, ClientError> {
        if records.is_empty() || records.len() > RECORDS_PER_APPEND_MAX {
            return Err(ClientError::InvalidInput(format!(
                "an append carries 1 to {RECORDS_PER_APPEND_MAX} records, got {}",
                records.len()
            )));
        }
        if let Some(record) = records
            .iter()
            .find(|r| r.len() as u64 > RECORD_BYTES_MAX_LIMIT)
        {
            return Err(ClientError::InvalidInput(format!(
                "a record of {} bytes is over the protocol's limit of {RECORD_BYTES_MAX_LIMIT} bytes",
                record.len()
            )));
        }
        let permit = self
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed)?;
        // At most RECORDS_PER_APPEND_MAX <= PRODUCER_WINDOW_RECORDS_MAX permits
        // (checked above), so this waits only for older batches to be answered.
        let records_permit = self
            .records_window
            .clone()
            .acquire_many_owned(records.len() as u32)
            .await
            .map_err(|_| ClientError::Closed)?;
        let first_sequence = self.next_sequence;
        self.next_sequence = self
            .next_sequence
            .checked_add(records.len() as u64)
            .ok_or_else(|| ClientError::InvalidInput("sequence numbers exhausted".into()))?;
        let (reply, answer) = oneshot::channel();
        self.batches
            .send(Batch {
                first_sequence,
                records,
                reply,
                _permit: permit,
                _records_permit: records_permit,
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(AppendTicket { answer })
    }

    /// Appends one batch and waits for its indexes.
    pub async fn append(&mut self, records: Vec<Bytes>) -> Result<AppendedIndexes, ClientError> {
        self.send(records).await?.await
    }

    /// Waits for every queued batch to be answered, then disconnects.
    pub async fn close(self) {
        drop(self.batches);
        let _ = self.task.await;
    }
}

fn random_producer_id() -> u64 {
    super::pool::random_u64() | 1
}

/// The stream appends currently go on.
struct Stream {
    send: quinn::SendStream,
    generation: u64,
    reader: JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct Session {
    pool: Pool,
    producer_id: u64,
    /// The leader appends go to; `None` until found again after a failure.
    node: Option<NodeConnection>,
    stream: Option<Stream>,
    /// Bumped per stream, so answers read from an abandoned stream are ignored.
    generation: u64,
    /// Received from the caller, not sent yet, oldest first.
    pending: VecDeque<Batch>,
    /// Sent (or waiting to be resent) and not yet answered, oldest first.
    unanswered: VecDeque<Request>,
    backoff: std::time::Duration,
    /// The last answer, or the last (re)send when later: how long the
    /// oldest unanswered batch has waited without news.
    last_progress: Instant,
    /// A search for the leader started because answers stopped coming.
    search: Option<JoinHandle<Result<NodeConnection, ClientError>>>,
}

/// Silence after which a publisher with appends in flight asks the other
/// nodes whether a new leader took over: a commit takes a few milliseconds,
/// an election 150-300 ms, so a search this early finds the new leader as
/// soon as it wins. Asking is a status request to each node, so a false
/// alarm (a slow disk) costs next to nothing and switches nothing.
pub const LEADER_SEARCH_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// An answer read from stream `generation`, or why reading it failed.
type Answer = (u64, Result<ClientResponse, String>);

impl Session {
    async fn run(mut self, mut incoming: mpsc::Receiver<Batch>) {
        let (answer_tx, mut answers) = mpsc::channel::<Answer>(64);
        let mut closing = false;
        loop {
            if closing && self.unanswered.is_empty() && self.pending.is_empty() {
                return;
            }
            if let Err(error) = self.fail_expired() {
                self.fail_all(error, &mut incoming);
                return;
            }
            if self.stream.is_none() && !(self.unanswered.is_empty() && self.pending.is_empty()) {
                if let Err(error) = self.open_stream(&answer_tx).await {
                    self.fail_all(error, &mut incoming);
                    return;
                }
                continue;
            }
            self.send_pending().await;
            let wake_at = self.next_timeout();
            let search_at = self.next_search();
            tokio::select! {
                batch = incoming.recv(), if !closing => match batch {
                    Some(batch) => {
                        self.pending.push_back(batch);
                        while self.pending.len() < PENDING_BATCHES_MAX {
                            match incoming.try_recv() {
                                Ok(batch) => self.pending.push_back(batch),
                                Err(_) => break,
                            }
                        }
                    }
                    None => closing = true,
                },
                Some((generation, answer)) = answers.recv() => {
                    if Some(generation) == self.stream.as_ref().map(|s| s.generation) {
                        if let Err(error) = self.on_answer(answer).await {
                            self.fail_all(error, &mut incoming);
                            return;
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake_at.into()) => {
                    // The oldest batch waited too long: assume the node is gone.
                    if let Some(node) = &self.node {
                        self.pool.forget(node);
                    }
                    self.drop_connection();
                }
                _ = sleep_until_some(search_at), if self.search.is_none() => {
                    let pool = self.pool.clone();
                    let deadline = Instant::now() + self.pool.config().request_timeout;
                    self.search = Some(tokio::spawn(async move { pool.leader(deadline).await }));
                }
                found = wait_some(&mut self.search), if self.search.is_some() => {
                    self.search = None;
                    self.last_progress = Instant::now();
                    if let Ok(Ok(leader)) = found {
                        if self.node.as_ref().map(|node| node.addr.as_str()) != Some(leader.addr.as_str()) {
                            // Another node leads now: resend everything there.
                            self.stream = None;
                            self.node = Some(leader);
                        }
                    }
                }
            }
        }
    }

    /// When to look for a new leader: once the oldest unanswered batch has
    /// heard nothing for [`LEADER_SEARCH_AFTER`].
    fn next_search(&self) -> Option<Instant> {
        if self.unanswered.is_empty() || self.stream.is_none() {
            return None;
        }
        Some(self.last_progress + LEADER_SEARCH_AFTER)
    }

    /// When the oldest unanswered batch times out (far future when none).
    fn next_timeout(&self) -> Instant {
        self.unanswered
            .front()
            .and_then(|batch| batch.last_sent)
            .map(|sent| sent + self.pool.config().request_timeout)
            .unwrap_or_else(|| Instant::now() + RETRY_DEADLINE)
    }

    fn fail_expired(&mut self) -> Result<(), ClientError> {
        match self.unanswered.front().and_then(|batch| batch.first_sent) {
            Some(first_sent) if first_sent.elapsed() > RETRY_DEADLINE => {
                Err(ClientError::Timeout(RETRY_DEADLINE))
            }
            _ => Ok(()),
        }
    }

    /// Sends waiting batches while fewer than [`REQUESTS_IN_FLIGHT_MAX`]
    /// requests are unanswered, joining consecutive batches into one request.
    async fn send_pending(&mut self) {
        while self.stream.is_some()
            && !self.pending.is_empty()
            && self.unanswered.len() < REQUESTS_IN_FLIGHT_MAX
        {
            let mut request = Request {
                first_sequence: self.pending.front().map_or(0, |batch| batch.first_sequence),
                records: Vec::new(),
                batches: Vec::new(),
                first_sent: None,
                last_sent: None,
            };
            let mut bytes = 0usize;
            while let Some(batch) = self.pending.front() {
                let batch_bytes: usize = batch.records.iter().map(Bytes::len).sum();
                let fits = request.records.len() + batch.records.len() <= RECORDS_PER_APPEND_MAX
                    && bytes.saturating_add(batch_bytes) <= REQUEST_JOIN_BYTES_MAX;
                if !request.batches.is_empty() && !fits {
                    break;
                }
                let Some(mut batch) = self.pending.pop_front() else {
                    break;
                };
                debug_assert_eq!(
                    batch.first_sequence,
                    request.first_sequence + request.records.len() as u64,
                    "batches are queued in sequence order"
                );
                bytes = bytes.saturating_add(batch_bytes);
                let count = batch.records.len() as u64;
                request.records.append(&mut batch.records);
                request.batches.push((batch, count));
            }
            let written = match &mut self.stream {
                Some(stream) => write_request(stream, self.producer_id, &mut request)
                    .await
                    .is_ok(),
                None => false,
            };
            self.unanswered.push_back(request);
            if !written {
                // Resent with the others on the next stream.
                self.drop_connection();
            }
        }
    }

    /// Finds the leader (if needed), opens a fresh stream and resends every
    /// unanswered batch. Fails only with an error no retry can fix (the
    /// cluster refused this client); everything else is retried.
    async fn open_stream(&mut self, answer_tx: &mpsc::Sender<Answer>) -> Result<(), ClientError> {
        if self.node.is_none() {
            let mut deadline = Instant::now() + self.pool.config().request_timeout;
            if let Some(first_sent) = self.unanswered.front().and_then(|batch| batch.first_sent) {
                deadline = deadline.min(first_sent + RETRY_DEADLINE);
            }
            match self.pool.leader(deadline).await {
                Ok(node) => self.node = Some(node),
                Err(error) if !error.is_transient() => return Err(error),
                Err(_) => {
                    self.back_off().await;
                    return Ok(());
                }
            }
        }
        let Some(node) = &self.node else {
            return Ok(());
        };
        let (send, mut recv) = match node.open_stream().await {
            Ok(pair) => pair,
            Err(_) => {
                self.drop_connection();
                self.back_off().await;
                return Ok(());
            }
        };
        self.generation += 1;
        let generation = self.generation;
        let answers = answer_tx.clone();
        let reader = tokio::spawn(async move {
            loop {
                let answer = match net::read_frame(&mut recv, crate::wire::FRAME_BYTES_MAX).await {
                    Ok(Some(frame)) => {
                        ClientResponse::decode(frame).map_err(|error| error.to_string())
                    }
                    Ok(None) => Err("the node closed the stream".to_string()),
                    Err(error) => Err(error.to_string()),
                };
                let failed = answer.is_err();
                if answers.send((generation, answer)).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut stream = Stream {
            send,
            generation,
            reader,
        };
        for request in self.unanswered.iter_mut() {
            if write_request(&mut stream, self.producer_id, request)
                .await
                .is_err()
            {
                self.drop_connection();
                return Ok(());
            }
        }
        self.stream = Some(stream);
        self.last_progress = Instant::now();
        Ok(())
    }

    /// The oldest unanswered batch is committed at `indexes` (`None`: the
    /// node sent an impossible range, shown as `described`).
    fn on_appended(
        &mut self,
        indexes: Option<AppendedIndexes>,
        described: String,
    ) -> Result<(), ClientError> {
        let Some(request) = self.unanswered.pop_front() else {
            return Err(ClientError::Protocol {
                addr: self.node_addr(),
                reason: "an answer for an append never sent".into(),
            });
        };
        let expected = request.records.len() as u64;
        let Some(mut indexes) = indexes.filter(|indexes| indexes.count() == expected) else {
            return Err(ClientError::Protocol {
                addr: self.node_addr(),
                reason: format!("{expected} records answered with {described}"),
            });
        };
        self.backoff = RECONNECT_BACKOFF_MIN;
        self.last_progress = Instant::now();
        for (batch, count) in request.batches {
            // The counts add up to `expected`, checked above.
            let answer = indexes.split_front(count).ok_or(ClientError::Protocol {
                addr: String::new(),
                reason: "fewer indexes than records".into(),
            });
            let _ = batch.reply.send(answer);
        }
        Ok(())
    }

    async fn on_answer(
        &mut self,
        answer: Result<ClientResponse, String>,
    ) -> Result<(), ClientError> {
        let response = match answer {
            Ok(response) => response,
            Err(_) => {
                self.drop_connection();
                self.back_off().await;
                return Ok(());
            }
        };
        match response {
            ClientResponse::Appended {
                first_index,
                last_index,
            } => {
                let indexes = AppendedIndexes::contiguous(first_index, last_index);
                let described = format!("indexes {first_index}..={last_index}");
                self.on_appended(indexes, described)
            }
            // A re-sent batch whose records are in several places of the log.
            ClientResponse::AppendedRuns(indexes) => {
                let described = format!("index runs {:?}", indexes.runs());
                self.on_appended(Some(indexes), described)
            }
            ClientResponse::Error(error) => match error {
                // The leader moved, or this node is going away: look for
                // the leader again (the search asks every node, so a
                // redirect to a node that just died costs nothing).
                ErrorResponse::NotLeader { .. }
                | ErrorResponse::Unavailable
                | ErrorResponse::ShuttingDown
                | ErrorResponse::Timeout => {
                    self.drop_connection();
                    self.back_off().await;
                    Ok(())
                }
                // The leader is fine but cannot take appends right now (a
                // leadership transfer is under way, or its disk is behind):
                // wait and send the same batches again on a fresh stream of
                // the same connection (answers on a stream come in order, so
                // the later batches in flight on this one are resent too; a
                // transfer ends in a NotLeader that redirects).
                ErrorResponse::ChangeInProgress | ErrorResponse::Busy => {
                    self.stream = None;
                    self.back_off().await;
                    Ok(())
                }
                error => Err(ClientError::Refused(error)),
            },
            other => Err(connection::unexpected(&other)),
        }
    }

    fn node_addr(&self) -> String {
        self.node
            .as_ref()
            .map(|node| node.addr.clone())
            .unwrap_or_default()
    }

    fn drop_connection(&mut self) {
        self.stream = None;
        self.node = None;
    }

    /// Pauses before the next attempt: jittered, doubling while attempts
    /// keep failing, back to the minimum after an answer.
    async fn back_off(&mut self) {
        tokio::time::sleep(super::pool::jittered(self.backoff / 2, self.backoff)).await;
        self.backoff = (self.backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }

    /// A batch failed for good: it and every later batch fail with the same
    /// error (their sequences would leave a gap the cluster refuses).
    fn fail_all(&mut self, error: ClientError, incoming: &mut mpsc::Receiver<Batch>) {
        let message = error.to_string();
        let mut first = Some(error);
        incoming.close();
        let mut rest = Vec::new();
        while let Ok(batch) = incoming.try_recv() {
            rest.push(batch);
        }
        let sent = self
            .unanswered
            .drain(..)
            .flat_map(|request| request.batches.into_iter().map(|(batch, _)| batch));
        for batch in sent.chain(self.pending.drain(..)).chain(rest) {
            let error = first
                .take()
                .unwrap_or_else(|| ClientError::Abandoned(message.clone()));
            let _ = batch.reply.send(Err(error));
        }
    }
}

/// Sleeps until `at`; never wakes for `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The result of the task in `task`; never resolves for `None`.
async fn wait_some<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

async fn write_request(
    stream: &mut Stream,
    producer_id: u64,
    request: &mut Request,
) -> Result<(), ()> {
    let now = Instant::now();
    request.first_sent.get_or_insert(now);
    request.last_sent = Some(now);
    let request = ClientRequest::Append(AppendRequest {
        producer: Some(ProducerSeq {
            producer_id,
            sequence: request.first_sequence,
        }),
        records: request.records.clone(),
    });
    // `send` checked the limits the encoder enforces and a joined request
    // stays within them, so this cannot fail.
    let body = request.encode().map_err(|_| ())?;
    net::write_frame(&mut stream.send, body)
        .await
        .map_err(|_| ())
}
