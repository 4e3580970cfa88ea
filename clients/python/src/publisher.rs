//! `Publisher` and `AsyncPublisher`: one Rust [`raftlog::client::Publisher`]
//! each, owned by a task on the runtime.
//!
//! Appends from Python go, in call order, through one channel to that task,
//! which queues each as a batch of the Rust publisher (so they get
//! consecutive sequences, and the Rust publisher joins batches that wait
//! into few requests while requests are in flight). A second task awaits
//! the batches' tickets in order and answers each caller: a blocked thread
//! through a channel, a `concurrent.futures.Future` or an asyncio future
//! through the delivery thread. Exactly-once, retries and failover are the
//! Rust publisher's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyModule, PyString};
use raftlog::client::{AppendTicket, Client, PublisherOptions};
use raftlog::wire::client::{RECORDS_PER_APPEND_MAX, RECORD_BYTES_MAX_LIMIT};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::aio::{self, Value};
use crate::errors::{Failure, Kind};
use crate::runtime::{deliver, runtime, wait};

/// The Rust publisher's bound on its window (`INFLIGHT_MAX`).
pub const MAX_IN_FLIGHT_MAX: usize = 4096;
/// Record bytes one batch of `append_many` carries at most (a larger
/// record goes alone); the Rust publisher joins batches up to the same.
const BATCH_BYTES_MAX: usize = 1024 * 1024;

type Indexes = Result<Vec<u64>, Failure>;

/// Who waits for an append.
enum Reply {
    /// A thread or task waiting on a channel, for every index of the batch.
    Channel(oneshot::Sender<Indexes>),
    /// A `concurrent.futures.Future`, resolved to the first index.
    Future {
        future: Py<PyAny>,
        /// A slot of `append_nowait`'s window, freed once answered.
        permit: OwnedSemaphorePermit,
    },
    /// An asyncio future of `event_loop`, resolved to the first index.
    Asyncio {
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
    },
}

enum Command {
    Append {
        records: Vec<Bytes>,
        reply: Reply,
    },
    /// Answered on the delivery thread once every earlier append is.
    Flush(oneshot::Sender<()>),
}

/// Appends joined into one batch of the Rust publisher: each caller with
/// its record count, in order.
type Replies = Vec<(Reply, usize)>;

enum Pending {
    Ticket(AppendTicket, Replies),
    Failed(Failure, Replies),
    Flush(oneshot::Sender<()>),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What `Publisher` and `AsyncPublisher` share.
pub struct Core {
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    window: Arc<Semaphore>,
    producer_id: u64,
    next_sequence: AtomicU64,
    /// Answered once the Rust publisher is connected (or failed to).
    connected: Mutex<Option<oneshot::Receiver<Result<(), Failure>>>>,
    /// The first failure that stopped the publisher, for later callers.
    failed: Arc<Mutex<Option<Failure>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

pub struct Options {
    pub producer_id: Option<u64>,
    pub first_sequence: u64,
    pub max_in_flight: usize,
}

impl Core {
    /// Starts connecting; appends may be queued at once.
    pub fn start(client: &Client, options: Options) -> Result<Core, Failure> {
        if options.max_in_flight == 0 || options.max_in_flight > MAX_IN_FLIGHT_MAX {
            return Err(Failure::new(
                Kind::InvalidInput,
                format!(
                    "max_in_flight must be between 1 and {MAX_IN_FLIGHT_MAX}, got {}",
                    options.max_in_flight
                ),
            ));
        }
        let producer_id = options.producer_id.unwrap_or_else(random_producer_id);
        let rust_options = PublisherOptions {
            producer_id: Some(producer_id),
            first_sequence: options.first_sequence,
            inflight_max: options.max_in_flight,
        };
        let (commands, incoming) = mpsc::unbounded_channel();
        let (connected_tx, connected_rx) = oneshot::channel();
        let failed = Arc::new(Mutex::new(None));
        let task = runtime()?.spawn(run(
            client.clone(),
            rust_options,
            connected_tx,
            incoming,
            failed.clone(),
        ));
        Ok(Core {
            commands: Mutex::new(Some(commands)),
            window: Arc::new(Semaphore::new(options.max_in_flight)),
            producer_id,
            next_sequence: AtomicU64::new(options.first_sequence),
            connected: Mutex::new(Some(connected_rx)),
            failed,
            task: Mutex::new(Some(task)),
        })
    }

    fn closed_failure(&self) -> Failure {
        match lock(&self.failed).as_ref() {
            Some(failure) => Failure::closed(format!(
                "the publisher stopped after an earlier error: {}",
                failure.message
            )),
            None => Failure::closed("the publisher is closed"),
        }
    }

    fn submit(&self, records: Vec<Bytes>, reply: Reply) -> Result<(), Failure> {
        let count = records.len() as u64;
        let commands = lock(&self.commands);
        let Some(commands) = commands.as_ref() else {
            return Err(self.closed_failure());
        };
        if commands.send(Command::Append { records, reply }).is_err() {
            return Err(self.closed_failure());
        }
        self.next_sequence.fetch_add(count, Ordering::Relaxed);
        Ok(())
    }

    /// Queues `records` in batches; one receiver per batch, in order.
    fn submit_many(&self, records: Vec<Bytes>) -> Result<Vec<oneshot::Receiver<Indexes>>, Failure> {
        let mut answers = Vec::new();
        for batch in batches(records) {
            let (reply, answer) = oneshot::channel();
            self.submit(batch, Reply::Channel(reply))?;
            answers.push(answer);
        }
        Ok(answers)
    }

    fn flush_receiver(&self) -> Result<oneshot::Receiver<()>, Failure> {
        let (done, flushed) = oneshot::channel();
        let commands = lock(&self.commands);
        match commands.as_ref() {
            Some(commands) if commands.send(Command::Flush(done)).is_ok() => Ok(flushed),
            _ => Err(self.closed_failure()),
        }
    }

    /// Stops taking appends; what waits to know every earlier one is
    /// answered and the connection closed (`None`: closed before).
    fn close(&self) -> Option<(oneshot::Receiver<()>, Option<JoinHandle<()>>)> {
        let mut commands = lock(&self.commands);
        let sender = commands.take()?;
        let (done, flushed) = oneshot::channel();
        let _ = sender.send(Command::Flush(done));
        drop(sender);
        Some((flushed, lock(&self.task).take()))
    }

    fn take_connected(&self) -> Option<oneshot::Receiver<Result<(), Failure>>> {
        lock(&self.connected).take()
    }
}

/// Waits for the end of a close: flushed, then the task gone.
async fn closing(flushed: oneshot::Receiver<()>, task: Option<JoinHandle<()>>) {
    let _ = flushed.await;
    if let Some(task) = task {
        let _ = task.await;
    }
}

/// Every answer of `answers`, in order, as one list.
async fn collect(answers: Vec<oneshot::Receiver<Indexes>>) -> Indexes {
    let mut indexes = Vec::new();
    for answer in answers {
        let batch = answer
            .await
            .unwrap_or_else(|_| Err(Failure::closed("the publisher is closed")))?;
        indexes.extend(batch);
    }
    Ok(indexes)
}

fn random_producer_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // std's RandomState is seeded from the OS once per process and stepped
    // per instance; mixing in the time and the process id keeps ids of
    // publishers started together in different processes apart.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(elapsed) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(elapsed.as_nanos());
    }
    hasher.finish() | 1
}

/// Splits records into batches of at most [`RECORDS_PER_APPEND_MAX`]
/// records and [`BATCH_BYTES_MAX`] bytes (a larger record alone).
fn batches(records: Vec<Bytes>) -> Vec<Vec<Bytes>> {
    let mut batches = Vec::new();
    let mut batch: Vec<Bytes> = Vec::new();
    let mut bytes = 0usize;
    for record in records {
        if !batch.is_empty()
            && (batch.len() >= RECORDS_PER_APPEND_MAX
                || bytes.saturating_add(record.len()) > BATCH_BYTES_MAX)
        {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes = bytes.saturating_add(record.len());
        batch.push(record);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// The task that owns the Rust publisher.
async fn run(
    client: Client,
    options: PublisherOptions,
    connected: oneshot::Sender<Result<(), Failure>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    failed: Arc<Mutex<Option<Failure>>>,
) {
    let mut publisher = match client.publisher(options).await {
        Ok(publisher) => {
            let _ = connected.send(Ok(()));
            publisher
        }
        Err(error) => {
            let failure = Failure::from(&error);
            *lock(&failed) = Some(failure.clone());
            let _ = connected.send(Err(failure.clone()));
            while let Some(command) = commands.recv().await {
                match command {
                    Command::Append { reply, .. } => complete(reply, Err(failure.clone())),
                    Command::Flush(done) => deliver(flushed(done)),
                }
            }
            return;
        }
    };
    let (pending, in_order) = mpsc::unbounded_channel();
    let completer = tokio::spawn(complete_in_order(in_order, failed.clone()));
    // A command taken while joining appends that does not join: next.
    let mut held = None;
    loop {
        let command = match held.take() {
            Some(command) => command,
            None => match commands.recv().await {
                Some(command) => command,
                None => break,
            },
        };
        let (mut records, reply) = match command {
            Command::Flush(done) => {
                let _ = pending.send(Pending::Flush(done));
                continue;
            }
            Command::Append { records, reply } => (records, reply),
        };
        // The appends already waiting join this one in one batch (their
        // sequences follow on anyway): while the Rust publisher's window is
        // full they pile up here, and go out together once it has room.
        let mut bytes: usize = records.iter().map(Bytes::len).sum();
        let mut replies = vec![(reply, records.len())];
        loop {
            match commands.try_recv() {
                Ok(Command::Append {
                    records: more,
                    reply,
                }) => {
                    let more_bytes: usize = more.iter().map(Bytes::len).sum();
                    if records.len() + more.len() > RECORDS_PER_APPEND_MAX
                        || bytes.saturating_add(more_bytes) > BATCH_BYTES_MAX
                    {
                        held = Some(Command::Append {
                            records: more,
                            reply,
                        });
                        break;
                    }
                    bytes = bytes.saturating_add(more_bytes);
                    replies.push((reply, more.len()));
                    records.extend(more);
                }
                Ok(other) => {
                    held = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let next = match publisher.send(records).await {
            Ok(ticket) => Pending::Ticket(ticket, replies),
            Err(error) => {
                let failure = match lock(&failed).as_ref() {
                    Some(first) => Failure::closed(format!(
                        "the publisher stopped after an earlier error: {}",
                        first.message
                    )),
                    None => Failure::from(&error),
                };
                Pending::Failed(failure, replies)
            }
        };
        let _ = pending.send(next);
    }
    drop(pending);
    publisher.close().await;
    let _ = completer.await;
}

async fn complete_in_order(
    mut pending: mpsc::UnboundedReceiver<Pending>,
    failed: Arc<Mutex<Option<Failure>>>,
) {
    while let Some(next) = pending.recv().await {
        match next {
            Pending::Ticket(ticket, replies) => match ticket.await {
                Ok(indexes) => {
                    let mut indexes = indexes.into_iter();
                    for (reply, count) in replies {
                        complete(reply, Ok(indexes.by_ref().take(count).collect()));
                    }
                }
                Err(error) => {
                    let failure = Failure::from(&error);
                    if failure.kind != Kind::Abandoned {
                        lock(&failed).get_or_insert_with(|| failure.clone());
                    }
                    for (reply, _) in replies {
                        complete(reply, Err(failure.clone()));
                    }
                }
            },
            Pending::Failed(failure, replies) => {
                for (reply, _) in replies {
                    complete(reply, Err(failure.clone()));
                }
            }
            // After the futures answered before it (the delivery queue is FIFO).
            Pending::Flush(done) => deliver(flushed(done)),
        }
    }
}

/// The delivery job that answers a flush (after every future before it).
fn flushed(done: oneshot::Sender<()>) -> crate::runtime::Job {
    Box::new(move |_| {
        let _ = done.send(());
    })
}

fn first_index(result: Indexes) -> Result<u64, Failure> {
    result.and_then(|indexes| {
        indexes
            .first()
            .copied()
            .ok_or_else(|| Failure::new(Kind::Protocol, "an append was answered with no index"))
    })
}

fn complete(reply: Reply, result: Indexes) {
    match reply {
        Reply::Channel(answer) => {
            let _ = answer.send(result);
        }
        Reply::Future { future, permit } => deliver(Box::new(move |py| {
            let future = future.bind(py);
            // A future is set running when made, so it cannot be cancelled;
            // an error here would only mean someone else settled it.
            let _ = match first_index(result) {
                Ok(index) => future.call_method1(intern_set_result(py), (index,)),
                Err(failure) => future.call_method1("set_exception", (failure.to_py_object(py),)),
            };
            drop(permit);
        })),
        Reply::Asyncio { event_loop, future } => deliver(Box::new(move |py| {
            aio::settle(
                py,
                &event_loop,
                &future,
                first_index(result).map(Value::Int),
            );
        })),
    }
}

fn intern_set_result(py: Python<'_>) -> &Bound<'_, PyString> {
    pyo3::intern!(py, "set_result")
}

/// A record from a Python object: `bytes`, `bytearray`, or anything
/// `bytes()` accepts except `str` and `int` (which would silently encode
/// or zero-fill).
pub fn record_bytes(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let bytes = if let Ok(bytes) = data.cast::<PyBytes>() {
        Bytes::copy_from_slice(bytes.as_bytes())
    } else if let Ok(array) = data.cast::<PyByteArray>() {
        Bytes::from(array.to_vec())
    } else if data.is_instance_of::<PyString>() || data.is_instance_of::<pyo3::types::PyInt>() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "a record is bytes-like, not {} (encode text first)",
            data.get_type().name()?
        )));
    } else {
        let converted = py.get_type::<PyBytes>().call1((data,)).map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "a record is bytes-like, not {}",
                data.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let converted = converted.cast::<PyBytes>()?;
        Bytes::copy_from_slice(converted.as_bytes())
    };
    if bytes.len() as u64 > RECORD_BYTES_MAX_LIMIT {
        return Err(Failure::new(
            Kind::RecordTooLarge,
            format!(
                "a record of {} bytes is over the protocol's limit of {RECORD_BYTES_MAX_LIMIT} bytes",
                bytes.len()
            ),
        )
        .to_py(py));
    }
    Ok(bytes)
}

fn records_of(py: Python<'_>, records: &Bound<'_, PyAny>) -> PyResult<Vec<Bytes>> {
    if records.is_instance_of::<PyBytes>() || records.is_instance_of::<PyString>() {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "append_many takes a sequence of records, not one record",
        ));
    }
    let mut out = Vec::with_capacity(records.len().unwrap_or(0));
    for record in records.try_iter()? {
        out.push(record_bytes(py, &record?)?);
    }
    Ok(out)
}

/// `concurrent.futures.Future`, imported once.
fn future_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CLASS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(
                PyModule::import(py, "concurrent.futures")?
                    .getattr("Future")?
                    .unbind(),
            )
        })
        .map(|class| class.bind(py))
}

fn failed_to_py(py: Python<'_>) -> impl Fn(Failure) -> PyErr + '_ {
    move |failure| failure.to_py(py)
}

/// Publishes records exactly once, in order. Made by `Client.publisher()`;
/// use it as a context manager (or call `close()`), which waits until every
/// record given to it is committed.
///
/// Thread-safe: threads may share one publisher (records get sequences in
/// the order the calls reach it).
#[pyclass(frozen, module = "raftlog")]
pub struct Publisher {
    core: Core,
}

impl Publisher {
    /// Starts a publisher and waits until it is connected.
    pub fn connect(py: Python<'_>, client: &Client, options: Options) -> PyResult<Publisher> {
        let core = Core::start(client, options).map_err(failed_to_py(py))?;
        if let Some(connected) = core.take_connected() {
            match wait(py, connected)? {
                Ok(Ok(())) => {}
                Ok(Err(failure)) => return Err(failure.to_py(py)),
                Err(_) => return Err(Failure::closed("the publisher stopped").to_py(py)),
            }
        }
        Ok(Publisher { core })
    }
}

#[pymethods]
impl Publisher {
    /// Appends one record; blocks (without the GIL) until it is committed
    /// and returns its index.
    fn append(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        let record = record_bytes(py, data)?;
        let (reply, answer) = oneshot::channel();
        self.core
            .submit(vec![record], Reply::Channel(reply))
            .map_err(failed_to_py(py))?;
        let result =
            wait(py, answer)?.unwrap_or_else(|_| Err(Failure::closed("the publisher is closed")));
        first_index(result).map_err(failed_to_py(py))
    }

    /// Appends records in order; blocks until all are committed and returns
    /// their indexes, one per record.
    fn append_many(&self, py: Python<'_>, records: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
        let records = records_of(py, records)?;
        let answers = self.core.submit_many(records).map_err(failed_to_py(py))?;
        wait(py, collect(answers))?.map_err(failed_to_py(py))
    }

    /// Queues one record and returns a `concurrent.futures.Future` of its
    /// index at once. Blocks (without the GIL) only while `max_in_flight`
    /// futures are unresolved. Futures resolve on the client's delivery
    /// thread: done-callbacks run there and must not block.
    fn append_nowait(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let record = record_bytes(py, data)?;
        let permit = match self.core.window.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let window = self.core.window.clone();
                wait(py, window.acquire_owned())?
                    .map_err(|_| self.core.closed_failure().to_py(py))?
            }
        };
        let future = future_class(py)?.call0()?;
        // Running from the start: a queued record cannot be taken back.
        future.call_method0("set_running_or_notify_cancel")?;
        let reply = Reply::Future {
            future: future.clone().unbind(),
            permit,
        };
        self.core
            .submit(vec![record], reply)
            .map_err(failed_to_py(py))?;
        Ok(future.unbind())
    }

    /// Blocks until every record queued so far is answered (committed or
    /// failed) and its future resolved.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let flushed = self.core.flush_receiver().map_err(failed_to_py(py))?;
        let _ = wait(py, flushed)?;
        Ok(())
    }

    /// Waits for every queued record, then disconnects. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if let Some((flushed, task)) = self.core.close() {
            wait(py, closing(flushed, task))?;
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc_info))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_info: &Bound<'_, pyo3::types::PyTuple>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    /// The exactly-once identity (random unless given).
    #[getter]
    fn producer_id(&self) -> u64 {
        self.core.producer_id
    }

    /// The sequence number the next record will carry: reuse it, with the
    /// producer id, as `first_sequence` to resume exactly once.
    #[getter]
    fn next_sequence(&self) -> u64 {
        self.core.next_sequence.load(Ordering::Relaxed)
    }

    #[getter]
    fn closed(&self) -> bool {
        lock(&self.core.commands).is_none()
    }

    fn __repr__(&self) -> String {
        format!(
            "<raftlog.Publisher producer_id={} next_sequence={}{}>",
            self.core.producer_id,
            self.next_sequence(),
            if self.closed() { " closed" } else { "" }
        )
    }
}

/// The asyncio publisher: `async with client.async_publisher() as pub:
/// index = await pub.append(b"x")`. Its methods return awaitables and never
/// block the event loop.
#[pyclass(frozen, module = "raftlog")]
pub struct AsyncPublisher {
    core: Core,
}

impl AsyncPublisher {
    pub fn start(py: Python<'_>, client: &Client, options: Options) -> PyResult<AsyncPublisher> {
        let core = Core::start(client, options).map_err(failed_to_py(py))?;
        Ok(AsyncPublisher { core })
    }

    fn spawn(
        &self,
        py: Python<'_>,
        work: impl std::future::Future<Output = Result<Value, Failure>> + Send + 'static,
    ) -> PyResult<Py<PyAny>> {
        let (event_loop, future) = aio::new_future(py)?;
        let handle = future.clone().unbind();
        aio::spawn_settle(event_loop, handle, work).map_err(failed_to_py(py))?;
        Ok(future.unbind())
    }
}

#[pymethods]
impl AsyncPublisher {
    /// Awaitable: waits until connected (raises if no node answers), then
    /// returns the publisher.
    fn connect(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let myself = slf.clone().into_any().unbind();
        let connected = this.core.take_connected();
        this.spawn(py, async move {
            if let Some(connected) = connected {
                match connected.await {
                    Ok(Ok(())) => {}
                    Ok(Err(failure)) => return Err(failure),
                    Err(_) => return Err(Failure::closed("the publisher stopped")),
                }
            }
            Ok(Value::Object(myself))
        })
    }

    fn __aenter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        AsyncPublisher::connect(slf)
    }

    #[pyo3(signature = (*_exc_info))]
    fn __aexit__(
        &self,
        py: Python<'_>,
        _exc_info: &Bound<'_, pyo3::types::PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        self.close(py)
    }

    /// Awaitable of the record's index once it is committed.
    fn append(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let record = record_bytes(py, data)?;
        let (event_loop, future) = aio::new_future(py)?;
        let reply = Reply::Asyncio {
            event_loop,
            future: future.clone().unbind(),
        };
        self.core
            .submit(vec![record], reply)
            .map_err(failed_to_py(py))?;
        Ok(future.unbind())
    }

    /// Awaitable of the records' indexes, in order, once all are committed.
    fn append_many(&self, py: Python<'_>, records: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let records = records_of(py, records)?;
        let answers = self.core.submit_many(records).map_err(failed_to_py(py))?;
        self.spawn(py, async move { collect(answers).await.map(Value::Ints) })
    }

    /// Awaitable: every record queued so far is answered.
    fn flush(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let flushed = self.core.flush_receiver().map_err(failed_to_py(py))?;
        self.spawn(py, async move {
            let _ = flushed.await;
            Ok(Value::None)
        })
    }

    /// Awaitable: waits for every queued record, then disconnects.
    fn close(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let closed = self.core.close();
        self.spawn(py, async move {
            if let Some((flushed, task)) = closed {
                closing(flushed, task).await;
            }
            Ok(Value::None)
        })
    }

    #[getter]
    fn producer_id(&self) -> u64 {
        self.core.producer_id
    }

    #[getter]
    fn next_sequence(&self) -> u64 {
        self.core.next_sequence.load(Ordering::Relaxed)
    }

    #[getter]
    fn closed(&self) -> bool {
        lock(&self.core.commands).is_none()
    }

    fn __repr__(&self) -> String {
        format!(
            "<raftlog.AsyncPublisher producer_id={} next_sequence={}{}>",
            self.core.producer_id,
            self.next_sequence(),
            if self.closed() { " closed" } else { "" }
        )
    }
}
