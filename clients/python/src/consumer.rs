//! `Consumer` (an iterator) and the stream under `AsyncConsumer`.
//!
//! A task on the runtime owns the Rust [`raftlog::client::Consumer`] and
//! reads ahead a few batches into a bounded channel; Python takes records
//! from the batch at hand. When the Python object goes (dropped, closed, or
//! its `limit` reached) the channel closes, the task stops at once (also
//! while a follow consumer waits for new records) and the stream to the
//! node is closed with it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use raftlog::client::{Client, ConsumerOptions, Record as RustRecord};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::aio::{self, Value};
use crate::errors::Failure;
use crate::runtime::{runtime, wait};

/// Batches read ahead of the caller.
const READ_AHEAD_BATCHES: usize = 4;

type Batch = Result<Vec<RustRecord>, Failure>;

/// A committed record: `index` (int) and `data` (bytes).
#[pyclass(frozen, module = "raftlog")]
pub struct Record {
    #[pyo3(get)]
    index: u64,
    #[pyo3(get)]
    data: Py<PyBytes>,
}

impl Record {
    fn new(py: Python<'_>, record: RustRecord) -> Record {
        Record {
            index: record.index,
            data: PyBytes::new(py, &record.data).unbind(),
        }
    }
}

#[pymethods]
impl Record {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Record(index={}, data={})",
            self.index,
            self.data.bind(py).repr()?
        ))
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        match other.cast::<Record>() {
            Ok(other) => {
                let other = other.get();
                Ok(self.index == other.index
                    && self.data.bind(py).as_bytes() == other.data.bind(py).as_bytes())
            }
            Err(_) => Ok(false),
        }
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        (self.index, self.data.bind(py)).into_pyobject(py)?.hash()
    }
}

/// What the next call gets.
enum Next {
    Record(RustRecord),
    Failed(Failure),
    End,
    /// Nothing at hand: wait for the next batch.
    Empty,
}

/// The Python side of one consume stream.
pub struct Stream {
    batches: Option<mpsc::Receiver<Batch>>,
    buffer: VecDeque<RustRecord>,
    /// Records still to return, with a `limit`.
    remaining: Option<u64>,
    /// Raised once the records before it are returned.
    failure: Option<Failure>,
    task: Option<JoinHandle<()>>,
}

impl Stream {
    /// Starts the task; `connected` is answered once it is connected, else
    /// a connect failure comes as the stream's error.
    fn start(
        client: &Client,
        options: ConsumerOptions,
        limit: Option<u64>,
        connected: Option<oneshot::Sender<Result<(), Failure>>>,
    ) -> Result<Stream, Failure> {
        let (sender, batches) = mpsc::channel(READ_AHEAD_BATCHES);
        let task = runtime()?.spawn(read_ahead(client.clone(), options, sender, connected));
        let mut stream = Stream {
            batches: Some(batches),
            buffer: VecDeque::new(),
            remaining: limit,
            failure: None,
            task: Some(task),
        };
        if limit == Some(0) {
            stream.close();
        }
        Ok(stream)
    }

    fn next(&mut self) -> Next {
        if self.remaining == Some(0) {
            return Next::End;
        }
        if let Some(record) = self.buffer.pop_front() {
            if let Some(remaining) = &mut self.remaining {
                *remaining -= 1;
                if *remaining == 0 {
                    // The limit is reached: close the stream now, not when
                    // the caller asks again.
                    self.close();
                }
            }
            return Next::Record(record);
        }
        if let Some(failure) = self.failure.take() {
            self.finish();
            return Next::Failed(failure);
        }
        if self.batches.is_none() {
            return Next::End;
        }
        Next::Empty
    }

    fn ready(&self) -> bool {
        self.remaining == Some(0)
            || !self.buffer.is_empty()
            || self.failure.is_some()
            || self.batches.is_none()
    }

    /// Takes what the channel gave (`None`: it ended).
    fn receive(&mut self, batch: Option<Batch>) {
        match batch {
            Some(Ok(records)) => self.buffer.extend(records),
            Some(Err(failure)) => {
                self.failure = Some(failure);
                self.batches = None;
            }
            None => self.batches = None,
        }
    }

    /// Waits for the next batch (or the end); cancel-safe.
    async fn fill(&mut self) {
        while !self.ready() {
            let batch = match self.batches.as_mut() {
                Some(batches) => batches.recv().await,
                None => None,
            };
            self.receive(batch);
        }
    }

    /// Stops reading: closes the channel and the task (and so the stream).
    fn finish(&mut self) {
        self.batches = None;
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    fn close(&mut self) {
        self.buffer.clear();
        self.failure = None;
        self.finish();
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Reading tasks alive (each owns a Rust consumer and its stream), for
/// tests: `_live_consumers()`.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Counts a reading task while it lives (also when it is aborted).
struct Live;

impl Live {
    fn new() -> Live {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many consumers still hold a stream open (a test hook).
#[pyfunction]
pub fn _live_consumers() -> usize {
    LIVE.load(Ordering::Relaxed)
}

async fn read_ahead(
    client: Client,
    options: ConsumerOptions,
    batches: mpsc::Sender<Batch>,
    connected: Option<oneshot::Sender<Result<(), Failure>>>,
) {
    let _live = Live::new();
    let mut consumer = match client.consumer(options).await {
        Ok(consumer) => consumer,
        Err(error) => {
            let failure = Failure::from(&error);
            match connected {
                Some(connected) => {
                    let _ = connected.send(Err(failure));
                }
                None => {
                    let _ = batches.send(Err(failure)).await;
                }
            }
            return;
        }
    };
    if let Some(connected) = connected {
        let _ = connected.send(Ok(()));
    }
    loop {
        let batch = tokio::select! {
            // The reader is gone: stop now, even mid-wait for new records.
            _ = batches.closed() => return,
            batch = consumer.next_batch() => batch,
        };
        match batch {
            // Records retention removed under the cursor: nothing to hand out.
            Ok(Some(records)) if records.is_empty() => {}
            Ok(Some(records)) => {
                if batches.send(Ok(records)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(error) => {
                let _ = batches.send(Err(Failure::from(&error))).await;
                return;
            }
        }
    }
}

/// Records in index order from `Client.consume()`. Without `follow` it ends
/// at the commit index seen when it started; with it, it waits (GIL
/// released) for new records. Dropping or closing it closes its stream.
#[pyclass(module = "raftlog")]
pub struct Consumer {
    stream: Stream,
}

impl Consumer {
    /// Starts a consumer and waits until it is connected.
    pub fn connect(
        py: Python<'_>,
        client: &Client,
        options: ConsumerOptions,
        limit: Option<u64>,
    ) -> PyResult<Consumer> {
        let (connected, answer) = oneshot::channel();
        let stream = Stream::start(client, options, limit, Some(connected))
            .map_err(|failure| failure.to_py(py))?;
        if limit != Some(0) {
            match wait(py, answer)? {
                Ok(Ok(())) => {}
                Ok(Err(failure)) => return Err(failure.to_py(py)),
                Err(_) => return Err(Failure::closed("the consumer stopped").to_py(py)),
            }
        }
        Ok(Consumer { stream })
    }
}

#[pymethods]
impl Consumer {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Record>> {
        loop {
            match self.stream.next() {
                Next::Record(record) => return Ok(Some(Record::new(py, record))),
                Next::Failed(failure) => return Err(failure.to_py(py)),
                Next::End => return Ok(None),
                Next::Empty => {
                    let batch = match self.stream.batches.as_mut() {
                        // A batch read ahead: no need to let go of the GIL.
                        Some(batches) => match batches.try_recv() {
                            Ok(batch) => Some(batch),
                            Err(mpsc::error::TryRecvError::Empty) => wait(py, batches.recv())?,
                            Err(mpsc::error::TryRecvError::Disconnected) => None,
                        },
                        None => None,
                    };
                    self.stream.receive(batch);
                }
            }
        }
    }

    /// Closes the stream; iteration ends.
    fn close(&mut self) {
        self.stream.close();
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc_info))]
    fn __exit__(&mut self, _exc_info: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.stream.close();
        false
    }
}

/// The stream under `raftlog.AsyncConsumer` (internal).
#[pyclass(frozen, module = "raftlog")]
pub struct AsyncStream {
    stream: Arc<tokio::sync::Mutex<Stream>>,
    /// Stops the reading task without the lock, which a waiting
    /// `wait_ready` holds (the wait then ends: the channel closes).
    abort: Option<tokio::task::AbortHandle>,
}

impl Drop for AsyncStream {
    fn drop(&mut self) {
        if let Some(abort) = &self.abort {
            abort.abort();
        }
    }
}

impl AsyncStream {
    /// Starts reading; a connect failure is raised by the first `__anext__`.
    pub fn start(
        py: Python<'_>,
        client: &Client,
        options: ConsumerOptions,
        limit: Option<u64>,
    ) -> PyResult<AsyncStream> {
        let stream =
            Stream::start(client, options, limit, None).map_err(|failure| failure.to_py(py))?;
        let abort = stream.task.as_ref().map(JoinHandle::abort_handle);
        Ok(AsyncStream {
            stream: Arc::new(tokio::sync::Mutex::new(stream)),
            abort,
        })
    }
}

#[pymethods]
impl AsyncStream {
    /// The next record if one is at hand, else `None`; raises
    /// `StopAsyncIteration` at the end, and the stream's error once.
    fn next_ready(&self, py: Python<'_>) -> PyResult<Option<Record>> {
        let Ok(mut stream) = self.stream.try_lock() else {
            // `wait_ready` holds it: whatever arrives, it resolves then.
            return Ok(None);
        };
        match stream.next() {
            Next::Record(record) => Ok(Some(Record::new(py, record))),
            Next::Failed(failure) => Err(failure.to_py(py)),
            Next::End => Err(PyStopAsyncIteration::new_err(())),
            Next::Empty => Ok(None),
        }
    }

    /// Awaitable that resolves (to None) once `next_ready` has something to
    /// return. Cancelling it loses nothing.
    fn wait_ready(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (event_loop, future) = aio::new_future(py)?;
        let stream = self.stream.clone();
        aio::spawn_settle(event_loop, future.clone().unbind(), async move {
            stream.lock().await.fill().await;
            Ok(Value::None)
        })
        .map_err(|failure| failure.to_py(py))?;
        Ok(future.unbind())
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(abort) = &self.abort {
            abort.abort();
        }
        match self.stream.try_lock() {
            Ok(mut stream) => stream.close(),
            Err(_) => {
                // A `wait_ready` holds the stream while waiting: close it
                // on the runtime once it lets go.
                let stream = self.stream.clone();
                runtime()
                    .map_err(|failure| failure.to_py(py))?
                    .spawn(async move { stream.lock().await.close() });
            }
        }
        Ok(())
    }
}
