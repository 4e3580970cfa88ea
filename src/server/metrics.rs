//! Prometheus metrics of one node, served as text at `http://ADDR/metrics`,
//! beside the probes `GET /healthz` (the process serves) and `GET /readyz`
//! (it knows a leader and is caught up), both with a JSON body.
//!
//! The runtime updates the gauges once per turn of its loop (not per record);
//! counters are bumped where the event happens. The text format comes from
//! prometheus-client; the HTTP side is the smallest server that answers
//! `GET /metrics`, with a bounded request size and a read timeout, serving
//! at most [`METRICS_CONNECTIONS_MAX`] connections at once: one more is
//! closed as soon as it is accepted, so a caller holding many connections
//! costs the node no more than that many file descriptors (and never the
//! one a new log segment needs).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::stages::{AppendStages, StageLabels};
use crate::wire::client::ClientResponse;

/// 25 µs .. ~0.8 s, doubling: a stage can be as short as a task wake-up.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum FrameSource {
    Peer,
    Client,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// `node` (the node's own certificate) or `ca` (the cluster CA).
    pub cert: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub source: FrameSource,
}

/// What a client asked for: the request type of docs/protocol.md 4.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RequestKind {
    Append,
    Consume,
    Status,
    Admin,
}

impl RequestKind {
    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Append => "append",
            RequestKind::Consume => "consume",
            RequestKind::Status => "status",
            RequestKind::Admin => "admin",
        }
    }
}

impl EncodeLabelValue for RequestKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// `kind` and `outcome` of `raftlog_client_requests_total`; the outcome is
/// `ok` or [`ErrorResponse::outcome`] (the error code's name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub kind: RequestKind,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// Bucket bounds (seconds) of `raftlog_commit_seconds`: 50 µs (a single
/// node on a fast disk) to 5 s (an election or a stalled disk), roughly
/// 1-2.5-5 per decade so a p99 reads off the buckets without a wide gap.
pub const COMMIT_SECONDS_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// How often the node re-reads the size of its log files for
/// `raftlog_log_disk_bytes` (one `stat` per segment and index file, off
/// the runtime threads; never per scrape).
pub const DISK_BYTES_REFRESH: Duration = Duration::from_secs(5);

/// Role as a number for the `raftlog_role` gauge.
pub const ROLE_FOLLOWER: i64 = 0;
pub const ROLE_CANDIDATE: i64 = 1;
pub const ROLE_LEADER: i64 = 2;
pub const ROLE_LEARNER: i64 = 3;

/// Every metric the node exports. Cloning shares the same values.
#[derive(Clone)]
pub struct Metrics {
    pub role: Gauge,
    pub term: Gauge,
    pub commit_index: Gauge,
    pub last_index: Gauge,
    pub log_start_index: Gauge,
    /// The leader this node knows (0: none), for `/readyz` and dashboards.
    pub leader_id: Gauge,
    /// The highest commit index a leader has told this node (its own on
    /// the leader): how far this node's commit index should be, for `/readyz`.
    pub leader_commit_index: Gauge,
    /// 1 while this node leads, else 0 (simpler to alert on than `role`).
    pub is_leader: Gauge,
    /// Times this node saw a new leader (its first one included), as etcd's
    /// `leader_changes_seen`: frequent changes mean an unstable cluster.
    pub leader_changes: Counter,
    /// Peers with `peer_*` series, so [`Metrics::set_peers`] removes the
    /// series of a peer that left or of every peer once this node stops
    /// leading, instead of exporting their last values forever.
    peers_exported: Arc<Mutex<BTreeSet<u64>>>,
    pub peer_match_index: Family<PeerLabels, Gauge>,
    pub peer_lag_entries: Family<PeerLabels, Gauge>,
    pub appended_records: Counter,
    pub appended_bytes: Counter,
    pub elections: Counter,
    pub replication_probes: Counter,
    pub rejected_frames: Family<RejectLabels, Counter<u64, AtomicU64>>,
    pub fsync_seconds: Histogram,
    /// Where appends spend their time, by stage (see `stages`); also read
    /// directly by an embedded `bench --breakdown`.
    pub stages: AppendStages,
    append_stage_seconds: Family<StageLabels, Histogram>,
    /// From a proposal accepted by the leader to its commit (leader only).
    pub commit_seconds: Histogram,
    /// Client requests answered, by kind and outcome.
    pub client_requests: Family<RequestLabels, Counter<u64, AtomicU64>>,
    /// Client connections open now.
    pub client_connections: Gauge,
    /// Peer connections open now (dialed and accepted; two nodes may hold
    /// one each way).
    pub peer_connections: Gauge,
    /// Bytes the log's segment and index files take on disk, refreshed
    /// every [`DISK_BYTES_REFRESH`].
    pub log_disk_bytes: Gauge,
    /// Always 1, labelled with the build's version.
    pub build_info: Family<BuildLabels, Gauge>,
    /// Client requests refused because the caller's certificate (or its
    /// lack of one) does not allow them.
    pub permission_denied: Counter,
    /// Peer messages dropped before the core because their sender is not a
    /// member of this node's current configuration.
    pub peer_frames_dropped_non_member: Counter,
    /// Seconds until each certificate in use expires, computed from
    /// `certificate_not_after` whenever the metrics are encoded.
    pub certificate_expiry_seconds: Family<CertLabels, Gauge>,
    /// `notAfter` (Unix seconds) of each certificate in use, by label.
    pub certificate_not_after: Arc<Mutex<BTreeMap<String, i64>>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let append_stage_seconds: Family<StageLabels, Histogram> =
            Family::new_with_constructor(stage_histogram);
        let commit_seconds = Histogram::new(COMMIT_SECONDS_BUCKETS);
        Metrics {
            // 50 µs .. ~1.6 s, doubling: covers page-cache "syncs" to slow disks.
            role: Gauge::default(),
            term: Gauge::default(),
            commit_index: Gauge::default(),
            last_index: Gauge::default(),
            log_start_index: Gauge::default(),
            leader_id: Gauge::default(),
            leader_commit_index: Gauge::default(),
            is_leader: Gauge::default(),
            leader_changes: Counter::default(),
            peers_exported: Arc::new(Mutex::new(BTreeSet::new())),
            peer_match_index: Family::default(),
            peer_lag_entries: Family::default(),
            appended_records: Counter::default(),
            appended_bytes: Counter::default(),
            elections: Counter::default(),
            replication_probes: Counter::default(),
            rejected_frames: Family::default(),
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            stages: AppendStages::new(
                Some(append_stage_seconds.clone()),
                Some(commit_seconds.clone()),
            ),
            append_stage_seconds,
            commit_seconds,
            client_requests: Family::default(),
            client_connections: Gauge::default(),
            peer_connections: Gauge::default(),
            log_disk_bytes: Gauge::default(),
            build_info: {
                let info: Family<BuildLabels, Gauge> = Family::default();
                info.get_or_create(&BuildLabels {
                    version: env!("CARGO_PKG_VERSION"),
                })
                .set(1);
                info
            },
            permission_denied: Counter::default(),
            peer_frames_dropped_non_member: Counter::default(),
            certificate_expiry_seconds: Family::default(),
            certificate_not_after: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// A registry holding every metric, for encoding.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("raftlog");
        registry.register(
            "role",
            "0 follower, 1 candidate, 2 leader, 3 learner",
            self.role.clone(),
        );
        registry.register("term", "Current Raft term", self.term.clone());
        registry.register(
            "commit_index",
            "Highest log index known committed",
            self.commit_index.clone(),
        );
        registry.register(
            "last_index",
            "Highest log index stored",
            self.last_index.clone(),
        );
        registry.register(
            "log_start_index",
            "Lowest log index stored",
            self.log_start_index.clone(),
        );
        registry.register(
            "leader_id",
            "Id of the leader this node knows, 0 when it knows none",
            self.leader_id.clone(),
        );
        registry.register(
            "leader_commit_index",
            "Highest commit index a leader has sent this node (its own commit index on the leader)",
            self.leader_commit_index.clone(),
        );
        registry.register(
            "is_leader",
            "1 while this node is the leader, else 0",
            self.is_leader.clone(),
        );
        registry.register(
            "leader_changes",
            "Times this node saw a new leader (its first one included)",
            self.leader_changes.clone(),
        );
        registry.register(
            "peer_match_index",
            "Highest index known replicated on each peer (leader only)",
            self.peer_match_index.clone(),
        );
        registry.register(
            "peer_lag_entries",
            "Entries each peer is behind the leader's last index (leader only)",
            self.peer_lag_entries.clone(),
        );
        registry.register(
            "appended_records",
            "Data records appended to this node's log",
            self.appended_records.clone(),
        );
        registry.register(
            "appended_bytes",
            "Payload bytes appended to this node's log",
            self.appended_bytes.clone(),
        );
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until each certificate this node uses expires (cert=node: its own, cert=ca: the cluster CA); negative once expired",
            self.certificate_expiry_seconds.clone(),
        );
        registry.register(
            "client_requests_denied",
            "Client requests refused with PermissionDenied (no certificate, or not the admin role for an admin request)",
            self.permission_denied.clone(),
        );
        registry.register(
            "peer_frames_dropped_non_member",
            "Peer messages dropped before the consensus core because the sending node is not a member of this node's current configuration",
            self.peer_frames_dropped_non_member.clone(),
        );
        registry.register(
            "elections",
            "Elections this node started",
            self.elections.clone(),
        );
        registry.register(
            "replication_probes",
            "Times a follower fell back from streaming to probing while this node led (each costs a round trip and a resend; steady growth under load is a bug)",
            self.replication_probes.clone(),
        );
        registry.register(
            "rejected_frames",
            "Malformed or refused frames, by source",
            self.rejected_frames.clone(),
        );
        registry.register(
            "fsync_seconds",
            "Latency of one group-commit sync of the log",
            self.fsync_seconds.clone(),
        );
        registry.register(
            "append_stage_seconds",
            "Time appends spend in each stage on this node (queue, sync_wait, local_sync, follower_ack, commit, reply, total; follower_sync on followers)",
            self.append_stage_seconds.clone(),
        );
        registry.register(
            "commit_seconds",
            "Time from a proposal accepted by the leader to its commit (observed on the leader)",
            self.commit_seconds.clone(),
        );
        registry.register(
            "client_requests",
            "Client requests answered, by kind (append, consume, status, admin) and outcome (ok or the error code's name)",
            self.client_requests.clone(),
        );
        registry.register(
            "client_connections",
            "Client connections open now",
            self.client_connections.clone(),
        );
        registry.register(
            "peer_connections",
            "Connections to and from other nodes open now",
            self.peer_connections.clone(),
        );
        registry.register(
            "log_disk_bytes",
            "Bytes the log's segment and index files take on disk (refreshed every few seconds)",
            self.log_disk_bytes.clone(),
        );
        registry.register(
            "build_info",
            "Always 1; the labels say which build runs",
            self.build_info.clone(),
        );
        registry
    }

    /// Counts one answered client request.
    pub fn count_request(&self, kind: RequestKind, outcome: &'static str) {
        self.client_requests
            .get_or_create(&RequestLabels { kind, outcome })
            .inc();
    }

    /// Counts one answered client request by its response.
    pub fn count_response(&self, kind: RequestKind, response: &ClientResponse) {
        self.count_request(kind, response_outcome(response));
    }

    /// The known leader (None while there is none); counts a change to a
    /// node other than the one known before.
    pub fn set_leader(&self, leader: Option<u64>, this_node_leads: bool) {
        let id = leader.map_or(0, |id| i64::try_from(id).unwrap_or(i64::MAX));
        if id != 0 && id != self.leader_id.get() {
            self.leader_changes.inc();
        }
        self.leader_id.set(id);
        self.is_leader.set(i64::from(this_node_leads));
    }

    /// The per-peer series, `(peer, match index, lag)` for each follower
    /// while this node leads; an empty list (a follower) removes them all.
    pub fn set_peers(&self, peers: &[(u64, i64, i64)]) {
        let mut exported = self
            .peers_exported
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now: BTreeSet<u64> = peers.iter().map(|&(peer, _, _)| peer).collect();
        for gone in exported.difference(&now) {
            let labels = PeerLabels { peer: *gone };
            self.peer_match_index.remove(&labels);
            self.peer_lag_entries.remove(&labels);
        }
        for &(peer, match_index, lag) in peers {
            let labels = PeerLabels { peer };
            self.peer_match_index
                .get_or_create(&labels)
                .set(match_index);
            self.peer_lag_entries.get_or_create(&labels).set(lag);
        }
        *exported = now;
    }

    /// Records the certificates in use (after a start or a TLS reload):
    /// `(label, notAfter as Unix seconds)`; labels not listed are dropped.
    pub fn set_certificates(&self, not_after: &[(&str, i64)]) {
        let mut dates = self
            .certificate_not_after
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        dates.clear();
        for (label, date) in not_after {
            dates.insert((*label).to_string(), *date);
        }
        drop(dates);
        self.refresh_certificate_expiry();
    }

    /// Sets `certificate_expiry_seconds` from the dates and the clock now.
    pub fn refresh_certificate_expiry(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
            });
        self.certificate_expiry_seconds.clear();
        let dates = self
            .certificate_not_after
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (label, not_after) in dates.iter() {
            self.certificate_expiry_seconds
                .get_or_create(&CertLabels {
                    cert: label.clone(),
                })
                .set(not_after.saturating_sub(now));
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode_text(&self) -> String {
        self.refresh_certificate_expiry();
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry());
        text
    }
}

/// The `outcome` label of a response: `ok` unless it is an error.
pub fn response_outcome(response: &ClientResponse) -> &'static str {
    match response {
        ClientResponse::Error(error) => error.outcome(),
        _ => "ok",
    }
}

/// Holds one open connection in a gauge until dropped.
pub struct ConnectionGauge(Gauge);

impl ConnectionGauge {
    pub fn enter(gauge: &Gauge) -> ConnectionGauge {
        gauge.inc();
        ConnectionGauge(gauge.clone())
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Bytes the segment (`.seg`) and index (`.idx`) files in `log_dir` take
/// on disk: allocated blocks, so a sparse segment counts what it holds and
/// a preallocated one its whole size. Files that vanish while listed
/// (retention, a truncation) are skipped.
pub fn log_disk_bytes(log_dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(listing) = std::fs::read_dir(log_dir) else {
        return 0;
    };
    listing
        .flatten()
        .filter(|item| {
            let name = item.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".seg") || name.ends_with(".idx")
        })
        .filter_map(|item| item.metadata().ok())
        .map(|metadata| metadata.blocks().saturating_mul(512))
        .fold(0u64, u64::saturating_add)
}

/// Sets `raftlog_log_disk_bytes` from `log_dir` now and every
/// [`DISK_BYTES_REFRESH`] until the task is dropped.
pub async fn refresh_disk_bytes(log_dir: std::path::PathBuf, metrics: Metrics) {
    let mut every = tokio::time::interval(DISK_BYTES_REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let dir = log_dir.clone();
        if let Ok(bytes) = tokio::task::spawn_blocking(move || log_disk_bytes(&dir)).await {
            metrics
                .log_disk_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

/// `/readyz` fails while this node's commit index is more than this many
/// entries behind the leader's: a node still catching up would serve reads
/// that stop far short of the log's end.
pub const READY_LAG_ENTRIES_MAX: u64 = 1024;

fn role_name(role: i64) -> &'static str {
    match role {
        ROLE_LEADER => "leader",
        ROLE_CANDIDATE => "candidate",
        ROLE_LEARNER => "learner",
        _ => "follower",
    }
}

/// The `/healthz` body: the process serves; the role and term for a human.
fn health_json(metrics: &Metrics) -> String {
    serde_json::json!({
        "status": "ok",
        "role": role_name(metrics.role.get()),
        "term": metrics.term.get(),
    })
    .to_string()
}

/// Whether the node is ready (it knows a leader and is caught up to within
/// [`READY_LAG_ENTRIES_MAX`] of its commit index), and the `/readyz` body.
fn readiness(metrics: &Metrics) -> (bool, String) {
    // Gauges are i64 holding non-negative indexes; a negative one reads as 0.
    let index = |gauge: &Gauge| u64::try_from(gauge.get()).unwrap_or(0);
    let leader = index(&metrics.leader_id);
    let commit = index(&metrics.commit_index);
    let leader_commit = index(&metrics.leader_commit_index).max(commit);
    let lag = leader_commit.saturating_sub(commit);
    let (ready, reason) = if leader == 0 {
        (false, "no leader known")
    } else if lag > READY_LAG_ENTRIES_MAX {
        (false, "catching up with the leader")
    } else {
        (true, "ok")
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "reason": reason,
        "role": role_name(metrics.role.get()),
        "leader": if leader == 0 { None } else { Some(leader) },
        "commit_index": commit,
        "leader_commit_index": leader_commit,
        "lag_entries": lag,
        "lag_entries_max": READY_LAG_ENTRIES_MAX,
    });
    (ready, body.to_string())
}

/// A request larger than this is not a metrics scrape.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Metrics connections served at once. A scraper uses one at a time; a
/// few more cover overlapping scrapes from several Prometheus servers.
pub const METRICS_CONNECTIONS_MAX: usize = 16;

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    let connections = Arc::new(Semaphore::new(METRICS_CONNECTIONS_MAX));
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // Over the cap: close it now rather than hold its descriptor for
            // up to REQUEST_READ_TIMEOUT. Accepting (instead of leaving it in
            // the backlog) keeps the listener draining, so a legitimate
            // scrape arriving once the holder lets go is served at once.
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REQUEST_READ_TIMEOUT, answer(stream, metrics)).await;
        });
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn answer(mut stream: tokio::net::TcpStream, metrics: Metrics) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 || request.len() + read > REQUEST_BYTES_MAX {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..read]);
    }
    let first_line = request.split(|&byte| byte == b'\r').next().unwrap_or(&[]);
    let (status, content_type, body) = if first_line.starts_with(b"GET /metrics ") {
        (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode_text(),
        )
    } else if first_line.starts_with(b"GET /healthz ") {
        // Answering at all is the health: the runtime that serves this
        // also runs the node (a wedged runtime times the probe out).
        ("200 OK", "application/json", health_json(&metrics))
    } else if first_line.starts_with(b"GET /readyz ") {
        let (ready, body) = readiness(&metrics);
        let status = if ready {
            "200 OK"
        } else {
            "503 Service Unavailable"
        };
        (status, "application/json", body)
    } else {
        (
            "404 Not Found",
            "text/plain",
            "only GET /metrics, /healthz and /readyz are served here\n".to_string(),
        )
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_names_every_documented_series() {
        let metrics = Metrics::new();
        metrics.commit_index.set(42);
        metrics.appended_records.inc_by(3);
        metrics
            .peer_match_index
            .get_or_create(&PeerLabels { peer: 2 })
            .set(40);
        metrics.fsync_seconds.observe(0.001);
        metrics.commit_seconds.observe(0.002);
        metrics.count_response(
            RequestKind::Append,
            &ClientResponse::Error(crate::wire::client::ErrorResponse::NotLeader {
                leader_id: None,
                leader_addr: None,
            }),
        );
        metrics.set_certificates(&[("node", i64::MAX), ("ca", 0)]);
        let text = metrics.encode_text();
        for name in [
            "raftlog_role",
            "raftlog_term",
            "raftlog_commit_index 42",
            "raftlog_last_index",
            "raftlog_log_start_index",
            "raftlog_peer_match_index{peer=\"2\"} 40",
            "raftlog_appended_records_total 3",
            "raftlog_fsync_seconds_bucket",
            "raftlog_elections_total",
            "raftlog_certificate_expiry_seconds{cert=\"node\"}",
            "raftlog_client_requests_denied_total",
            "raftlog_peer_frames_dropped_non_member_total",
            "raftlog_commit_seconds_bucket{le=\"0.00005\"}",
            "raftlog_commit_seconds_bucket{le=\"5.0\"}",
            "raftlog_client_requests_total{kind=\"append\",outcome=\"not_leader\"} 1",
            "raftlog_client_connections 0",
            "raftlog_peer_connections 0",
            "raftlog_log_disk_bytes 0",
            "raftlog_build_info{version=\"",
        ] {
            assert!(text.contains(name), "missing {name} in:\n{text}");
        }
    }

    #[test]
    fn leader_changes_count_new_leaders_and_peer_series_go_with_leadership() {
        let metrics = Metrics::new();
        metrics.set_leader(Some(1), false);
        metrics.set_leader(Some(1), false);
        metrics.set_leader(None, false);
        metrics.set_leader(Some(2), true);
        assert_eq!(metrics.leader_changes.get(), 2);
        assert_eq!(metrics.is_leader.get(), 1);
        metrics.set_peers(&[(1, 10, 0), (3, 4, 6)]);
        let text = metrics.encode_text();
        assert!(text.contains("raftlog_is_leader 1"), "{text}");
        assert!(text.contains("raftlog_leader_changes_total 2"), "{text}");
        assert!(
            text.contains("raftlog_peer_lag_entries{peer=\"3\"} 6"),
            "{text}"
        );
        // Node 3 left the configuration: its series go, node 1's stay.
        metrics.set_peers(&[(1, 12, 0)]);
        let text = metrics.encode_text();
        assert!(!text.contains("peer=\"3\""), "{text}");
        assert!(
            text.contains("raftlog_peer_match_index{peer=\"1\"} 12"),
            "{text}"
        );
        // No longer leading: no per-peer series at all.
        metrics.set_leader(Some(1), false);
        metrics.set_peers(&[]);
        let text = metrics.encode_text();
        assert!(!text.contains("raftlog_peer_match_index{"), "{text}");
        assert!(text.contains("raftlog_is_leader 0"), "{text}");
        assert_eq!(metrics.leader_changes.get(), 3);
    }

    #[test]
    fn ready_needs_a_leader_and_a_commit_index_near_the_leaders() {
        let metrics = Metrics::new();
        let (ready, body) = readiness(&metrics);
        assert!(!ready);
        assert!(body.contains(r#""reason":"no leader known""#), "{body}");
        assert!(body.contains(r#""leader":null"#), "{body}");
        metrics.leader_id.set(2);
        metrics.commit_index.set(10);
        metrics
            .leader_commit_index
            .set(10 + READY_LAG_ENTRIES_MAX as i64);
        let (ready, body) = readiness(&metrics);
        assert!(ready, "{body}");
        metrics
            .leader_commit_index
            .set(11 + READY_LAG_ENTRIES_MAX as i64);
        let (ready, body) = readiness(&metrics);
        assert!(!ready);
        assert!(body.contains("catching up"), "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["lag_entries"], READY_LAG_ENTRIES_MAX + 1);
        assert_eq!(value["leader"], 2);
    }

    #[tokio::test]
    async fn metrics_endpoint_answers_get_metrics_over_http() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new();
        metrics.term.set(7);
        let server = tokio::spawn(serve(listener, metrics));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await
            .unwrap()
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.contains("raftlog_term 7"), "{response}");
        server.abort();
    }
}
