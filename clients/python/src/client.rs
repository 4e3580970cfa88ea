//! `Client`: one handle on a cluster (its connection pool), from which
//! publishers, consumers and status requests are made.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};
use raftlog::client::{
    AdminRequest, Client as RustClient, ClientConfig, ConsumerOptions, StartFrom,
};
use raftlog::types::Membership;

use crate::aio::{self, json_to_py, Value};
use crate::consumer::{AsyncStream, Consumer};
use crate::errors::{raise, Failure, Kind};
use crate::publisher::{AsyncPublisher, Options, Publisher};
use crate::runtime::{runtime, wait};

/// Same variables as the CLI's `--cluster` / `--tls-dir`.
const CLUSTER_ENV: &str = "RAFTLOG_CLUSTER";
const TLS_DIR_ENV: &str = "RAFTLOG_TLS_DIR";

/// A handle on a raftlog cluster.
///
/// `cluster`: node addresses (`"HOST:PORT,HOST:PORT"` or a list), any
/// subset of the cluster; `tls_dir`: a directory written by `raftlog certs`
/// (or `raftlog dev`). Both default to `$RAFTLOG_CLUSTER` / `$RAFTLOG_TLS_DIR`.
/// `timeout` (seconds) bounds one request; `admin=True` presents the admin
/// identity (`admin.pem`), which `transfer_leader`, `add_node` and
/// `remove_node` need. Publishers and consumers made from one client share
/// its connections.
#[pyclass(frozen, module = "raftlog")]
pub struct Client {
    inner: RustClient,
    cluster: Vec<String>,
    tls_dir: PathBuf,
    timeout: f64,
    admin: bool,
}

fn cluster_addresses(py: Python<'_>, cluster: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    let addresses: Vec<String> = match cluster {
        Some(text) if text.is_instance_of::<PyString>() => {
            split_addresses(&text.extract::<String>()?)
        }
        Some(list) => {
            let mut addresses = Vec::new();
            for item in list.try_iter()? {
                addresses.extend(split_addresses(&item?.extract::<String>()?));
            }
            addresses
        }
        None => match std::env::var(CLUSTER_ENV) {
            Ok(text) => split_addresses(&text),
            Err(_) => {
                return Err(raise(
                    py,
                    Kind::Config,
                    format!(
                        "no cluster given: pass cluster=\"HOST:PORT,...\" or set {CLUSTER_ENV}"
                    ),
                ))
            }
        },
    };
    if addresses.is_empty() {
        return Err(raise(py, Kind::Config, "the cluster address list is empty"));
    }
    Ok(addresses)
}

fn split_addresses(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|addr| !addr.is_empty())
        .map(str::to_string)
        .collect()
}

fn start_from(py: Python<'_>, start: &Bound<'_, PyAny>) -> PyResult<StartFrom> {
    if let Ok(text) = start.cast::<PyString>() {
        return match text.to_cow()?.as_ref() {
            "start" => Ok(StartFrom::Start),
            "end" => Ok(StartFrom::End),
            other => Err(raise(
                py,
                Kind::InvalidInput,
                format!("start is \"start\", \"end\" or an index, not {other:?}"),
            )),
        };
    }
    if start.is_instance_of::<pyo3::types::PyBool>() {
        return Err(raise(
            py,
            Kind::InvalidInput,
            "start is \"start\", \"end\" or an index",
        ));
    }
    match start.extract::<u64>() {
        Ok(index) if index >= 1 => Ok(StartFrom::Index(index)),
        _ => Err(raise(
            py,
            Kind::InvalidInput,
            format!(
                "start is \"start\", \"end\" or an index >= 1, not {}",
                start.repr()?
            ),
        )),
    }
}

/// The membership after an admin request, as `[{"id", "addr", "role"}]`.
fn membership_json(membership: &Membership) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = membership
        .addrs
        .iter()
        .map(|(id, addr)| {
            let role = if membership.voters.contains(id) {
                "voter"
            } else if membership.voters_outgoing.contains(id) {
                "leaving"
            } else {
                "learner"
            };
            serde_json::json!({ "id": id, "addr": addr, "role": role })
        })
        .collect();
    serde_json::Value::Array(nodes)
}

impl Client {
    fn admin_request(&self, py: Python<'_>, request: AdminRequest) -> PyResult<Py<PyAny>> {
        let membership = wait(py, self.inner.admin(request))?
            .map_err(|error| Failure::from(&error).to_py(py))?;
        json_to_py(py, &membership_json(&membership))
    }
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (cluster=None, tls_dir=None, *, timeout=10.0, admin=false))]
    fn new(
        py: Python<'_>,
        cluster: Option<&Bound<'_, PyAny>>,
        tls_dir: Option<PathBuf>,
        timeout: f64,
        admin: bool,
    ) -> PyResult<Client> {
        let cluster = cluster_addresses(py, cluster)?;
        let tls_dir = match tls_dir {
            Some(dir) => dir,
            None => match std::env::var_os(TLS_DIR_ENV) {
                Some(dir) => PathBuf::from(dir),
                None => {
                    return Err(raise(
                        py,
                        Kind::Config,
                        format!("no TLS directory given: pass tls_dir=... or set {TLS_DIR_ENV}"),
                    ))
                }
            },
        };
        let request_timeout = match Duration::try_from_secs_f64(timeout) {
            Ok(duration) if !duration.is_zero() => duration,
            _ => {
                return Err(raise(
                    py,
                    Kind::InvalidInput,
                    format!("timeout is a positive number of seconds, not {timeout}"),
                ))
            }
        };
        let config = ClientConfig {
            cluster: cluster.clone(),
            tls_dir: tls_dir.clone(),
            request_timeout,
        };
        // The pool starts dialling at once, on the runtime.
        let _context = runtime().map_err(|failure| failure.to_py(py))?.enter();
        let inner = if admin {
            RustClient::new_admin(config)
        } else {
            RustClient::new(config)
        }
        .map_err(|error| Failure::from(&error).to_py(py))?;
        Ok(Client {
            inner,
            cluster,
            tls_dir,
            timeout,
            admin,
        })
    }

    /// A publisher, connected (raises `UnavailableError` if no node answers
    /// within `timeout`). `producer_id` and `first_sequence` make re-sends
    /// exactly-once across restarts: reuse both to resend what may not have
    /// been committed. `max_in_flight` bounds unanswered `append_nowait`s.
    #[pyo3(signature = (producer_id=None, *, first_sequence=0, max_in_flight=1024))]
    fn publisher(
        &self,
        py: Python<'_>,
        producer_id: Option<u64>,
        first_sequence: u64,
        max_in_flight: usize,
    ) -> PyResult<Publisher> {
        let options = Options {
            producer_id,
            first_sequence,
            max_in_flight,
        };
        Publisher::connect(py, &self.inner, options)
    }

    /// An asyncio publisher; connects in the background (`async with`
    /// waits for it).
    #[pyo3(signature = (producer_id=None, *, first_sequence=0, max_in_flight=1024))]
    fn async_publisher(
        &self,
        py: Python<'_>,
        producer_id: Option<u64>,
        first_sequence: u64,
        max_in_flight: usize,
    ) -> PyResult<AsyncPublisher> {
        let options = Options {
            producer_id,
            first_sequence,
            max_in_flight,
        };
        AsyncPublisher::start(py, &self.inner, options)
    }

    /// Committed records in index order from `start` ("start", "end" or an
    /// index): an iterator of `Record`. Without `follow` it ends at the
    /// commit index seen when it started; `limit` ends it after that many.
    #[pyo3(
        signature = (start=None, follow=false, limit=None),
        text_signature = "(self, start='start', follow=False, limit=None)"
    )]
    fn consume(
        &self,
        py: Python<'_>,
        start: Option<&Bound<'_, PyAny>>,
        follow: bool,
        limit: Option<u64>,
    ) -> PyResult<Consumer> {
        let from = match start {
            Some(start) => start_from(py, start)?,
            None => StartFrom::Start,
        };
        Consumer::connect(py, &self.inner, ConsumerOptions { from, follow }, limit)
    }

    /// As `consume`, for `async for`.
    #[pyo3(
        signature = (start=None, follow=false, limit=None),
        text_signature = "(self, start='start', follow=False, limit=None)"
    )]
    fn async_consume(
        &self,
        py: Python<'_>,
        start: Option<&Bound<'_, PyAny>>,
        follow: bool,
        limit: Option<u64>,
    ) -> PyResult<Py<PyAny>> {
        let from = match start {
            Some(start) => start_from(py, start)?,
            None => StartFrom::Start,
        };
        let stream = AsyncStream::start(py, &self.inner, ConsumerOptions { from, follow }, limit)?;
        let class = py.import("raftlog._aio")?.getattr("AsyncConsumer")?;
        Ok(class.call1((stream,))?.unbind())
    }

    /// The cluster as its leader sees it: the dict `raftlog status --output
    /// json` prints. Without a leader, what a reachable node says (with
    /// `"leader": None`).
    fn status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let status =
            wait(py, self.inner.status())?.map_err(|error| Failure::from(&error).to_py(py))?;
        json_to_py(py, &raftlog::cli::status::status_json(&status))
    }

    /// Awaitable of `status()`.
    fn async_status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (event_loop, future) = aio::new_future(py)?;
        let client = self.inner.clone();
        aio::spawn_settle(event_loop, future.clone().unbind(), async move {
            let status = client.status().await.map_err(Failure::from)?;
            Ok(Value::Json(raftlog::cli::status::status_json(&status)))
        })
        .map_err(|failure| failure.to_py(py))?;
        Ok(future.unbind())
    }

    /// Hands leadership to voter `node_id` (needs `admin=True`); returns the
    /// membership: `[{"id": ..., "addr": ..., "role": "voter"|...}]`.
    fn transfer_leader(&self, py: Python<'_>, node_id: u64) -> PyResult<Py<PyAny>> {
        self.admin_request(py, AdminRequest::TransferLeader { id: node_id })
    }

    /// Adds node `node_id` at `addr` (a learner first, then a voter).
    fn add_node(&self, py: Python<'_>, node_id: u64, addr: String) -> PyResult<Py<PyAny>> {
        self.admin_request(py, AdminRequest::AddNode { id: node_id, addr })
    }

    /// Removes node `node_id` from the cluster.
    fn remove_node(&self, py: Python<'_>, node_id: u64) -> PyResult<Py<PyAny>> {
        self.admin_request(py, AdminRequest::RemoveNode { id: node_id })
    }

    #[getter]
    fn cluster<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.cluster)
    }

    #[getter]
    fn tls_dir(&self) -> PathBuf {
        self.tls_dir.clone()
    }

    #[getter]
    fn timeout(&self) -> f64 {
        self.timeout
    }

    #[getter]
    fn admin(&self) -> bool {
        self.admin
    }

    fn __repr__(&self) -> String {
        format!(
            "raftlog.Client(cluster={:?}, tls_dir={:?}{})",
            self.cluster.join(","),
            self.tls_dir.display().to_string(),
            if self.admin { ", admin=True" } else { "" }
        )
    }
}
