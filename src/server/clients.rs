//! Serving clients: one task per connection, one per request stream.
//!
//! A stream carries one request, except appends: a publisher sends its
//! appends in order on one stream and gets the answers in the same order,
//! which is what lets it resend after a failure without reordering. Consume
//! streams stay open and are fed from the log as the commit index moves.
//!
//! Nothing here holds the consensus core: requests go to the driver task
//! through a bounded channel, and consumers read the log under its read lock
//! on a blocking thread (a first read may rebuild a segment's index).
//! Every frame read and every consume batch takes its bytes from the node's
//! client budget first ([`super::budget`]).

use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

use super::budget::{BufferPermit, ClientBuffers, CLIENT_STALL_TIMEOUT, STREAM_RESET_STALLED};
use super::driver::{Commit, DriverRequest, SharedLog};
use super::metrics::{self, FrameSource, Metrics, RejectLabels, RequestKind};
use super::stages::Stage;
use crate::net;
use crate::net::certs::Role;
use crate::net::ClientIdentity;
use crate::storage::LOG_INDEX_MAX;
use crate::types::{EntryKind, LogIndex};
use crate::wire::client::{
    AppendRequest, ClientRequest, ClientResponse, ConsumeEnd, ConsumeEndReason, ConsumeFrom,
    ConsumeRequest, ErrorResponse, RecordBatch,
};
use crate::wire::FRAME_BYTES_MAX;

/// Appends of one stream waiting for their commit, at most; the publisher's
/// window is smaller, this only bounds a misbehaving client.
pub const APPENDS_PENDING_PER_STREAM_MAX: usize = 4096;
/// Payload bytes per consume frame, at most (one larger record still goes alone).
pub const CONSUME_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Segment indexes one consume read builds outside the log lock; any more
/// (a batch never spans that many segments) are built under it.
const INDEX_JOBS_PER_READ_MAX: usize = 4;

/// What every client task needs.
#[derive(Clone)]
pub struct ClientContext {
    pub requests: mpsc::Sender<DriverRequest>,
    pub log: SharedLog,
    pub commit: watch::Receiver<Commit>,
    pub metrics: Metrics,
    /// The bytes buffered for all clients of the node.
    pub buffers: ClientBuffers,
    /// `--allow-anonymous-clients`: serve publish, consume and status to
    /// callers without a certificate.
    pub allow_anonymous_clients: bool,
    /// Consume streams still open: at shutdown the node waits (bounded) for
    /// each to deliver its ShuttingDown before it closes the connections.
    pub open_consumes: OpenConsumes,
}

/// Counts the consume streams being served (see [`ClientContext::open_consumes`]).
#[derive(Clone, Default)]
pub struct OpenConsumes(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl OpenConsumes {
    fn enter(&self) -> OpenConsume {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        OpenConsume(self.clone())
    }

    /// Waits until no consume stream is open, at most `timeout`.
    pub async fn wait_closed(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.0.load(std::sync::atomic::Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

struct OpenConsume(OpenConsumes);

impl Drop for OpenConsume {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long a consume stream that ends at shutdown waits for the client to
/// acknowledge its ShuttingDown before the node closes the connection.
const SHUTDOWN_DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);

/// What a consumer did on its sending side after the request.
#[derive(Clone, Copy, Debug)]
enum ClientSide {
    /// RESET_STREAM with this code: the consumer is gone (like STOP_SENDING).
    Reset(quinn::VarInt),
    /// Bytes after the request: a consume stream carries one request.
    ExtraFrame,
}

/// Watches a consume stream's receiving side after its request: FIN is
/// expected; a reset or more bytes is reported once.
fn watch_client_side(mut recv: quinn::RecvStream) -> watch::Receiver<Option<ClientSide>> {
    let (report, watched) = watch::channel(None);
    tokio::spawn(async move {
        let mut byte = [0u8; 1];
        let seen = loop {
            match recv.read(&mut byte).await {
                Ok(None) => return,
                Ok(Some(0)) => continue,
                Ok(Some(_)) => break ClientSide::ExtraFrame,
                Err(quinn::ReadError::Reset(code)) => break ClientSide::Reset(code),
                Err(_) => return,
            }
        };
        let _ = report.send(Some(seen));
        // Keep the channel open until the consume task has seen it.
        report.closed().await;
    });
    watched
}

/// Whether `caller` (its verified certificate, `None` without one) may make
/// `request`: admin requests need the admin role, always; everything else
/// needs a certificate of the cluster CA unless anonymous clients are
/// allowed. The TLS handshake has already checked that a presented
/// certificate is signed by the cluster CA.
pub fn authorize(
    request: &ClientRequest,
    caller: Option<&ClientIdentity>,
    allow_anonymous_clients: bool,
) -> Result<(), ErrorResponse> {
    let denied = |reason: String| Err(ErrorResponse::PermissionDenied { reason });
    match (request, caller) {
        (ClientRequest::Admin(_), Some(identity)) if identity.role == Role::Admin => Ok(()),
        (ClientRequest::Admin(_), Some(identity)) => denied(format!(
            "admin requests need the admin identity (admin.pem/admin.key from `raftlog certs`); the certificate presented has role {}",
            identity.role
        )),
        (ClientRequest::Admin(_), None) => denied(
            "admin requests need the admin identity (admin.pem/admin.key from `raftlog certs`); no certificate was presented".to_string(),
        ),
        (_, Some(_)) => Ok(()),
        (_, None) if allow_anonymous_clients => Ok(()),
        (_, None) => denied(
            "this node requires a client certificate of the cluster CA (client.pem/client.key from `raftlog certs` in --tls-dir); none was presented".to_string(),
        ),
    }
}

/// Serves every stream of one client connection until it closes.
/// `caller` is the verified certificate the client presented, if any.
pub async fn serve_connection(
    connection: quinn::Connection,
    caller: Option<ClientIdentity>,
    context: ClientContext,
) {
    let _open = metrics::ConnectionGauge::enter(&context.metrics.client_connections);
    let caller = std::sync::Arc::new(caller);
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(pair) => pair,
            Err(error) => {
                debug!(remote = %connection.remote_address(), %error, "client connection closed");
                return;
            }
        };
        let context = context.clone();
        let caller = caller.clone();
        tokio::spawn(async move {
            serve_stream(send, recv, caller.as_ref().as_ref(), context).await;
        });
    }
}

/// The `kind` label of a request.
fn request_kind(request: &ClientRequest) -> RequestKind {
    match request {
        ClientRequest::Append(_) => RequestKind::Append,
        ClientRequest::Consume(_) => RequestKind::Consume,
        ClientRequest::Status => RequestKind::Status,
        ClientRequest::Admin(_) => RequestKind::Admin,
    }
}

fn invalid(reason: &str) -> ClientResponse {
    ClientResponse::Error(ErrorResponse::InvalidRequest {
        reason: reason.to_string(),
    })
}

fn shutting_down() -> ClientResponse {
    ClientResponse::Error(ErrorResponse::ShuttingDown)
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    caller: Option<&ClientIdentity>,
    context: ClientContext,
) {
    let (first, permit) = match read_request(&mut recv, &context).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(response) => {
            let _ = write_response(&mut send, &response).await;
            return;
        }
    };
    // An append stream carries only appends, so the first request decides
    // for the whole stream.
    let kind = request_kind(&first);
    if let Err(error) = authorize(&first, caller, context.allow_anonymous_clients) {
        context.metrics.permission_denied.inc();
        context.metrics.count_request(kind, error.outcome());
        debug!(%error, role = ?caller.map(|identity| identity.role), "refused a client request");
        let _ = write_response(&mut send, &ClientResponse::Error(error)).await;
        let _ = send.finish();
        return;
    }
    match first {
        ClientRequest::Append(append) => serve_appends(send, recv, (append, permit), context).await,
        ClientRequest::Consume(consume) => {
            drop(permit);
            let _open = context.open_consumes.enter();
            let client_side = watch_client_side(recv);
            let mut outcome = "ok";
            serve_consume(send, consume, client_side, &context, &mut outcome).await;
            context.metrics.count_request(kind, outcome);
        }
        request => {
            drop(permit);
            let response =
                ask_driver(&context, |reply| DriverRequest::Other { request, reply }).await;
            context.metrics.count_response(kind, &response);
            let _ = write_response(&mut send, &response).await;
            let _ = send.finish();
        }
    }
}

/// Reads and decodes one request; a malformed one is counted and answered
/// with the matching error (the stream then ends).
async fn read_request(
    recv: &mut quinn::RecvStream,
    context: &ClientContext,
) -> Result<Option<(ClientRequest, BufferPermit)>, ClientResponse> {
    let rejected = |error: ErrorResponse| {
        context
            .metrics
            .rejected_frames
            .get_or_create(&RejectLabels {
                source: FrameSource::Client,
            })
            .inc();
        debug!(%error, "refused a client frame");
        ClientResponse::Error(error)
    };
    let body_bytes = match net::read_frame_length(recv, FRAME_BYTES_MAX).await {
        Ok(Some(body_bytes)) => body_bytes,
        Ok(None) => return Ok(None),
        Err(error) => {
            return Err(rejected(ErrorResponse::InvalidRequest {
                reason: error.to_string(),
            }))
        }
    };
    // Room first: while the budget is spent this stream is not read, and
    // QUIC flow control holds the client back.
    let permit = context
        .buffers
        .take(body_bytes)
        .await
        .map_err(|_| shutting_down())?;
    let frame: Bytes = match net::read_frame_body(recv, body_bytes).await {
        Ok(frame) => frame,
        Err(error) => {
            return Err(rejected(ErrorResponse::InvalidRequest {
                reason: error.to_string(),
            }))
        }
    };
    ClientRequest::decode(frame)
        .map(|request| Some((request, permit)))
        .map_err(|error| rejected(ErrorResponse::from_decode_error(&error)))
}

async fn write_response(send: &mut quinn::SendStream, response: &ClientResponse) -> Result<(), ()> {
    net::write_frame(send, response.encode())
        .await
        .map_err(|_| ())
}

/// How a budgeted write ended.
enum WriteEnd {
    Written,
    /// The stream broke (the client went away).
    Failed,
    /// No end within [`CLIENT_STALL_TIMEOUT`] while another stream waited
    /// for the budget: the stream was reset with [`STREAM_RESET_STALLED`].
    Stalled,
}

/// Writes `frame`; if the client does not take it within
/// [`CLIENT_STALL_TIMEOUT`] while other streams wait for the budget, resets
/// the stream so that the bytes it holds go to them.
async fn write_or_give_up(
    send: &mut quinn::SendStream,
    frame: Bytes,
    buffers: &ClientBuffers,
) -> WriteEnd {
    let stalled = {
        let write = net::write_frame(send, frame);
        tokio::pin!(write);
        loop {
            tokio::select! {
                result = &mut write => {
                    return if result.is_ok() { WriteEnd::Written } else { WriteEnd::Failed };
                }
                () = tokio::time::sleep(CLIENT_STALL_TIMEOUT) => {
                    if buffers.contended() {
                        break true;
                    }
                }
            }
        }
    };
    debug_assert!(stalled);
    debug!("resetting a stalled client stream: other streams wait for the buffer budget");
    let _ = send.reset(quinn::VarInt::from_u32(STREAM_RESET_STALLED));
    WriteEnd::Stalled
}

async fn ask_driver(
    context: &ClientContext,
    request: impl FnOnce(oneshot::Sender<ClientResponse>) -> DriverRequest,
) -> ClientResponse {
    let (reply, answer) = oneshot::channel();
    if context.requests.send(request(reply)).await.is_err() {
        return shutting_down();
    }
    answer.await.unwrap_or_else(|_| shutting_down())
}

/// Appends, in order: each is handed to the driver as soon as it is read;
/// answers are written in the same order as their commits arrive.
async fn serve_appends(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    first: (AppendRequest, BufferPermit),
    context: ClientContext,
) {
    // Each answer travels with the bytes its request holds, given back once
    // the answer is written, and with when the request was read (for the
    // stage timings).
    type Pending = (
        oneshot::Receiver<ClientResponse>,
        Option<BufferPermit>,
        Instant,
    );
    let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(APPENDS_PENDING_PER_STREAM_MAX);
    let buffers = context.buffers.clone();
    let metrics = context.metrics.clone();
    let stages = context.metrics.stages.clone();
    let writer = tokio::spawn(async move {
        while let Some((answer, permit, received)) = pending_rx.recv().await {
            let response = answer.await.unwrap_or_else(|_| shutting_down());
            metrics.count_response(RequestKind::Append, &response);
            let answered = Instant::now();
            match write_or_give_up(&mut send, response.encode(), &buffers).await {
                WriteEnd::Written => {
                    drop(permit);
                    if matches!(
                        response,
                        ClientResponse::Appended { .. } | ClientResponse::AppendedRuns(_)
                    ) {
                        stages.record(Stage::Reply, answered.elapsed());
                        stages.record(Stage::Total, received.elapsed());
                    }
                }
                WriteEnd::Failed | WriteEnd::Stalled => return,
            }
        }
        let _ = send.finish();
    });
    let mut next = Some(first);
    let mut received = Instant::now();
    while let Some((append, permit)) = next.take() {
        let (reply, answer) = oneshot::channel();
        if context
            .requests
            .send(DriverRequest::Append {
                request: append,
                reply,
                received,
            })
            .await
            .is_err()
        {
            break;
        }
        if pending_tx
            .send((answer, Some(permit), received))
            .await
            .is_err()
        {
            break;
        }
        next = match read_request(&mut recv, &context).await {
            Ok(Some((ClientRequest::Append(append), permit))) => {
                received = Instant::now();
                Some((append, permit))
            }
            Ok(Some(_)) => {
                let (reply, answer) = oneshot::channel();
                let _ = reply.send(invalid("an append stream carries only appends"));
                let _ = pending_tx.send((answer, None, Instant::now())).await;
                None
            }
            Ok(None) => None,
            Err(response) => {
                let (reply, answer) = oneshot::channel();
                let _ = reply.send(response);
                let _ = pending_tx.send((answer, None, Instant::now())).await;
                None
            }
        };
    }
    drop(pending_tx);
    let _ = writer.await;
}

/// Streams committed data records from the cursor, never past the commit index.
/// `outcome` is set to the error's name when the stream ends with one.
async fn serve_consume(
    mut send: quinn::SendStream,
    request: ConsumeRequest,
    mut client_side: watch::Receiver<Option<ClientSide>>,
    context: &ClientContext,
    outcome: &mut &'static str,
) {
    let mut commit_rx = context.commit.clone();
    let commit = *commit_rx.borrow_and_update();
    if let ConsumeFrom::Index(index) = request.from {
        if index > LOG_INDEX_MAX {
            let reason = format!(
                "Consume.from_index {index} is beyond any log (indexes end at {LOG_INDEX_MAX})"
            );
            let response = invalid(&reason);
            *outcome = metrics::response_outcome(&response);
            let _ = write_response(&mut send, &response).await;
            let _ = send.finish();
            return;
        }
    }
    let mut next = match request.from {
        ConsumeFrom::Start => commit.first_index,
        ConsumeFrom::End => commit.commit_index.saturating_add(1),
        // Retention may have dropped the start: resume at the log start.
        ConsumeFrom::Index(index) => index.max(commit.first_index),
    };
    // Without `follow`, the stream ends at the commit index seen now.
    let stop_at = (!request.follow).then_some(commit.commit_index);
    let mut records_left = request.limit.unwrap_or(u64::MAX);
    if records_left == 0 {
        // Nothing asked for: end at the cursor asked for, without reading.
        // (A read would end its batch past records it then did not send,
        // and a consumer continuing from there would skip them.)
        end_consume(&mut send, ConsumeEndReason::LimitReached, next).await;
        return;
    }
    let mut first_frame = true;
    // The log start passed the cursor after the stream began (retention,
    // or a follower reset to its leader's log start): the next frame goes
    // out even when empty, so the consumer learns at once from its
    // `start_index` where the stream continues (docs/protocol.md 5.3).
    let mut announce_skip = false;
    let mut watching_client = true;
    loop {
        let seen = *client_side.borrow();
        if let Some(seen) = seen {
            return end_for_client(&mut send, seen, outcome).await;
        }
        let commit = *commit_rx.borrow_and_update();
        if commit.first_index > next && !first_frame {
            announce_skip = true;
        }
        next = next.max(commit.first_index);
        let last = stop_at.map_or(commit.commit_index, |stop| stop.min(commit.commit_index));
        // A batch never reaches past `commit_index + 1`: a cursor beyond it
        // (a consumer resuming on a node that lags) waits for the commit
        // index, or, without `follow`, ends the stream where it is.
        let cursor_reachable = next <= commit.commit_index.saturating_add(1);
        if next <= last || ((first_frame || announce_skip) && cursor_reachable) {
            // The first frame goes out even when empty: it tells the consumer
            // where its cursor starts and the commit index.
            // The batch's bytes are taken before it is read; a single record
            // larger than the batch takes the rest before it is encoded.
            let batch_bytes = context.buffers.consume_batch_bytes(CONSUME_BATCH_BYTES_MAX);
            let Ok(permit) = context.buffers.take(batch_bytes).await else {
                *outcome = ErrorResponse::ShuttingDown.outcome();
                end_with_shutting_down(&mut send).await;
                return;
            };
            let log = context.log.clone();
            let commit_index = commit.commit_index;
            let read = tokio::task::spawn_blocking(move || {
                read_records(&log, next, last, commit_index, batch_bytes)
            })
            .await
            .unwrap_or_else(|_| Err(ReadError::Failed("the log reader panicked".to_string())));
            let mut batch = match read {
                Ok(batch) => batch,
                Err(ReadError::BelowLogStart { log_start }) => {
                    // Retention or a reset moved the log start past the
                    // cursor after the commit snapshot of this read: not an
                    // error. Continue there, announced by the next batch
                    // (as soon as the commit index reaches it, 4.3).
                    next = next.max(log_start);
                    announce_skip = true;
                    drop(permit);
                    continue;
                }
                Err(ReadError::Failed(reason)) => {
                    let error = ClientResponse::Error(ErrorResponse::Internal { reason });
                    *outcome = metrics::response_outcome(&error);
                    let _ = write_response(&mut send, &error).await;
                    return;
                }
            };
            if batch.records.len() as u64 >= records_left {
                batch
                    .records
                    .truncate(usize::try_from(records_left).unwrap_or(usize::MAX));
                if let Some((index, _)) = batch.records.last() {
                    // Below the commit index (a record read from the log).
                    batch.next_index = index.saturating_add(1);
                }
            }
            records_left = records_left.saturating_sub(batch.records.len() as u64);
            next = batch.next_index;
            first_frame = false;
            announce_skip = false;
            let encoded_bytes = batch.encoded_bytes();
            let extra = match encoded_bytes.checked_sub(batch_bytes) {
                Some(over) if over > 0 => match context.buffers.take(over).await {
                    Ok(extra) => Some(extra),
                    Err(_) => return,
                },
                _ => None,
            };
            let frame = ClientResponse::Records(batch).encode();
            match write_or_give_up(&mut send, frame, &context.buffers).await {
                WriteEnd::Written => {}
                // The consumer went away, or stopped reading while others wait.
                WriteEnd::Failed | WriteEnd::Stalled => return,
            }
            drop((permit, extra));
            if records_left == 0 {
                end_consume(&mut send, ConsumeEndReason::LimitReached, next).await;
                return;
            }
            continue;
        }
        if stop_at.is_some_and(|stop| next > stop) {
            end_consume(&mut send, ConsumeEndReason::CommitIndexReached, next).await;
            return;
        }
        // Wait for the commit index to move, the consumer to go away or
        // to send what a consume stream does not carry, or the node to stop.
        tokio::select! {
            changed = commit_rx.changed() => if changed.is_err() {
                // The driver is gone: the node is stopping (4.1).
                *outcome = ErrorResponse::ShuttingDown.outcome();
                end_with_shutting_down(&mut send).await;
                return;
            },
            _ = send.stopped() => return,
            changed = client_side.changed(), if watching_client => {
                let seen = if changed.is_ok() { *client_side.borrow_and_update() } else { None };
                match seen {
                    Some(seen) => return end_for_client(&mut send, seen, outcome).await,
                    // FIN after the request, as it should be: nothing more to watch.
                    None => watching_client = changed.is_ok(),
                }
            }
        }
    }
}

/// Ends a consume stream for what its client did after the request (4.1):
/// a reset is mirrored (the node resets its side with the client's code);
/// a further frame is answered `InvalidRequest`, then FIN.
async fn end_for_client(
    send: &mut quinn::SendStream,
    seen: ClientSide,
    outcome: &mut &'static str,
) {
    match seen {
        ClientSide::Reset(code) => {
            debug!(%code, "a consumer reset its stream; consume ended");
            let _ = send.reset(code);
        }
        ClientSide::ExtraFrame => {
            let response = invalid("a consume stream carries one request");
            *outcome = metrics::response_outcome(&response);
            if write_response(send, &response).await.is_ok() {
                let _ = send.finish();
            }
        }
    }
}

/// Ends a consume stream because the node stops: `ShuttingDown`, FIN, and a
/// bounded wait for the client to acknowledge it before the node closes.
async fn end_with_shutting_down(send: &mut quinn::SendStream) {
    if write_response(send, &shutting_down()).await.is_ok() && send.finish().is_ok() {
        let _ = tokio::time::timeout(SHUTDOWN_DELIVERY_TIMEOUT, send.stopped()).await;
    }
}

async fn end_consume(send: &mut quinn::SendStream, reason: ConsumeEndReason, next_index: LogIndex) {
    let end = ClientResponse::ConsumeEnd(ConsumeEnd { reason, next_index });
    if write_response(send, &end).await.is_ok() {
        let _ = send.finish();
    }
}

/// Why a consumer's read returned no batch.
#[derive(Debug, PartialEq, Eq)]
enum ReadError {
    /// The log starts after the cursor: retention dropped, or a follower
    /// reset discarded, the entries there after the caller took its commit
    /// snapshot (the watch learns the new log start just after the log).
    BelowLogStart { log_start: LogIndex },
    /// Anything else (storage damage, a poisoned lock): answered `Internal`.
    Failed(String),
}

/// Reads data records `next..=last` (bounded by bytes), skipping no-ops and
/// config entries, and says where the next read starts.
fn read_records(
    log: &SharedLog,
    next: LogIndex,
    last: LogIndex,
    commit_index: LogIndex,
    batch_bytes: usize,
) -> Result<RecordBatch, ReadError> {
    let poisoned = |_| ReadError::Failed("the log lock is poisoned".to_string());
    debug_assert!(
        last <= commit_index,
        "a consumer must never read past the commit index"
    );
    let mut batch = RecordBatch {
        start_index: next,
        next_index: next,
        commit_index,
        records: Vec::new(),
    };
    if next > last {
        return Ok(batch);
    }
    // A first read of a segment may rebuild its index (a scan of the whole
    // segment): done here without holding the log, so appends never wait
    // for it. A batch spans a segment or two.
    for _ in 0..INDEX_JOBS_PER_READ_MAX {
        let job = log.read().map_err(poisoned)?.index_job(next, last);
        let Some(job) = job else { break };
        let built = job.run();
        log.read().map_err(poisoned)?.install_index(built);
    }
    let entries = {
        let log = log.read().map_err(poisoned)?;
        // Checked under the same lock as the read: nothing can move the
        // log start between the two.
        if next < log.first_index() {
            return Err(ReadError::BelowLogStart {
                log_start: log.first_index(),
            });
        }
        log.entries(next, last, batch_bytes)
            .map_err(|error| ReadError::Failed(error.to_string()))?
    };
    for entry in entries {
        batch.next_index = entry.index + 1;
        if entry.kind == EntryKind::Data {
            batch.records.push((entry.index, entry.payload));
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Log, LogConfig};
    use crate::types::{Entry, LogStart, Membership};
    use crate::wire::client::AdminRequest;

    /// The race of a consumer's read with retention (or a follower reset):
    /// the read was planned from a commit snapshot taken before the log
    /// start moved past its cursor. It is a typed "below the log start,
    /// continue at N", not a storage error (answered `Internal`, which
    /// ended the consumer: "index 5 is outside the log 21..=40").
    #[test]
    fn a_read_below_a_log_start_that_moved_says_where_the_log_starts() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            dir.path(),
            LogConfig {
                segment_bytes: 4096,
                preallocate: false,
            },
        )
        .unwrap()
        .log;
        let entries: Vec<Entry> = (1..=40)
            .map(|i| Entry::data(i, 1, Bytes::from(vec![i as u8; 200])))
            .collect();
        log.append(&entries).unwrap();
        log.sync().unwrap();
        let shared: SharedLog = std::sync::Arc::new(std::sync::RwLock::new(log));
        let before = read_records(&shared, 5, 40, 40, 1 << 20).unwrap();
        assert_eq!(before.records.first().map(|r| r.0), Some(5));
        // Retention runs between the consumer's snapshot and its read.
        shared
            .write()
            .unwrap()
            .advance_start(LogStart {
                first_index: 21,
                prev_term: 1,
                membership: Membership::default(),
                producers: bytes::Bytes::new(),
            })
            .unwrap();
        assert_eq!(
            read_records(&shared, 5, 40, 40, 1 << 20),
            Err(ReadError::BelowLogStart { log_start: 21 })
        );
        // A follower reset to a leader's log start beyond its whole log.
        shared
            .write()
            .unwrap()
            .reset(LogStart {
                first_index: 100,
                prev_term: 2,
                membership: Membership::default(),
                producers: bytes::Bytes::new(),
            })
            .unwrap();
        assert_eq!(
            read_records(&shared, 21, 40, 40, 1 << 20),
            Err(ReadError::BelowLogStart { log_start: 100 })
        );
        // At or past the log start, reads go on as before.
        let at_start = read_records(&shared, 100, 99, 99, 1 << 20).unwrap();
        assert_eq!((at_start.start_index, at_start.next_index), (100, 100));
    }

    fn caller(role: Role, node_id: Option<u64>) -> ClientIdentity {
        ClientIdentity {
            dns_names: Vec::new(),
            node_id,
            role,
        }
    }

    /// Issue 12: admin requests need the admin role whatever the node's
    /// anonymous setting; the other requests need a certificate unless
    /// anonymous clients are allowed.
    #[test]
    fn admin_requests_need_the_admin_role_and_the_rest_a_certificate_unless_anonymous_is_allowed() {
        let admin_requests = [
            ClientRequest::Admin(AdminRequest::AddNode {
                id: 4,
                addr: "127.0.0.1:1".into(),
            }),
            ClientRequest::Admin(AdminRequest::RemoveNode { id: 2 }),
            ClientRequest::Admin(AdminRequest::TransferLeader { id: 2 }),
        ];
        let other_requests = [
            ClientRequest::Status,
            ClientRequest::Consume(crate::wire::client::ConsumeRequest {
                from: crate::wire::client::ConsumeFrom::Start,
                follow: false,
                limit: None,
            }),
            ClientRequest::Append(AppendRequest {
                producer: None,
                records: vec![Bytes::from_static(b"x")],
            }),
        ];
        let admin = caller(Role::Admin, None);
        let client = caller(Role::Client, None);
        let node = caller(Role::Node, Some(1));
        for allow_anonymous in [false, true] {
            for request in &admin_requests {
                assert_eq!(authorize(request, Some(&admin), allow_anonymous), Ok(()));
                for refused in [Some(&client), Some(&node), None] {
                    assert!(
                        matches!(
                            authorize(request, refused, allow_anonymous),
                            Err(ErrorResponse::PermissionDenied { .. })
                        ),
                        "{request:?} by {refused:?}"
                    );
                }
            }
            for request in &other_requests {
                for allowed in [&admin, &client, &node] {
                    assert_eq!(authorize(request, Some(allowed), allow_anonymous), Ok(()));
                }
                let anonymous = authorize(request, None, allow_anonymous);
                if allow_anonymous {
                    assert_eq!(anonymous, Ok(()));
                } else {
                    assert!(matches!(
                        anonymous,
                        Err(ErrorResponse::PermissionDenied { .. })
                    ));
                }
            }
        }
    }
}
