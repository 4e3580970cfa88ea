//! Issue 12, limits: no caller can exhaust a node. Real `raftlog serve`
//! processes on 127.0.0.1 (so each node's resident memory can be read from
//! `/proc/<pid>/status`), attacked from this test process.
//!
//! The default run uses a smaller deterministic slice of each attack; the
//! full sizes of the issue (10,000 handshakes, 1,000 stalled consumers) run
//! with `RAFTLOG_LIMITS_FULL=1 cargo test --profile ci --test cluster_limits
//! -- --nocapture`, which also prints the RSS figures measured.
//!
//! Every node is started by [`start_cluster`], the one place to adapt when
//! nodes need other flags (client certificates, for instance).

mod common;

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::process::ServeCluster;
use common::*;
use raftlog::client::{ClientConfig, Publisher, PublisherOptions};

/// Resident memory a node may reach under any attack here. A node at rest
/// with a small log takes about 10-20 MiB; the budgets add at most: client
/// handshakes 256 x ~40 KiB, client buffers 64 MiB, the peer inbound
/// queue 64 MiB (idle here), quinn's receive windows of the connections
/// the test opens. Generous for the allocator's slack.
const NODE_RSS_BOUND_KIB: u64 = 256 * 1024;

/// Whether the full-size attacks of the issue run (see the module doc).
fn full_size() -> bool {
    std::env::var_os("RAFTLOG_LIMITS_FULL").is_some()
}

/// A cluster of `raftlog serve` processes, each also serving metrics on
/// its own TCP port of 127.0.0.1.
struct Nodes {
    cluster: ServeCluster,
    metrics: std::collections::BTreeMap<u64, SocketAddr>,
}

impl Nodes {
    /// Starts the `node_count` nodes every test here uses (default flags
    /// plus `--metrics-listen` plus `extra_flags`).
    fn start(node_count: u64, extra_flags: &[&str]) -> Nodes {
        let cluster = ServeCluster::prepare(node_count, extra_flags);
        let metrics = (1..=node_count)
            .map(|id| {
                let addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port())
                    .parse()
                    .expect("metrics address");
                (id, addr)
            })
            .collect();
        let mut nodes = Nodes { cluster, metrics };
        for id in 1..=node_count {
            nodes.spawn(id);
        }
        nodes
    }

    /// Starts (again) node `id`.
    fn spawn(&mut self, id: u64) {
        let metrics = self.metrics[&id].to_string();
        self.cluster.spawn(id, &["--metrics-listen", &metrics]);
    }

    /// The value of the metric line starting with `name` (e.g.
    /// `raftlog_peer_match_index{peer="2"}`) in node `id`'s scrape.
    async fn metric(&self, id: u64, name: &str) -> Result<i64, String> {
        let text = scrape(self.metrics[&id]).await?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| format!("no {name} in node {id}'s metrics"))
    }
}

/// `GET /metrics` from `addr`: the body and headers as text.
async fn scrape(addr: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|error| format!("connect to metrics {addr}: {error}"))?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: raftlog\r\n\r\n")
        .await
        .map_err(|error| format!("send scrape: {error}"))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .await
        .map_err(|error| format!("read scrape: {error}"))?;
    Ok(text)
}

/// Where node `id` of `cluster` listens.
fn node_addr(cluster: &ServeCluster, id: u64) -> SocketAddr {
    let addr = &cluster
        .addrs
        .iter()
        .find(|(node, _)| *node == id)
        .expect("known node")
        .1;
    addr.parse().expect("node address")
}

/// A client of the nodes `ids` of `cluster`.
fn client_config(cluster: &ServeCluster, ids: &[u64]) -> ClientConfig {
    ClientConfig {
        cluster: ids
            .iter()
            .map(|id| node_addr(cluster, *id).to_string())
            .collect(),
        tls_dir: cluster.tls_dir.clone(),
        request_timeout: CLIENT_REQUEST_TIMEOUT,
    }
}

/// Open file descriptors of process `pid`.
fn fd_count(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .count() as u64
}

/// Sets process `pid`'s descriptor limit (soft and hard) to `limit`.
fn set_fd_limit(pid: i32, limit: u64) {
    let new = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads `new` and writes nothing (old is null).
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", io::Error::last_os_error());
}

/// Raises this process' soft descriptor limit to its hard limit.
fn raise_own_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only `limit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// `VmRSS` of process `pid`, in KiB.
fn vm_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// The leader's id, from `status`.
fn leader_of(cluster: &ServeCluster) -> u64 {
    cluster.wait_leader(LEADER_WAIT)["leader"]
        .as_u64()
        .expect("leader id")
}

/// What a background publisher has seen: records acknowledged, and when.
#[derive(Default)]
struct AckLog {
    acked: AtomicU64,
    errors: AtomicU64,
    /// Instants of the acknowledgements, for the longest gap.
    times: Mutex<Vec<Instant>>,
}

impl AckLog {
    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Longest time without an acknowledgement between `from` and now.
    fn longest_gap_since(&self, from: Instant) -> Duration {
        let times = self.times.lock().expect("ack times");
        let mut last = from;
        let mut gap = Duration::ZERO;
        for &time in times.iter().filter(|time| **time >= from) {
            gap = gap.max(time - last);
            last = time;
        }
        gap.max(last.elapsed())
    }
}

/// Publishes batches of 10 small records, 4 in flight, until `stop`;
/// reconnects after an error (counted).
fn spawn_publisher(
    config: ClientConfig,
    stop: Arc<AtomicBool>,
) -> (Arc<AckLog>, tokio::task::JoinHandle<()>) {
    let log = Arc::new(AckLog::default());
    let task_log = log.clone();
    let task = tokio::spawn(async move {
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let options = PublisherOptions {
                inflight_max: 4,
                ..PublisherOptions::default()
            };
            let mut publisher = match Publisher::connect(config.clone(), options).await {
                Ok(publisher) => publisher,
                Err(_) => {
                    task_log.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let mut tickets = std::collections::VecDeque::new();
            let failed = loop {
                if stop.load(Ordering::Relaxed) {
                    break false;
                }
                round += 1;
                let batch = numbered_records(&format!("flood-{round}"), 10);
                match publisher.send(batch).await {
                    Ok(ticket) => tickets.push_back(ticket),
                    Err(_) => break true,
                }
                if tickets.len() >= 4 {
                    let Some(ticket) = tickets.pop_front() else {
                        continue;
                    };
                    match ticket.await {
                        Ok(indexes) => {
                            task_log.acked.fetch_add(indexes.count(), Ordering::Relaxed);
                            task_log
                                .times
                                .lock()
                                .expect("ack times")
                                .push(Instant::now());
                        }
                        Err(_) => break true,
                    }
                }
            };
            if failed {
                task_log.errors.fetch_add(1, Ordering::Relaxed);
            } else {
                for ticket in tickets {
                    if let Ok(indexes) = ticket.await {
                        task_log.acked.fetch_add(indexes.count(), Ordering::Relaxed);
                    }
                }
                publisher.close().await;
            }
        }
    });
    (log, task)
}

/// A UDP socket for a flooding client that lets out only the first Initial
/// datagram of each connection (and the first one after a Retry): the node
/// sees a client start a handshake and then go silent, so every attempt it
/// accepts holds a handshake slot until the node's handshake timeout.
#[derive(Debug)]
struct FirstInitialsOnly {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    /// (source connection id, carries a token) of the datagrams let out.
    sent: Mutex<HashSet<(Vec<u8>, bool)>>,
}

impl FirstInitialsOnly {
    /// Whether `datagram` is the first Initial of its connection (or the
    /// first after a Retry, which carries a token).
    fn lets_out(&self, datagram: &[u8]) -> bool {
        // Long header, fixed bit, type Initial (RFC 9000, 17.2.2).
        let Some(&first) = datagram.first() else {
            return false;
        };
        if first & 0xF0 != 0xC0 {
            return false;
        }
        let Some(&dcid_len) = datagram.get(5) else {
            return false;
        };
        let scid_at = 6 + dcid_len as usize;
        let Some(&scid_len) = datagram.get(scid_at) else {
            return false;
        };
        let Some(scid) = datagram.get(scid_at + 1..scid_at + 1 + scid_len as usize) else {
            return false;
        };
        // The token length is a varint; quinn writes 0 as the one byte 0.
        let Some(&token_len) = datagram.get(scid_at + 1 + scid_len as usize) else {
            return false;
        };
        let has_token = token_len != 0;
        self.sent
            .lock()
            .expect("sent set")
            .insert((scid.to_vec(), has_token))
    }
}

impl quinn::AsyncUdpSocket for FirstInitialsOnly {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> io::Result<()> {
        if self.lets_out(transmit.contents) {
            self.inner.try_send(transmit)
        } else {
            Ok(()) // "sent", into the void
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A client config that offers the client ALPN and trusts nothing: the
/// flood never gets past the node's first flight anyway.
fn flood_client_config() -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    tls.alpn_protocols = vec![raftlog::net::ALPN_CLIENT.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
        .expect("QUIC client config");
    // quinn's default idle timeout (30 s) is what the flood advertises: the
    // node holds a half-open attempt for the smaller of it and its own.
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// How long a flooding client keeps one attempt of its own (the node's
/// hold is its idle timeout, 4 s, or its handshake timeout).
const FLOOD_ATTEMPT_KEPT: Duration = Duration::from_secs(6);

/// Flooding endpoints (sockets) used at once, and attempts in progress per
/// endpoint at most (bounds this process' memory, not the rate).
const FLOOD_ENDPOINTS: usize = 8;
const FLOOD_ATTEMPTS_IN_PROGRESS_MAX: usize = 512;

/// Starts QUIC handshakes at `target` from [`FLOOD_ENDPOINTS`] sockets on
/// 127.0.0.1 and abandons each after its first Initial, until at least
/// `attempts` were made and `stop` is set (or `deadline` passes). Returns
/// the attempts made.
async fn flood_handshakes(
    target: SocketAddr,
    attempts: u64,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> u64 {
    let made = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..FLOOD_ENDPOINTS {
        let made = made.clone();
        let stop = stop.clone();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("flood socket");
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)
            .expect("wrap flood socket");
        let socket = Arc::new(FirstInitialsOnly {
            inner,
            sent: Mutex::new(HashSet::new()),
        });
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .expect("flood endpoint");
        let config = flood_client_config();
        tasks.push(tokio::spawn(async move {
            let in_progress = Arc::new(tokio::sync::Semaphore::new(FLOOD_ATTEMPTS_IN_PROGRESS_MAX));
            loop {
                let done = made.load(Ordering::Relaxed) >= attempts;
                if (done && stop.load(Ordering::Relaxed)) || Instant::now() >= deadline {
                    break;
                }
                let Ok(permit) = in_progress.clone().acquire_owned().await else {
                    break;
                };
                let Ok(connecting) = endpoint.connect_with(config.clone(), target, "127.0.0.1")
                else {
                    break;
                };
                made.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    // Fails: refused, or our own verifier, or the timeout;
                    // the close it sends on drop never leaves the socket.
                    let _ = tokio::time::timeout(FLOOD_ATTEMPT_KEPT, connecting).await;
                    drop(permit);
                });
            }
            endpoint.close(0u32.into(), b"");
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    made.load(Ordering::Relaxed)
}

/// Records node `pid`'s highest VmRSS until `stop`.
fn spawn_rss_sampler(pid: i32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            max = max.max(vm_rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        max.max(vm_rss_kib(pid))
    })
}

/// Issue 12: a flood of QUIC handshakes at the leader (10,000 in the full
/// run, 3,000 by default) while a publisher runs. In the middle of the
/// flood a follower is killed and restarted: its link to the flooded leader
/// needs a new handshake although the flood holds every client slot. The
/// leader hears from it again (its match index, read from the leader's
/// metrics, passes the leader's last index at the restart) while the flood
/// still runs, commits never stop, every node is reachable after the flood,
/// and the leader's RSS stays under [`NODE_RSS_BOUND_KIB`] throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_at_the_leader_starves_no_peer_link_and_commits_continue() {
    let attempts: u64 = if full_size() { 10_000 } else { 3_000 };
    let mut nodes = Nodes::start(3, &[]);
    let leader = leader_of(&nodes.cluster);
    let restarted = (1..=3).find(|id| *id != leader).expect("a follower");
    let leader_pid = nodes.cluster.pid(leader).expect("leader runs");
    let stop_publisher = Arc::new(AtomicBool::new(false));
    // The publisher connects before the flood (new client handshakes share
    // the flooded budget) and keeps its connection.
    let (acks, publisher) = spawn_publisher(
        client_config(&nodes.cluster, &[leader]),
        stop_publisher.clone(),
    );
    eventually(
        "the publisher's first acknowledgements",
        CATCH_UP_WAIT,
        || async {
            match acks.acked() {
                0..=99 => Err(format!("{} acknowledged", acks.acked())),
                acked => Ok(acked),
            }
        },
    )
    .await;
    let rss_before_kib = vm_rss_kib(leader_pid);

    let stop_flood = Arc::new(AtomicBool::new(false));
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = spawn_rss_sampler(leader_pid, stop_sampler.clone());
    let flood_started = Instant::now();
    let flood = tokio::spawn(flood_handshakes(
        node_addr(&nodes.cluster, leader),
        attempts,
        stop_flood.clone(),
        flood_started + Duration::from_secs(120),
    ));
    // Let the flood fill the client budget, then make a peer link redial.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nodes.cluster.stop(restarted, libc::SIGKILL);
    let last_index_at_restart = nodes
        .metric(leader, "raftlog_last_index")
        .await
        .expect("leader's last index");
    nodes.spawn(restarted);
    let restarted_at = Instant::now();
    let match_name = format!("raftlog_peer_match_index{{peer=\"{restarted}\"}}");
    let match_index = eventually(
        "the leader to hear from the restarted follower during the flood",
        Duration::from_secs(60),
        || async {
            let match_index = nodes.metric(leader, &match_name).await?;
            if match_index > last_index_at_restart {
                Ok(match_index)
            } else {
                Err(format!(
                    "match index {match_index}, last index at the restart {last_index_at_restart}"
                ))
            }
        },
    )
    .await;
    let relink_time = restarted_at.elapsed();
    let flood_running_at_relink = !flood.is_finished();
    if std::env::var_os("RAFTLOG_LIMITS_DEBUG").is_some() {
        for id in 1..=3 {
            eprintln!("---- node {id}\n{}", nodes.cluster.log(id));
        }
    }
    stop_flood.store(true, Ordering::Relaxed);
    let made = within("the flood to end", Duration::from_secs(150), flood)
        .await
        .expect("flood task");
    let flood_time = flood_started.elapsed();
    let gap = acks.longest_gap_since(flood_started);
    // Half-open handshakes time out after 5 s; let the node settle.
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop_sampler.store(true, Ordering::Relaxed);
    let rss_max_kib = sampler.await.expect("sampler");
    let acked = acks.acked();
    stop_publisher.store(true, Ordering::Relaxed);
    within("the publisher to stop", Duration::from_secs(30), publisher)
        .await
        .expect("publisher task");
    eprintln!(
        "[limits] handshake flood: {made} attempts in {flood_time:?} at leader {leader}; \
         the leader heard from restarted follower {restarted} after {relink_time:?} (match \
         index {match_index}; flood running: {flood_running_at_relink}); {acked} records \
         acknowledged in all, longest gap during the flood {gap:?}, {} publisher errors; \
         leader VmRSS {rss_before_kib} KiB before, {rss_max_kib} KiB at most (bound \
         {NODE_RSS_BOUND_KIB} KiB)",
        acks.errors.load(Ordering::Relaxed),
    );
    assert!(made >= attempts, "the flood made only {made} attempts");
    assert!(
        flood_running_at_relink,
        "the follower only relinked after the flood ended (the test proves nothing)"
    );
    assert!(
        gap < Duration::from_secs(10),
        "no record was acknowledged for {gap:?} during the flood"
    );
    assert!(
        rss_max_kib < NODE_RSS_BOUND_KIB,
        "leader VmRSS reached {rss_max_kib} KiB (bound {NODE_RSS_BOUND_KIB} KiB)"
    );
    let status = nodes.cluster.wait_leader(LEADER_WAIT);
    let statuses = status["nodes"].as_array().expect("nodes in status");
    let unreachable: Vec<_> = statuses
        .iter()
        .filter(|node| node["reachable"] != serde_json::Value::Bool(true))
        .collect();
    assert!(unreachable.is_empty(), "after the flood: {unreachable:?}");
    nodes.cluster.stop_all();
}

/// The metrics listener's connection cap (`METRICS_CONNECTIONS_MAX`).
const METRICS_CONNECTIONS_MAX: u64 = 16;

/// Issue 12: a caller holding 1,000 connections to the leader's metrics
/// port costs it at most the listener's cap in descriptors. With the
/// leader's descriptor limit set to what it uses plus 64, it still creates
/// new segment files (4 MiB segments, 12 MiB published) and commits, its
/// descriptor count stays within the cap, and it answers a scrape once the
/// caller lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_holding_many_metrics_connections_never_starves_file_creation() {
    const HELD: usize = 1000;
    assert!(
        raise_own_fd_limit() > HELD as u64 + 256,
        "this test needs descriptors"
    );
    let nodes = Nodes::start(3, &["--segment-bytes", "4194304"]);
    let leader = leader_of(&nodes.cluster);
    let pid = nodes.cluster.pid(leader).expect("leader runs");
    let fds_before = fd_count(pid);
    set_fd_limit(pid, fds_before + 64);
    let metrics = nodes.metrics[&leader];
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        match tokio::net::TcpStream::connect(metrics).await {
            Ok(stream) => held.push(stream),
            // The backlog is full for a moment: the node closes what is over
            // its cap as fast as it accepts.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_holding = fd_count(pid);
    let records: Vec<bytes::Bytes> = (0..768)
        .map(|n| bytes::Bytes::from(vec![(n % 251) as u8; 16 * 1024]))
        .collect();
    let published = within(
        "publishing 12 MiB while the metrics connections are held",
        CATCH_UP_WAIT,
        publish_all(
            client_config(&nodes.cluster, &[leader]),
            PublisherOptions::default(),
            &records,
            16,
        ),
    )
    .await;
    let fds_after = fd_count(pid);
    let segments = std::fs::read_dir(nodes.cluster.data_dir(leader).join("log"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    eprintln!(
        "[limits] {} metrics connections held: leader descriptors {fds_before} before, \
         {fds_holding} while held, {fds_after} after publishing (limit {}); files in its log \
         dir: {segments}",
        held.len(),
        fds_before + 64,
    );
    assert!(
        held.len() >= HELD / 2,
        "only {} connections opened",
        held.len()
    );
    let indexes = published.expect("publishing while the metrics connections are held");
    assert_eq!(indexes.len(), records.len());
    assert!(
        fds_holding <= fds_before + METRICS_CONNECTIONS_MAX + 8,
        "the leader holds {fds_holding} descriptors (it had {fds_before}; cap {METRICS_CONNECTIONS_MAX})"
    );
    drop(held);
    let last_index = eventually("a scrape once the caller let go", CATCH_UP_WAIT, || {
        nodes.metric(leader, "raftlog_last_index")
    })
    .await;
    assert!(last_index >= records.len() as i64);
    let mut nodes = nodes;
    nodes.cluster.stop_all();
}

/// A client config for raw consumer streams to the nodes of `tls_dir`:
/// trusts `ca.pem`, presents `client.pem` when the directory has one, and
/// advertises small receive windows (16 KiB a stream) so that a stalled
/// stream costs this process little while the node must hold what it
/// could not send.
fn stalled_consumer_config(tls_dir: &std::path::Path) -> quinn::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(tls_dir.join("ca.pem")).expect("ca.pem") {
        roots.add(cert.expect("CA certificate")).expect("CA root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let (cert, key) = (tls_dir.join("client.pem"), tls_dir.join("client.key"));
    let mut tls = if cert.exists() && key.exists() {
        let chain = CertificateDer::pem_file_iter(&cert)
            .expect("client.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("client certificate");
        let key = PrivateKeyDer::from_pem_file(&key).expect("client.key");
        builder
            .with_client_auth_cert(chain, key)
            .expect("client pair")
    } else {
        builder.with_no_client_auth()
    };
    tls.alpn_protocols = vec![raftlog::net::ALPN_CLIENT.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
        .expect("QUIC client config");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(quinn::VarInt::from_u32(16 * 1024))
        .receive_window(quinn::VarInt::from_u32(2 * 1024 * 1024))
        .keep_alive_interval(Some(Duration::from_millis(500)));
    config.transport_config(Arc::new(transport));
    config
}

/// Consumer streams per stalled connection (the node allows 64).
const STALLED_STREAMS_PER_CONNECTION: usize = 50;

/// Issue 12: consumers that open a stream (from the start of a 24 MiB log,
/// following) and never read: 1,000 in the full run, 400 by default, 50 to
/// a connection. The leader's RSS stays under [`NODE_RSS_BOUND_KIB`] (it
/// holds at most its client buffer budget for them, 64 MiB), and another
/// consumer still reads the whole log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_that_never_read_cannot_exhaust_a_node_and_others_are_served() {
    let stalled_count: usize = if full_size() { 1000 } else { 400 };
    let nodes = Nodes::start(3, &[]);
    let leader = leader_of(&nodes.cluster);
    let pid = nodes.cluster.pid(leader).expect("leader runs");
    let records: Vec<bytes::Bytes> = (0..1536)
        .map(|n| bytes::Bytes::from(vec![(n % 251) as u8; 16 * 1024]))
        .collect();
    within(
        "publishing 24 MiB",
        CATCH_UP_WAIT,
        publish_all(
            client_config(&nodes.cluster, &[leader]),
            PublisherOptions::default(),
            &records,
            16,
        ),
    )
    .await
    .expect("publish");
    let rss_before_kib = vm_rss_kib(pid);
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = spawn_rss_sampler(pid, stop_sampler.clone());

    let config = stalled_consumer_config(&nodes.cluster.tls_dir);
    let target = node_addr(&nodes.cluster, leader);
    let request =
        raftlog::wire::client::ClientRequest::Consume(raftlog::wire::client::ConsumeRequest {
            from: raftlog::wire::client::ConsumeFrom::Start,
            follow: true,
            limit: None,
        })
        .encode()
        .expect("encode a consume request");
    let mut held = Vec::new();
    let mut connections = Vec::new();
    let mut opened = 0usize;
    while opened < stalled_count {
        let endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
        let connection = within(
            "a stalled consumer's connection",
            Duration::from_secs(20),
            endpoint
                .connect_with(config.clone(), target, "127.0.0.1")
                .expect("connect"),
        )
        .await
        .expect("handshake");
        for _ in 0..STALLED_STREAMS_PER_CONNECTION.min(stalled_count - opened) {
            let (mut send, recv) =
                within("a stream", Duration::from_secs(20), connection.open_bi())
                    .await
                    .expect("open stream");
            raftlog::net::write_frame(&mut send, request.clone())
                .await
                .expect("send the consume request");
            held.push((send, recv));
            opened += 1;
        }
        connections.push((endpoint, connection));
    }
    // Long enough for every stream to have been served up to its window and
    // for the node's budget to settle (stalled streams are given up after 2 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let rss_stalled_kib = vm_rss_kib(pid);
    let served = within(
        "another consumer to read the whole log",
        Duration::from_secs(60),
        consume_all(client_config(&nodes.cluster, &[leader])),
    )
    .await
    .expect("the other consumer is served");
    stop_sampler.store(true, Ordering::Relaxed);
    let rss_max_kib = sampler.await.expect("sampler");
    eprintln!(
        "[limits] {opened} stalled consumers on {} connections at leader {leader}: VmRSS \
         {rss_before_kib} KiB before, {rss_stalled_kib} KiB after 8 s, {rss_max_kib} KiB at \
         most (bound {NODE_RSS_BOUND_KIB} KiB); another consumer read {} records",
        connections.len(),
        served.len(),
    );
    assert_eq!(
        served.len(),
        records.len(),
        "the other consumer read the log"
    );
    assert!(
        rss_max_kib < NODE_RSS_BOUND_KIB,
        "leader VmRSS reached {rss_max_kib} KiB (bound {NODE_RSS_BOUND_KIB} KiB)"
    );
    drop(held);
    for (endpoint, connection) in connections {
        connection.close(0u32.into(), b"");
        endpoint.close(0u32.into(), b"");
    }
    let mut nodes = nodes;
    nodes.cluster.stop_all();
}

/// The node's caps on client connections and on streams per connection
/// (`CLIENT_CONNECTIONS_MAX`, `CLIENT_STREAMS_PER_CONNECTION_MAX`).
const CLIENT_CONNECTIONS_MAX: usize = 512;
const CLIENT_STREAMS_PER_CONNECTION_MAX: usize = 64;

/// Issue 12: a node serves at most 512 client connections: one more is
/// closed with code 0x107, and once a held one closes a new one is served;
/// a connection gets stream credit for 64 concurrent streams, the 65th waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_and_streams_per_connection_are_capped() {
    assert!(
        raise_own_fd_limit() > CLIENT_CONNECTIONS_MAX as u64 + 256,
        "this test needs descriptors"
    );
    let nodes = Nodes::start(1, &[]);
    leader_of(&nodes.cluster);
    let config = stalled_consumer_config(&nodes.cluster.tls_dir);
    let target = node_addr(&nodes.cluster, 1);
    // One client endpoint (socket) carries every connection.
    let endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    let connect = || async {
        within(
            "a client connection",
            Duration::from_secs(20),
            endpoint
                .connect_with(config.clone(), target, "127.0.0.1")
                .expect("connect"),
        )
        .await
        .expect("handshake")
    };
    let mut held = Vec::with_capacity(CLIENT_CONNECTIONS_MAX);
    for _ in 0..CLIENT_CONNECTIONS_MAX {
        held.push(connect().await);
    }
    // The node counts a connection once its accept loop took it from the
    // endpoint, a moment after the handshake.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let over = connect().await;
    let reason = within(
        "the connection over the cap to close",
        Duration::from_secs(10),
        over.closed(),
    )
    .await;
    match &reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(0x107), "{reason}")
        }
        other => panic!("expected a close with 0x107, got {other}"),
    }
    // Streams: 64 open at once on one connection, the 65th gets no credit.
    let streams_on = &held[0];
    let mut streams = Vec::new();
    for _ in 0..CLIENT_STREAMS_PER_CONNECTION_MAX {
        streams.push(
            within("a stream", Duration::from_secs(10), streams_on.open_bi())
                .await
                .expect("open a stream"),
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(1), streams_on.open_bi())
            .await
            .is_err(),
        "a 65th concurrent stream was granted"
    );
    drop(streams);
    // A closed connection makes room for a new one.
    held.pop().expect("held").close(0u32.into(), b"");
    let served = eventually(
        "a new connection under the cap",
        Duration::from_secs(20),
        || async {
            let connection = connect().await;
            match tokio::time::timeout(Duration::from_millis(500), connection.closed()).await {
                Err(_) => Ok(connection),
                Ok(reason) => Err(format!("closed: {reason}")),
            }
        },
    )
    .await;
    drop(served);
    for connection in held {
        connection.close(0u32.into(), b"");
    }
    endpoint.close(0u32.into(), b"");
    let mut nodes = nodes;
    nodes.cluster.stop_all();
}
