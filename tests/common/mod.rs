//! Shared helpers of the integration tests: an in-process cluster of real
//! nodes on 127.0.0.1 ([`TestCluster`]), guards for child processes
//! ([`process`]), and bounded waiting.
//!
//! Everything a helper starts is stopped by a guard's `Drop`, so a failing
//! assertion never leaves a node or a process behind. Every wait has a
//! deadline and fails the test with a message saying what it waited for.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod process;
pub mod venv;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftlog::client::{
    self, ClientConfig, ClusterStatus, Consumer, ConsumerOptions, Publisher, PublisherOptions,
    Record, StartFrom,
};
use raftlog::server::config::{Fsync, ServerConfig};
use raftlog::server::{Node, NodeHandle};
use raftlog::types::{LogIndex, NodeId};

/// Generous bound on the first election of a fresh cluster (default
/// election timeouts are 150..300 ms; the CI machine may be loaded).
pub const LEADER_WAIT: Duration = Duration::from_secs(20);
/// Bound on a node start (it may retry while the old process' port or data
/// directory lock is still held).
pub const START_WAIT: Duration = Duration::from_secs(15);
/// Bound on catching up, consuming and publishing a few thousand records.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(60);
/// Request timeout of test clients: short enough that a dead node is left
/// quickly, long enough for a loaded machine.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// `count` distinct ports on 127.0.0.1, free for both UDP and TCP a moment
/// ago (see [`free_port`]).
pub fn free_udp_ports(count: usize) -> Vec<u16> {
    (0..count).map(|_| free_port()).collect()
}

/// A port on 127.0.0.1 for a listener a test starts (a node's QUIC socket
/// or its metrics endpoint).
pub fn free_tcp_port() -> u16 {
    free_port()
}

/// A port on 127.0.0.1 that is free for UDP and TCP right now, taken from
/// below the kernel's ephemeral range.
///
/// Why not port 0: the kernel hands out ephemeral ports to every outgoing
/// connection and client socket, so a port a test read from a bind to
/// port 0 and released can be the source port of another test's
/// connection by the time a node binds it (CI saw a metrics endpoint fail
/// with "Address already in use" while a neighbouring test held hundreds
/// of TCP connections, and a node restarted by the fault suite fail to bind
/// its port on a loopback alias: clients bind 0.0.0.0:0, and a wildcard
/// socket on port P blocks P on every address). Nothing allocates outside
/// the ephemeral range by itself, and a process-wide cursor keeps the
/// ports of one test binary distinct; the start differs per process so
/// concurrent binaries rarely meet, and a port some other program holds is
/// skipped by the probe.
pub fn free_port() -> u16 {
    free_consecutive_ports(1)
}

/// The first of `count` consecutive ports that are free like [`free_port`]'s
/// (e.g. for `raftlog dev`, which takes a base port).
pub fn free_consecutive_ports(count: u16) -> u16 {
    free_consecutive_ports_on("127.0.0.1", count)
}

/// A port free like [`free_port`]'s on the address `ip` (a loopback alias
/// such as 127.0.0.11, which the fault suite gives each node).
pub fn free_port_on(ip: &str) -> u16 {
    free_consecutive_ports_on(ip, 1)
}

fn free_consecutive_ports_on(ip: &str, count: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    /// The range to choose from (read once) and where the next choice starts.
    static PORTS: OnceLock<(u16, u16, AtomicU32)> = OnceLock::new();
    let (low, high, cursor) = PORTS.get_or_init(|| {
        let (low, high) = non_ephemeral_ports();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or(0);
        let start =
            std::process::id().wrapping_mul(7919).wrapping_add(nanos) % u32::from(high - low);
        (low, high, AtomicU32::new(start))
    });
    let (low, high) = (*low, *high);
    let span = u32::from(high - low);
    let count = u32::from(count.max(1));
    assert!(
        count < span,
        "{count} consecutive ports do not fit in {low}..{high}"
    );
    for _ in 0..span {
        let offset = cursor.fetch_add(count, Ordering::Relaxed) % span;
        if offset + count > span {
            continue; // the run would wrap past the top of the range
        }
        let base = low + offset as u16;
        let all_free = (base..base + count as u16).all(|port| {
            UdpSocket::bind((ip, port)).is_ok() && std::net::TcpListener::bind((ip, port)).is_ok()
        });
        if all_free {
            return base;
        }
    }
    panic!("no {count} free consecutive ports on {ip} in {low}..{high}");
}

/// The ports [`free_port`] chooses from, `low..high`: outside the
/// ephemeral range of `/proc/sys/net/ipv4/ip_local_port_range` (Linux's
/// default 32768..=60999), below it from 20000 up when there is room, else
/// above it.
fn non_ephemeral_ports() -> (u16, u16) {
    const LOW: u16 = 20_000;
    let (ephemeral_start, ephemeral_end) =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| {
                let mut bounds = range.split_whitespace().map(|b| b.parse::<u16>().ok());
                Some((bounds.next()??, bounds.next()??))
            })
            .unwrap_or((32_768, 60_999));
    if ephemeral_start > LOW + 1_000 {
        (LOW, ephemeral_start)
    } else {
        let above = ephemeral_end.saturating_add(1).max(LOW);
        assert!(
            above < u16::MAX - 1_000,
            "the ephemeral range {ephemeral_start}..={ephemeral_end} leaves no ports for tests"
        );
        (above, u16::MAX)
    }
}

/// Polls `check` until it yields a value; fails the test after `timeout`
/// naming `what` and the last thing `check` reported.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = "no check finished".to_string();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining.max(Duration::from_millis(1)), check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(reason)) => last = reason,
            Err(_) => last = format!("{last} (and the next check did not finish in time)"),
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fails the test if `future` does not finish within `timeout`.
pub async fn within<T>(what: &str, timeout: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {timeout:?}: {what}"),
    }
}

/// Distinct, recognisable records: `prefix-000000`, `prefix-000001`, ...
pub fn numbered_records(prefix: &str, count: usize) -> Vec<Bytes> {
    (0..count)
        .map(|n| Bytes::from(format!("{prefix}-{n:06}")))
        .collect()
}

/// Every record of a committed log from the node(s) in `config`, read
/// without following (up to the commit index seen at start).
pub async fn consume_all(config: ClientConfig) -> Result<Vec<Record>, String> {
    let mut consumer = Consumer::connect(
        config,
        ConsumerOptions {
            from: StartFrom::Start,
            follow: false,
        },
    )
    .await
    .map_err(|error| format!("connect consumer: {error}"))?;
    let mut records = Vec::new();
    while let Some(batch) = consumer
        .next_batch()
        .await
        .map_err(|error| format!("consume: {error}"))?
    {
        records.extend(batch);
    }
    Ok(records)
}

/// Appends `records` in batches of `batch` with `inflight` appends
/// outstanding; returns the index of every record, in input order.
pub async fn publish_all(
    config: ClientConfig,
    options: PublisherOptions,
    records: &[Bytes],
    batch: usize,
) -> Result<Vec<LogIndex>, client::ClientError> {
    let mut publisher = Publisher::connect(config, options).await?;
    let mut tickets = Vec::new();
    for chunk in records.chunks(batch) {
        tickets.push(publisher.send(chunk.to_vec()).await?);
    }
    let mut indexes = Vec::with_capacity(records.len());
    for ticket in tickets {
        indexes.extend(ticket.await?);
    }
    publisher.close().await;
    Ok(indexes)
}

/// The data bytes of `records`, for comparing with an input.
pub fn data_of(records: &[Record]) -> Vec<Bytes> {
    records.iter().map(|record| record.data.clone()).collect()
}

/// The indexes of `records`.
pub fn indexes_of(records: &[Record]) -> Vec<LogIndex> {
    records.iter().map(|record| record.index).collect()
}

/// Settings a test may change on every node before the cluster starts.
pub type Tweak = fn(&mut ServerConfig);

/// N real nodes in this process, each with its own data directory under one
/// temp dir, certificates from `raftlog::net::certs::generate`, and a UDP
/// port found free on 127.0.0.1. Dropping it aborts every node still running.
pub struct TestCluster {
    /// Holds every file of the cluster; removed on drop.
    pub dir: tempfile::TempDir,
    pub tls_dir: PathBuf,
    configs: BTreeMap<NodeId, ServerConfig>,
    nodes: BTreeMap<NodeId, NodeHandle>,
}

impl TestCluster {
    /// Starts `node_count` nodes with default settings (fsync always,
    /// default election timeouts).
    pub async fn start(node_count: u64) -> TestCluster {
        TestCluster::start_with(node_count, |_| {}).await
    }

    /// Starts `node_count` nodes after `tweak` changed each node's settings.
    pub async fn start_with(node_count: u64, tweak: Tweak) -> TestCluster {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_udp_ports(node_count as usize);
        let addrs: BTreeMap<NodeId, String> = (1..=node_count)
            .zip(&ports)
            .map(|(id, port)| (id, format!("127.0.0.1:{port}")))
            .collect();
        let tls_dir = dir.path().join("tls");
        let hosts: Vec<(NodeId, String)> = addrs
            .keys()
            .map(|&id| (id, "127.0.0.1".to_string()))
            .collect();
        raftlog::net::certs::generate(&tls_dir, &hosts).expect("generate certificates");
        let mut configs = BTreeMap::new();
        for &id in addrs.keys() {
            let mut config =
                raftlog::cli::dev::local_node_config(dir.path(), id, &addrs, Fsync::Always)
                    .expect("node config");
            tweak(&mut config);
            configs.insert(id, config);
        }
        let mut cluster = TestCluster {
            dir,
            tls_dir,
            configs,
            nodes: BTreeMap::new(),
        };
        for id in 1..=node_count {
            cluster.restart(id).await;
        }
        cluster
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.configs.keys().copied().collect()
    }

    pub fn addr(&self, id: NodeId) -> SocketAddr {
        self.configs[&id].listen
    }

    pub fn config(&self, id: NodeId) -> &ServerConfig {
        &self.configs[&id]
    }

    pub fn is_running(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id)
    }

    pub fn node(&self, id: NodeId) -> &NodeHandle {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// A client that knows every node's address.
    pub fn client_config(&self) -> ClientConfig {
        self.client_config_for(&self.ids())
    }

    /// A client that knows only the nodes `ids`, in that order.
    pub fn client_config_for(&self, ids: &[NodeId]) -> ClientConfig {
        ClientConfig {
            cluster: ids.iter().map(|id| self.addr(*id).to_string()).collect(),
            tls_dir: self.tls_dir.clone(),
            request_timeout: CLIENT_REQUEST_TIMEOUT,
        }
    }

    /// A client that knows only the running nodes.
    pub fn running_client_config(&self) -> ClientConfig {
        let running: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.client_config_for(&running)
    }

    /// Starts node `id` (again) on its data directory and port. Retries for
    /// a bounded time while the previous incarnation still holds the port or
    /// the data directory lock.
    pub async fn restart(&mut self, id: NodeId) {
        assert!(!self.is_running(id), "node {id} is already running");
        let config = self.configs[&id].clone();
        let deadline = Instant::now() + START_WAIT;
        let node = loop {
            match Node::start(config.clone()).await {
                Ok(node) => break node,
                Err(error) if Instant::now() < deadline => {
                    tracing_free_note(&format!("node {id} start failed, retrying: {error}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("node {id} did not start within {START_WAIT:?}: {error}"),
            }
        };
        self.nodes.insert(id, node);
    }

    /// Crashes node `id`: its tasks stop where they are, with no leadership
    /// handover and no final sync (see `NodeHandle::abort`).
    pub async fn kill(&mut self, id: NodeId) {
        let mut node = self
            .nodes
            .remove(&id)
            .unwrap_or_else(|| panic!("node {id} is not running"));
        node.abort();
        // The aborted driver resolves at once; waiting makes sure it dropped
        // its handle on the data directory.
        let _ = within(
            "an aborted node's driver to stop",
            Duration::from_secs(10),
            node.wait(),
        )
        .await;
    }

    /// Stops node `id` cleanly (a leader hands over leadership first).
    pub async fn stop(&mut self, id: NodeId) {
        let node = self
            .nodes
            .remove(&id)
            .unwrap_or_else(|| panic!("node {id} is not running"));
        within(
            "a node to shut down",
            Duration::from_secs(15),
            node.shutdown(),
        )
        .await
        .unwrap_or_else(|error| panic!("node {id} shut down with an error: {error}"));
    }

    /// Stops every running node cleanly.
    pub async fn shutdown(mut self) {
        for id in self.ids() {
            if self.is_running(id) {
                self.stop(id).await;
            }
        }
    }

    /// The cluster status as the leader sees it, asked of the running nodes.
    pub async fn status(&self) -> Result<ClusterStatus, String> {
        client::status(&self.running_client_config())
            .await
            .map_err(|error| format!("status: {error}"))
    }

    /// The id of the leader among the running nodes, waiting (bounded) until
    /// one is elected.
    pub async fn leader(&self) -> NodeId {
        eventually("a leader among the running nodes", LEADER_WAIT, || async {
            let status = self.status().await?;
            match status.leader {
                Some(id) if self.is_running(id) => Ok(id),
                other => Err(format!("status names leader {other:?}")),
            }
        })
        .await
    }

    /// A running node that is not the leader.
    pub async fn follower(&self) -> NodeId {
        let leader = self.leader().await;
        *self
            .nodes
            .keys()
            .find(|&&id| id != leader)
            .expect("a running follower")
    }

    /// Waits until node `id`'s own consume from start returns `expected`.
    pub async fn wait_node_serves(&self, id: NodeId, expected: &[Bytes]) -> Vec<Record> {
        let what = format!("node {id} to serve {} records", expected.len());
        eventually(&what, CATCH_UP_WAIT, || async {
            let records = consume_all(self.client_config_for(&[id])).await?;
            if data_of(&records) == expected {
                Ok(records)
            } else {
                Err(format!("node {id} serves {} records", records.len()))
            }
        })
        .await
    }

    /// Waits until node `id`'s consume from start ends with `expected`;
    /// returns those last records.
    pub async fn wait_node_serves_tail(&self, id: NodeId, expected: &[Bytes]) -> Vec<Record> {
        let what = format!("node {id} to serve {} records at its tail", expected.len());
        eventually(&what, CATCH_UP_WAIT, || async {
            let mut records = consume_all(self.client_config_for(&[id])).await?;
            let tail = records.split_off(records.len().saturating_sub(expected.len()));
            if data_of(&tail) == expected {
                Ok(tail)
            } else {
                Err(format!(
                    "node {id} serves {} records",
                    records.len() + tail.len()
                ))
            }
        })
        .await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Reached with nodes still running only when a test failed (or
        // forgot to stop them): abort them so nothing outlives the test.
        for node in self.nodes.values() {
            node.abort();
        }
    }
}

/// Node logs for debugging a test: `RUST_LOG=info cargo test ... -- --nocapture`
/// (nothing is logged without RUST_LOG).
pub fn init_logging() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// Progress notes of the helpers, shown with `--nocapture`.
pub fn tracing_free_note(note: &str) {
    eprintln!("[test] {note}");
}

/// Default options with a fixed producer id (for exactly-once checks).
pub fn producer(producer_id: u64, first_sequence: u64, inflight_max: usize) -> PublisherOptions {
    PublisherOptions {
        producer_id: Some(producer_id),
        first_sequence,
        inflight_max,
    }
}

/// One request on a fresh stream of `connection`; the node's first answer.
pub async fn ask_raw(
    connection: &quinn::Connection,
    request: &raftlog::wire::client::ClientRequest,
) -> raftlog::wire::client::ClientResponse {
    let (mut send, mut recv) = within("a stream", Duration::from_secs(20), connection.open_bi())
        .await
        .expect("open a stream");
    let body = request.encode().expect("an encodable request");
    raftlog::net::write_frame(&mut send, body)
        .await
        .expect("write the request");
    let _ = send.finish();
    let frame = within(
        "the node's answer",
        Duration::from_secs(20),
        raftlog::net::read_frame(&mut recv, raftlog::wire::FRAME_BYTES_MAX),
    )
    .await
    .unwrap_or_else(|error| panic!("{request:?}: no answer, the stream failed: {error}"))
    .unwrap_or_else(|| panic!("{request:?}: the node ended the stream without answering"));
    raftlog::wire::client::ClientResponse::decode(frame).expect("a well-formed answer")
}
