//! The node's QUIC endpoint: one UDP socket serving peers and clients, and
//! the dialing side for outbound peer links and for clients.
//!
//! Accepting: a background task takes every incoming connection attempt and
//! runs its handshake in its own task, each within [`HANDSHAKE_TIMEOUT`].
//! Handshakes have two budgets, decided from the first packet alone (the
//! ALPN and the certificate are only known once a handshake ran, too late to
//! keep a flood out): an attempt from the UDP address of a member (a node
//! serves and dials from its one socket, so a peer's source address is the
//! address it listens on) takes one of [`PEER_HANDSHAKES_CONCURRENT_MAX`]
//! slots, after a QUIC Retry proved it really comes from there (spoofing a
//! member's address yields no slot); every other attempt takes one of
//! [`CLIENT_HANDSHAKES_CONCURRENT_MAX`]. A full budget refuses the attempt
//! (counted) at the cost of one stateless packet, so a flood of client
//! handshakes never keeps a peer link from reconnecting. When the client
//! budget is half used, unvalidated client attempts must also answer a Retry
//! first, so spoofed source addresses cannot hold client slots either. The
//! member-address attempts get the LAN transport config, the others the
//! client one ([`crate::net::transport::client_transport_config`]).
//!
//! The handshaken connection is sorted by ALPN:
//! - `raftlog-peer/1`: the remote must have presented a CA-signed certificate
//!   naming exactly one node id; it comes out as [`Incoming::Peer`] labelled
//!   with that id, or is closed with [`close_code::PEER_NOT_NODE`].
//! - `raftlog-client/1`: [`Incoming::Client`], with the names of its
//!   certificate when it presented one (mandatory with
//!   `require_client_cert`, enforced by rustls in the handshake).
//!
//! Every failure is counted in [`NetStats`] and logged, never returned to
//! the runtime and never fatal to the endpoint. Garbage datagrams are dropped
//! by quinn before they reach this code.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::net::certs::{self, node_identity_name, Role};
use crate::net::tls::{self, ClientTls, NodeTls, TlsError, ALPN_CLIENT, ALPN_PEER};
use crate::net::transport::{
    client_dial_transport_config, client_transport_config, lan_transport_config,
    UNI_STREAMS_CONCURRENT_MAX,
};
use crate::net::{close_code, NetStats};
use crate::types::NodeId;

/// Inbound handshakes from members' addresses running at once. A cluster
/// has a handful of peers, each with one link to us; the rest is room for
/// the redials of a restart storm.
pub const PEER_HANDSHAKES_CONCURRENT_MAX: usize = 32;
/// Inbound handshakes from any other address running at once; more
/// attempts are refused (counted), so a flood spawns no unbounded tasks and
/// holds at most this many half-open connections
/// ([`HANDSHAKE_TIMEOUT`] each).
pub const CLIENT_HANDSHAKES_CONCURRENT_MAX: usize = 256;
/// Connection attempts quinn keeps waiting for the accept loop, and the
/// bytes of early packets it buffers for them (per attempt and in all).
/// The loop decides each at once, so these only matter when the runtime is
/// starved; they keep a burst of Initials from queueing without bound.
pub const INCOMING_ATTEMPTS_MAX: usize = 4096;
pub const INCOMING_ATTEMPT_BUFFER_BYTES_MAX: u64 = 64 * 1024;
pub const INCOMING_BUFFER_BYTES_MAX: u64 = 8 * 1024 * 1024;
const _: () = assert!(PEER_HANDSHAKES_CONCURRENT_MAX < CLIENT_HANDSHAKES_CONCURRENT_MAX);
const _: () = assert!(INCOMING_ATTEMPT_BUFFER_BYTES_MAX <= INCOMING_BUFFER_BYTES_MAX);
/// An inbound or outbound handshake that takes longer is abandoned.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Inbound handshake failures each logged as a warning; later ones only
/// every [`HANDSHAKE_FAILURES_LOG_EVERY`]th.
pub const HANDSHAKE_FAILURES_LOGGED_MAX: u64 = 10;
pub const HANDSHAKE_FAILURES_LOG_EVERY: u64 = 1000;
/// Accepted connections waiting for the runtime to take them.
pub const INCOMING_QUEUE_CONNECTIONS_MAX: usize = 64;

/// Errors of binding and dialing.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("binding UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the endpoint's local address: {source}")]
    LocalAddr {
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{addr:?} is not HOST:PORT")]
    InvalidAddress { addr: String },
    #[error("resolving {addr}: {source}")]
    Resolve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} resolves to no address")]
    NoAddress { addr: String },
    #[error("connecting to {addr} as {server_name}: {source}")]
    Connect {
        addr: SocketAddr,
        server_name: String,
        #[source]
        source: quinn::ConnectError,
    },
    #[error("connection to {addr} as {server_name} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        server_name: String,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("connecting to {addr} as {server_name}: no answer within {timeout_ms} ms")]
    Timeout {
        addr: SocketAddr,
        server_name: String,
        timeout_ms: u64,
    },
    #[error("no address given")]
    NoAddresses,
    #[error("the TLS files loaded are for node {loaded}, this endpoint is node {ours}")]
    ReloadOtherNode { ours: NodeId, loaded: NodeId },
    #[error("none of {count} addresses answered; last: {last}")]
    AllAddressesFailed { count: usize, last: Box<NetError> },
}

impl NetError {
    /// True when the TLS handshake itself refused the other side (bad or
    /// foreign certificate, wrong identity), as opposed to a network failure.
    pub fn is_tls_refusal(&self) -> bool {
        match self {
            NetError::Handshake { source, .. } => is_tls_refusal(source),
            _ => false,
        }
    }
}

fn is_tls_refusal(error: &quinn::ConnectionError) -> bool {
    match error {
        // QUIC carries TLS alerts as transport error codes 0x100..=0x1ff.
        quinn::ConnectionError::TransportError(err) => {
            (0x100..=0x1ff).contains(&u64::from(err.code))
        }
        quinn::ConnectionError::ConnectionClosed(close) => {
            (0x100..=0x1ff).contains(&u64::from(close.error_code))
        }
        _ => false,
    }
}

/// What a client certificate says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The DNS names in the certificate (e.g. `client.raftlog`).
    pub dns_names: Vec<String>,
    /// Set when the client holds a node certificate.
    pub node_id: Option<NodeId>,
    /// What the holder may do: [`Role::Node`] for a node certificate
    /// (whatever else it says, a node is never admin), else the role its
    /// `raftlog:role=` URI names, [`Role::Client`] when it names none.
    pub role: Role,
}

impl ClientIdentity {
    /// Reads the identity of a CA-verified certificate.
    pub fn of_certificate(cert_der: &[u8]) -> Result<ClientIdentity, certs::CertError> {
        let dns_names = certs::dns_names_of_certificate(cert_der)?;
        let node_id = certs::node_id_of_certificate(cert_der)?;
        let named = certs::role_of_certificate(cert_der)?;
        let role = match (node_id, named) {
            (Some(_), _) | (None, Some(Role::Node)) => Role::Node,
            (None, Some(role)) => role,
            (None, None) => Role::Client,
        };
        Ok(ClientIdentity {
            dns_names,
            node_id,
            role,
        })
    }
}

/// An accepted, verified inbound connection.
#[derive(Debug)]
pub enum Incoming {
    /// A peer whose certificate names `node_id` (hand it to
    /// [`crate::net::PeerLinks::accept_inbound`]).
    Peer {
        node_id: NodeId,
        connection: quinn::Connection,
    },
    /// A client; `client_identity` is `None` when it presented no certificate
    /// (the handshake allows that unless `require_client_cert`; the node
    /// then decides per request, see `server::clients::authorize`).
    Client {
        connection: quinn::Connection,
        client_identity: Option<ClientIdentity>,
    },
}

/// The stream of accepted connections of one [`Endpoint`].
#[derive(Debug)]
pub struct IncomingConnections {
    receiver: mpsc::Receiver<Incoming>,
    accept_task: JoinHandle<()>,
}

impl IncomingConnections {
    /// The next accepted connection; `None` once the endpoint is closed.
    pub async fn next(&mut self) -> Option<Incoming> {
        self.receiver.recv().await
    }
}

impl Drop for IncomingConnections {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// The two server configs an attempt is accepted with (see the module doc).
#[derive(Debug)]
struct ServerConfigs {
    peer: Arc<quinn::ServerConfig>,
    client: Arc<quinn::ServerConfig>,
}

impl ServerConfigs {
    fn new(tls: &NodeTls) -> Result<ServerConfigs, NetError> {
        let limited = |mut config: quinn::ServerConfig| {
            config
                .max_incoming(INCOMING_ATTEMPTS_MAX)
                .incoming_buffer_size(INCOMING_ATTEMPT_BUFFER_BYTES_MAX)
                .incoming_buffer_size_total(INCOMING_BUFFER_BYTES_MAX);
            Arc::new(config)
        };
        Ok(ServerConfigs {
            peer: limited(tls.quinn_server_config(lan_transport_config())?),
            client: limited(tls.quinn_server_config(client_transport_config())?),
        })
    }
}

/// What the accept loop shares with the [`Endpoint`] handles.
#[derive(Debug)]
struct AcceptShared {
    /// Where members' connections come from (set by the peer links),
    /// canonical (IPv4-mapped IPv6 addresses as IPv4).
    peer_addrs: RwLock<HashSet<SocketAddr>>,
    server_configs: RwLock<ServerConfigs>,
}

/// `addr` with an IPv4-mapped IPv6 address written as IPv4, so that a
/// dual-stack socket's view of a peer compares equal to its configured address.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // Every writer replaces the whole value in one assignment, so a panic
    // elsewhere cannot leave a half-updated value behind.
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A node's QUIC endpoint (cheap to clone: clones share the socket).
#[derive(Clone, Debug)]
pub struct Endpoint {
    endpoint: quinn::Endpoint,
    node_id: NodeId,
    /// Replaced by [`Endpoint::reload_tls`]; every dial clones the current one.
    peer_client_config: Arc<std::sync::RwLock<quinn::ClientConfig>>,
    stats: Arc<NetStats>,
    accept: Arc<AcceptShared>,
}

impl Endpoint {
    /// Binds `listen` and starts accepting peers and clients with `tls`.
    pub fn bind(
        listen: SocketAddr,
        tls: &NodeTls,
    ) -> Result<(Endpoint, IncomingConnections), NetError> {
        let server_configs = ServerConfigs::new(tls)?;
        let peer_client_config = tls.quinn_peer_client_config(lan_transport_config())?;
        // The endpoint's own server config is the client one: every attempt
        // is accepted with an explicit config, this is only quinn's default.
        let bind_error = |source| NetError::Bind {
            addr: listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(listen).map_err(bind_error)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_error(std::io::Error::other("no async runtime")))?;
        // Stable reset and connection-id keys: see NodeTls::stateless_reset_key.
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(tls.stateless_reset_key()));
        let cid_key = tls.connection_id_key();
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(server_configs.client.as_ref().clone()),
            socket,
            runtime,
        )
        .map_err(bind_error)?;
        let stats = Arc::new(NetStats::default());
        let accept = Arc::new(AcceptShared {
            peer_addrs: RwLock::new(HashSet::new()),
            server_configs: RwLock::new(server_configs),
        });
        let (sender, receiver) = mpsc::channel(INCOMING_QUEUE_CONNECTIONS_MAX);
        let accept_task = tokio::spawn(accept_loop(
            endpoint.clone(),
            stats.clone(),
            accept.clone(),
            sender,
        ));
        let endpoint = Endpoint {
            endpoint,
            node_id: tls.node_id(),
            peer_client_config: Arc::new(std::sync::RwLock::new(peer_client_config)),
            stats,
            accept,
        };
        Ok((
            endpoint,
            IncomingConnections {
                receiver,
                accept_task,
            },
        ))
    }

    /// The id this endpoint's certificate names.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The UDP addresses members connect from (their listen addresses):
    /// attempts from them take the peer handshake budget. Replaces the set.
    pub fn set_peer_addrs(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let addrs = addrs.into_iter().map(canonical).collect();
        *write(&self.accept.peer_addrs) = addrs;
    }

    /// Accepts later connections with the certificates of `tls` (both the
    /// peer and the client server config); open connections keep theirs.
    pub fn set_server_tls(&self, tls: &NodeTls) -> Result<(), NetError> {
        let configs = ServerConfigs::new(tls)?;
        self.endpoint
            .set_server_config(Some(configs.client.as_ref().clone()));
        *write(&self.accept.server_configs) = configs;
        Ok(())
    }

    /// Serves and dials with `tls` from now on (certificate rotation):
    /// connections accepted or dialed later use it; open connections keep
    /// the certificates they were made with. `tls` must be for our node id.
    pub fn reload_tls(&self, tls: &NodeTls) -> Result<(), NetError> {
        if tls.node_id() != self.node_id {
            return Err(NetError::ReloadOtherNode {
                ours: self.node_id,
                loaded: tls.node_id(),
            });
        }
        // Both server configs (peer and client budgets, 7.1), then the
        // config we dial peers with.
        self.set_server_tls(tls)?;
        let peer_client_config = tls.quinn_peer_client_config(lan_transport_config())?;
        // A writer that panicked left a whole config behind (one assignment).
        let mut current = self
            .peer_client_config
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = peer_client_config;
        Ok(())
    }

    fn peer_client_config(&self) -> quinn::ClientConfig {
        self.peer_client_config
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.endpoint
            .local_addr()
            .map_err(|source| NetError::LocalAddr { source })
    }

    pub fn stats(&self) -> &Arc<NetStats> {
        &self.stats
    }

    /// The underlying quinn endpoint.
    pub fn quinn(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Dials node `node_id` at `addr` with the peer ALPN, presenting our node
    /// certificate and requiring the remote's to name `node_id`. Counts the
    /// outcome.
    pub async fn connect_peer(
        &self,
        node_id: NodeId,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, NetError> {
        let server_name = node_identity_name(node_id);
        let result = dial(&self.endpoint, self.peer_client_config(), addr, server_name).await;
        match &result {
            Ok(_) => NetStats::bump(&self.stats.peer_dials_succeeded),
            Err(err) => {
                NetStats::bump(&self.stats.peer_dials_failed);
                if err.is_tls_refusal() {
                    NetStats::bump(&self.stats.peer_dials_refused_tls);
                }
            }
        }
        result
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.endpoint.close(close_code::NORMAL, b"endpoint closed");
    }

    /// Waits until every connection's close has been sent (call after
    /// [`Endpoint::close`] before exiting so peers learn of it at once).
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

async fn dial(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    server_name: String,
) -> Result<quinn::Connection, NetError> {
    let connecting = endpoint
        .connect_with(config, addr, &server_name)
        .map_err(|source| NetError::Connect {
            addr,
            server_name: server_name.clone(),
            source,
        })?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(NetError::Handshake {
            addr,
            server_name,
            source,
        }),
        Err(_) => Err(NetError::Timeout {
            addr,
            server_name,
            timeout_ms: HANDSHAKE_TIMEOUT.as_millis() as u64,
        }),
    }
}

/// Which handshake budget an attempt takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Budget {
    Peer,
    Client,
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    stats: Arc<NetStats>,
    shared: Arc<AcceptShared>,
    sender: mpsc::Sender<Incoming>,
) {
    let peer_handshakes = Arc::new(Semaphore::new(PEER_HANDSHAKES_CONCURRENT_MAX));
    let client_handshakes = Arc::new(Semaphore::new(CLIENT_HANDSHAKES_CONCURRENT_MAX));
    while let Some(incoming) = endpoint.accept().await {
        // Under a flood `accept` is always ready, and quinn's futures take
        // no part in tokio's cooperative budget: without a yield this loop
        // would hold its worker and starve the links and the metrics.
        tokio::task::yield_now().await;
        let remote = incoming.remote_address();
        let from_member = read(&shared.peer_addrs).contains(&canonical(remote));
        let validated = incoming.remote_address_validated();
        // A member's address only counts once a Retry proved the attempt
        // comes from it; an attempt that already used its Retry and still
        // is not validated is treated as anyone's.
        if from_member && !validated && incoming.may_retry() {
            retry(incoming, &stats);
            continue;
        }
        let budget = if from_member && validated {
            Budget::Peer
        } else {
            Budget::Client
        };
        let semaphore = match budget {
            Budget::Peer => &peer_handshakes,
            Budget::Client => &client_handshakes,
        };
        if budget == Budget::Client
            && !validated
            && incoming.may_retry()
            && semaphore.available_permits() < CLIENT_HANDSHAKES_CONCURRENT_MAX / 2
        {
            // Under load, make a client prove its address before it holds a
            // slot: a spoofed Initial costs us one stateless packet.
            retry(incoming, &stats);
            continue;
        }
        let Ok(permit) = semaphore.clone().try_acquire_owned() else {
            match budget {
                Budget::Peer => NetStats::bump(&stats.peer_handshakes_refused_busy),
                Budget::Client => NetStats::bump(&stats.handshakes_refused_busy),
            }
            debug!(%remote, ?budget, "refusing connection: too many handshakes in progress");
            incoming.refuse();
            continue;
        };
        let server_config = {
            let configs = read(&shared.server_configs);
            match budget {
                Budget::Peer => configs.peer.clone(),
                Budget::Client => configs.client.clone(),
            }
        };
        let stats = stats.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let failure = match incoming.accept_with(server_config) {
                Ok(connecting) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
                    Ok(Ok(connection)) => Ok(connection),
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(_) => Err(format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
                },
                Err(err) => Err(err.to_string()),
            };
            let connection = match failure {
                Ok(connection) => connection,
                Err(error) => {
                    let earlier = stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                    // A misconfigured client retries in a loop: warn about
                    // the first few failures, then only every 1000th.
                    if earlier < HANDSHAKE_FAILURES_LOGGED_MAX
                        || earlier % HANDSHAKE_FAILURES_LOG_EVERY == 0
                    {
                        warn!(%remote, %error, failures = earlier + 1, "inbound handshake failed");
                    } else {
                        debug!(%remote, %error, "inbound handshake failed");
                    }
                    return;
                }
            };
            if let Some(accepted) = classify(connection, &stats) {
                if let (Incoming::Peer { connection, .. }, Budget::Client) = (&accepted, budget) {
                    // A peer from an address we do not know as a member's
                    // (a node that is joining, or behind address
                    // translation): grant its two lanes, which the client
                    // config does not, and the peer connection window.
                    connection.set_max_concurrent_uni_streams(quinn::VarInt::from_u32(
                        UNI_STREAMS_CONCURRENT_MAX,
                    ));
                    connection.set_receive_window(quinn::VarInt::from_u32(
                        crate::net::transport::CONNECTION_RECEIVE_WINDOW_BYTES,
                    ));
                    connection.set_send_window(crate::net::transport::SEND_WINDOW_BYTES);
                }
                if let Err(mpsc::error::SendError(dropped)) = sender.send(accepted).await {
                    // The runtime stopped taking connections: we are shutting down.
                    let connection = match &dropped {
                        Incoming::Peer { connection, .. } | Incoming::Client { connection, .. } => {
                            connection
                        }
                    };
                    connection.close(close_code::NORMAL, b"shutting down");
                }
            }
        });
    }
    debug!("endpoint closed; accept loop done");
}

/// Answers an attempt with a stateless Retry (counted).
fn retry(incoming: quinn::Incoming, stats: &NetStats) {
    NetStats::bump(&stats.handshakes_retried);
    // Only fails when the attempt may not be retried, checked by the caller.
    if let Err(err) = incoming.retry() {
        err.into_incoming().refuse();
    }
}

/// Sorts a handshaken connection by ALPN and checks the peer rule; closes
/// and counts what it refuses.
fn classify(connection: quinn::Connection, stats: &NetStats) -> Option<Incoming> {
    let remote = connection.remote_address();
    let alpn = tls::negotiated_alpn(&connection);
    let certificate = tls::peer_certificate(&connection);
    match alpn.as_deref() {
        Some(ALPN_PEER) => {
            let node_id = certificate
                .as_ref()
                .and_then(|cert| certs::node_id_of_certificate(cert).ok().flatten());
            match node_id {
                Some(node_id) => {
                    NetStats::bump(&stats.peers_accepted);
                    info!(%remote, node_id, "peer connected");
                    Some(Incoming::Peer {
                        node_id,
                        connection,
                    })
                }
                None => {
                    NetStats::bump(&stats.peers_refused_not_node);
                    warn!(%remote, has_certificate = certificate.is_some(), "refusing peer connection: certificate names no node");
                    connection.close(
                        close_code::PEER_NOT_NODE,
                        b"the peer protocol needs a node certificate",
                    );
                    None
                }
            }
        }
        Some(ALPN_CLIENT) => {
            let client_identity = match certificate {
                None => None,
                Some(cert) => match ClientIdentity::of_certificate(&cert) {
                    Ok(identity) => Some(identity),
                    Err(err) => {
                        NetStats::bump(&stats.connections_refused_other);
                        warn!(%remote, error = %err, "refusing client: certificate cannot be parsed");
                        connection.close(close_code::BAD_CERTIFICATE, b"unparseable certificate");
                        return None;
                    }
                },
            };
            NetStats::bump(&stats.clients_accepted);
            debug!(%remote, ?client_identity, "client connected");
            Some(Incoming::Client {
                connection,
                client_identity,
            })
        }
        other => {
            NetStats::bump(&stats.connections_refused_other);
            warn!(%remote, alpn = ?other.map(String::from_utf8_lossy), "refusing connection: unknown ALPN");
            connection.close(close_code::UNKNOWN_ALPN, b"unknown ALPN");
            None
        }
    }
}

/// Splits `HOST:PORT` (IPv6 hosts in brackets) into host and port.
fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    if host.is_empty() {
        return None;
    }
    Some((host, port))
}

/// The UDP sockets one client process dials nodes from: one quinn endpoint
/// per address family, made on first use and shared by every connection, so
/// a process talking to a cluster holds one socket, not one per request.
#[derive(Default)]
pub struct ClientEndpoints {
    v4: std::sync::Mutex<Option<quinn::Endpoint>>,
    v6: std::sync::Mutex<Option<quinn::Endpoint>>,
}

impl ClientEndpoints {
    fn for_remote(&self, remote: &SocketAddr) -> Result<quinn::Endpoint, NetError> {
        let (slot, local): (_, SocketAddr) = match remote {
            SocketAddr::V4(_) => (&self.v4, (Ipv4Addr::UNSPECIFIED, 0).into()),
            SocketAddr::V6(_) => (&self.v6, (Ipv6Addr::UNSPECIFIED, 0).into()),
        };
        // A poisoned lock only means another dial panicked while making the
        // endpoint; the Option inside is still either None or a whole endpoint.
        let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(endpoint) = slot.as_ref() {
            return Ok(endpoint.clone());
        }
        let endpoint = quinn::Endpoint::client(local).map_err(|source| NetError::Bind {
            addr: local,
            source,
        })?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }
}

/// Resolves `HOST:PORT` (an IP literal, or a name looked up asynchronously).
async fn resolve_client_addr(addr: &str) -> Result<(String, SocketAddr), NetError> {
    let (host, port) = split_host_port(addr).ok_or_else(|| NetError::InvalidAddress {
        addr: addr.to_string(),
    })?;
    let socket_addr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| NetError::Resolve {
                addr: addr.to_string(),
                source,
            })?
            .next()
            .ok_or_else(|| NetError::NoAddress {
                addr: addr.to_string(),
            })?,
    };
    Ok((host.to_string(), socket_addr))
}

/// Connects to a node at `addr` (`HOST:PORT`) with the client ALPN from one
/// of `endpoints`, verifying the node's certificate against the CA with HOST
/// as the server name (an IP SAN for an IP host). The connection uses the
/// client timing ([`crate::net::transport::client_dial_transport_config`]):
/// a node that stops answering is given up within
/// [`crate::net::transport::CLIENT_IDLE_TIMEOUT`], during the handshake too.
pub async fn connect_client_from(
    endpoints: &ClientEndpoints,
    addr: &str,
    tls: &ClientTls,
) -> Result<quinn::Connection, NetError> {
    let (host, socket_addr) = resolve_client_addr(addr).await?;
    let endpoint = endpoints.for_remote(&socket_addr)?;
    let config = tls.quinn_client_config(client_dial_transport_config())?;
    dial(&endpoint, config, socket_addr, host).await
}

/// [`connect_client_from`] on an endpoint of its own (an ephemeral port).
pub async fn connect_client(addr: &str, tls: &ClientTls) -> Result<quinn::Connection, NetError> {
    // quinn keeps the endpoint's driver alive while the connection lives, so
    // the local handle can go out of scope here.
    connect_client_from(&ClientEndpoints::default(), addr, tls).await
}

/// Tries `addrs` in order; returns the index of the first that connects and
/// its connection.
pub async fn connect_client_any(
    addrs: &[String],
    tls: &ClientTls,
) -> Result<(usize, quinn::Connection), NetError> {
    let mut last = None;
    for (index, addr) in addrs.iter().enumerate() {
        match connect_client(addr, tls).await {
            Ok(connection) => return Ok((index, connection)),
            Err(err) => {
                debug!(%addr, error = %err, "client connect failed; trying the next address");
                last = Some(err);
            }
        }
    }
    match last {
        Some(last) => Err(NetError::AllAddressesFailed {
            count: addrs.len(),
            last: Box::new(last),
        }),
        None => Err(NetError::NoAddresses),
    }
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_splitting_accepts_names_ipv4_and_bracketed_ipv6_only() {
        assert_eq!(split_host_port("127.0.0.1:7001"), Some(("127.0.0.1", 7001)));
        assert_eq!(split_host_port("db-1.lan:80"), Some(("db-1.lan", 80)));
        assert_eq!(split_host_port("[::1]:7001"), Some(("::1", 7001)));
        assert_eq!(split_host_port("::1:7001"), None);
        assert_eq!(split_host_port("host"), None);
        assert_eq!(split_host_port(":7001"), None);
        assert_eq!(split_host_port("host:99999"), None);
    }
}
