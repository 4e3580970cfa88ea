//! The extension's tokio runtime, the thread that hands results back to
//! Python, and blocking waits that release the GIL.
//!
//! Every network task (publisher sessions, consumer streams, connection
//! pools) runs on one multi-threaded runtime, created on first use. Those
//! tasks never take the GIL: results that must touch Python objects (a
//! `concurrent.futures.Future`, an asyncio future) become [`Job`]s for one
//! delivery thread, which runs all the jobs waiting at once under a single
//! acquisition of the GIL. So 1,000 appends answered together cost one GIL
//! round trip, not 1,000, and no runtime thread ever waits for the GIL.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::errors::Failure;

/// Work that needs the GIL, run on the delivery thread.
pub type Job = Box<dyn for<'py> FnOnce(Python<'py>) + Send>;

/// Jobs run under one acquisition of the GIL, at most (others wait for the
/// next turn, so Python threads get the GIL in between).
const JOBS_PER_TURN: usize = 4096;
/// How often a blocking wait looks for a signal (Ctrl-C) to raise.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static DELIVERY: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
/// Set by the `atexit` hook: the interpreter is going away, so the delivery
/// thread drops jobs instead of attaching to it.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
/// The delivery thread is attaching to (or running under) the interpreter.
static ATTACHING: AtomicBool = AtomicBool::new(false);
/// How long `_shutdown` waits for a delivery turn under way to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// The shared runtime.
pub fn runtime() -> Result<&'static Runtime, Failure> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("raftlog-io")
        .build()
        .map_err(|error| Failure::internal(format!("cannot start the I/O runtime: {error}")))?;
    // A racing first call may have won; its runtime is kept, this one dropped.
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Queues `job` for the delivery thread (started on first use).
pub fn deliver(job: Job) {
    let sender = DELIVERY.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Job>();
        // Without a thread (the OS refused one) the receiver is dropped, so
        // every `send` fails and jobs are dropped: futures then never
        // resolve, which only thread exhaustion can cause.
        let _ = std::thread::Builder::new()
            .name("raftlog-deliver".into())
            .spawn(move || deliver_loop(receiver));
        sender
    });
    let _ = sender.send(job);
}

fn deliver_loop(receiver: mpsc::Receiver<Job>) {
    while let Ok(first) = receiver.recv() {
        let mut jobs = Vec::with_capacity(64);
        jobs.push(first);
        jobs.extend(receiver.try_iter().take(JOBS_PER_TURN - 1));
        // Announce the attach, then look at the flag: `_shutdown` sets the
        // flag, then waits while this one is set (both SeqCst), so no
        // attach starts after `_shutdown` returns.
        ATTACHING.store(true, Ordering::SeqCst);
        if !SHUTTING_DOWN.load(Ordering::SeqCst) {
            // `try_attach`: never panics on an interpreter that is finalizing.
            let _ = Python::try_attach(|py| {
                for job in jobs {
                    job(py);
                }
            });
        }
        ATTACHING.store(false, Ordering::SeqCst);
    }
}

/// Called from `atexit`: stop touching the interpreter, and wait (GIL
/// released, bounded) for a delivery turn under way to end, so the
/// delivery thread never waits for the GIL of an interpreter that is
/// finalizing (which may end the thread under Rust frames).
#[pyfunction]
pub fn _shutdown(py: Python<'_>) {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = std::time::Instant::now() + SHUTDOWN_WAIT;
        while ATTACHING.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// Runs `future` to completion on the runtime from a Python thread, with
/// the GIL released; raises `KeyboardInterrupt` (and drops the future) when
/// a signal handler raises while waiting. `future` must be safe to drop
/// part way (channel receives are).
pub fn wait<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let runtime = runtime().map_err(|failure| failure.to_py(py))?;
    let mut future = std::pin::pin!(future);
    loop {
        let waited = py.detach(|| {
            runtime.block_on(async { tokio::time::timeout(SIGNAL_CHECK, &mut future).await })
        });
        match waited {
            Ok(output) => return Ok(output),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}
