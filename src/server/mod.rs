//! The node runtime: drives the consensus core, the storage engine and the
//! network with tokio.
//!
//! [`Node::start`] opens the data directory (bootstrapping it on first use),
//! rebuilds what the core needs from the stored log, binds the QUIC endpoint
//! and spawns three kinds of tasks: the driver (owns the core, writes the
//! log), the accept loop (peers feed the driver, clients get a task per
//! connection), and optionally the metrics endpoint.

pub mod budget;
pub mod clients;
pub mod config;
pub mod driver;
pub mod metrics;
pub mod producers;
pub mod resolve;
pub mod stages;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use self::clients::ClientContext;
use self::config::{ServerConfig, TICK_INTERVAL};
use self::driver::{Commit, Driver, DriverError, DriverInputs, REQUEST_QUEUE_MAX};
use self::metrics::Metrics;
use crate::net;
use crate::raft::{self, Core, PersistedState};
use crate::storage::{Log, LogConfig, StorageError};
use crate::types::{HardState, LogStart, Membership, NodeId};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("data directory {path}: {source}")]
    Storage {
        path: std::path::PathBuf,
        #[source]
        source: StorageError,
    },
    #[error("cannot start the consensus core: {0}")]
    Core(String),
    #[error("network: {0}")]
    Net(#[source] net::NetError),
    #[error("network: {0}")]
    PeerLinks(#[source] net::PeerLinksConfigError),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Driver(#[from] DriverError),
    #[error("the node's main task panicked")]
    Panicked,
}

/// A running node. Dropping it does not stop it; call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    id: NodeId,
    tls_dir: std::path::PathBuf,
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    driver: JoinHandle<Result<(), DriverError>>,
    background: Vec<JoinHandle<()>>,
    endpoint: net::Endpoint,
    links: Arc<net::PeerLinks>,
    metrics: Metrics,
    /// The consume streams being served, waited for at shutdown.
    open_consumes: clients::OpenConsumes,
}

impl NodeHandle {
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The UDP address the node serves peers and clients on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Re-reads the TLS files (`ca.pem`, `node-<id>.pem`, `node-<id>.key`)
    /// and serves and dials with them from now on (what SIGHUP does). When
    /// they do not load, or the certificate is not a valid one of that CA
    /// for this node id, nothing changes and the error says why.
    /// Connections already open keep their certificates.
    pub fn reload_tls(&self) -> Result<(), ServerError> {
        let tls = net::tls::NodeTls::load(&self.tls_dir, self.id, false)
            .map_err(|error| ServerError::Net(error.into()))?;
        let dates = tls
            .certificate_not_after()
            .map_err(|error| ServerError::Net(error.into()))?;
        self.endpoint.reload_tls(&tls).map_err(ServerError::Net)?;
        self.metrics.set_certificates(&dates);
        Ok(())
    }

    /// True once the node stopped on its own (a storage failure).
    pub fn is_finished(&self) -> bool {
        self.driver.is_finished()
    }

    /// Stops the node: a leader hands over leadership first (bounded), the
    /// log is synced, connections are closed.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        let result = self.driver.await;
        for task in &self.background {
            task.abort();
        }
        self.links.shutdown();
        // The driver is gone, so every consume stream is ending with
        // ShuttingDown (docs/protocol.md 4.1): let them deliver it first.
        self.open_consumes
            .wait_closed(Duration::from_millis(300))
            .await;
        self.endpoint.close();
        // Let peers and clients learn of the close at once (bounded).
        let _ = tokio::time::timeout(Duration::from_millis(500), self.endpoint.wait_idle()).await;
        match result {
            Ok(result) => result.map_err(ServerError::from),
            Err(_) => Err(ServerError::Panicked),
        }
    }

    /// Stops the node abruptly, the way a crash of its process would, for
    /// tests: the driver and background tasks are aborted where they stand
    /// (no leadership handover, no final sync, appends in flight get no
    /// answer) and the endpoint is closed so its port can be bound again.
    /// What was written stays in the page cache, as after a killed process.
    /// Call [`NodeHandle::wait`] after it to know the driver (and its handle
    /// on the data directory) is gone.
    pub fn abort(&self) {
        self.driver.abort();
        for task in &self.background {
            task.abort();
        }
        self.links.shutdown();
        self.endpoint.close();
    }

    /// Waits until the node stops on its own (it only does on a storage failure).
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        match (&mut self.driver).await {
            Ok(result) => result.map_err(ServerError::from),
            Err(_) => Err(ServerError::Panicked),
        }
    }
}

/// Times a start may find new damage while reading the log and cut it again.
const DAMAGE_REOPENS_MAX: usize = 4;

/// Opens the data directory and reads the log once (see `driver::recover`).
/// A damaged entry found on the way is recorded in the repair marker and the
/// directory opened again, which cuts the log before it: the node starts as
/// a repairing replica instead of refusing to start.
fn open_and_recover(
    config: &ServerConfig,
) -> Result<(crate::storage::Opened, driver::Recovered), ServerError> {
    let storage_error = |source| ServerError::Storage {
        path: config.data_dir.clone(),
        source,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let opened = Log::open(
            &config.data_dir,
            LogConfig {
                segment_bytes: config.segment_bytes,
                ..LogConfig::default()
            },
        )
        .map_err(storage_error)?;
        let log_start = opened
            .log_start
            .clone()
            .unwrap_or_else(|| LogStart::initial(Membership::default()));
        match driver::recover(&opened.log, log_start, config.producer_expiry) {
            Ok(recovered) => return Ok((opened, recovered)),
            Err(driver::RecoverError::Damaged { index, source })
                if attempt < DAMAGE_REOPENS_MAX =>
            {
                tracing::error!(index, error = %source, "damaged entry found while reading the log at start; cutting the log before it to repair from peers");
                let mut log = opened.log;
                log.record_damage(index, &source.to_string())
                    .map_err(storage_error)?;
            }
            Err(driver::RecoverError::Damaged { source, .. })
            | Err(driver::RecoverError::Storage(source)) => return Err(storage_error(source)),
        }
    }
}

pub struct Node;

impl Node {
    pub async fn start(config: ServerConfig) -> Result<NodeHandle, ServerError> {
        config.validate()?;
        let storage_error = |source| ServerError::Storage {
            path: config.data_dir.clone(),
            source,
        };
        let (opened, recovered) = open_and_recover(&config)?;
        let mut log = opened.log;
        // A data directory whose hard state was lost is not new: it carries
        // a repair marker, and must not bootstrap a second cluster.
        let fresh = opened.hard_state.is_none()
            && opened.log_start.is_none()
            && opened.repair.is_none()
            && log.last_index() == 0;
        let log_start = match opened.log_start {
            Some(start) => start,
            None if fresh && !config.join => {
                // First start: the initial voters are this node and its --peer list.
                let mut members = config.peers.clone();
                members.insert(config.id, config.listen.to_string());
                let start = LogStart::initial(Membership::with_voters(members));
                // Stored at once, so from now on the stored membership is the truth.
                log.reset(start.clone()).map_err(storage_error)?;
                info!(membership = %driver::describe_membership(&start.membership), "bootstrapped a new cluster");
                start
            }
            None if fresh => {
                info!("joining: waiting for the leader to add this node");
                LogStart::initial(Membership::default())
            }
            None => LogStart::initial(Membership::default()),
        };
        // Only a fresh log has no stored log start; recovery read it as empty.
        let recovered = driver::Recovered {
            log_start,
            ..recovered
        };
        if let Some(repair) = opened.repair {
            warn!(
                until_index = repair.until_index,
                hard_state_lost = repair.hard_state_lost,
                "this node's storage was damaged: it serves as a non-voting replica until the leader has refilled its log"
            );
        }
        let persisted = PersistedState {
            hard_state: opened.hard_state.unwrap_or(HardState::default()),
            log_start: recovered.log_start,
            last_index: log.last_index(),
            term_runs: recovered.term_runs,
            config_entries: recovered.config_entries,
            repair: opened.repair.map(|marker| raft::Repair {
                until_index: marker.until_index,
                hard_state_lost: marker.hard_state_lost,
            }),
        };
        let config_history = persisted.config_entries.iter().cloned().collect();
        let core = Core::new(core_config(&config), persisted, random_seed())
            .map_err(|error| ServerError::Core(error.to_string()))?;
        let membership = core.membership().clone();
        let first_index = core.first_index();
        let last_index = log.last_index();
        info!(
            id = config.id,
            term = core.term(),
            first_index,
            last_index,
            membership = %driver::describe_membership(&membership),
            "node starting"
        );

        let metrics = Metrics::new();
        // The handshake lets certificate-less clients in (a presented one is
        // still verified against the CA): `clients::authorize` refuses their
        // requests with a typed PermissionDenied, which says what is missing,
        // instead of a bare TLS alert.
        let tls = net::tls::NodeTls::load(&config.tls_dir, config.id, false)
            .map_err(|error| ServerError::Net(error.into()))?;
        metrics.set_certificates(
            &tls.certificate_not_after()
                .map_err(|error| ServerError::Net(error.into()))?,
        );
        let (endpoint, incoming) =
            net::Endpoint::bind(config.listen, &tls).map_err(ServerError::Net)?;
        let local_addr = endpoint.local_addr().map_err(ServerError::Net)?;
        let (links, peer_frames) = net::PeerLinks::new(
            endpoint.clone(),
            net::PeerLinksConfig {
                // The largest body the peer codec accepts.
                frame_bytes_max: crate::wire::FRAME_BYTES_MAX,
                ..net::PeerLinksConfig::default()
            },
        )
        .map_err(ServerError::PeerLinks)?;
        let links = Arc::new(links);
        // A node that is joining knows no membership yet: it links to the
        // nodes it was told of, and learns the rest from the leader.
        let known_addrs = if membership.addrs.is_empty() {
            &config.peers
        } else {
            &membership.addrs
        };
        let mut peer_addrs = std::collections::BTreeMap::new();
        for (&id, addr) in known_addrs.iter().filter(|(&id, _)| id != config.id) {
            // Off the runtime threads and bounded; a name that does not
            // resolve now is linked by the driver once it does.
            if let Some(socket) = resolve::resolve_once(addr).await {
                peer_addrs.insert(id, socket);
            }
        }
        links.set_peers(peer_addrs);

        let shared_log = Arc::new(RwLock::new(log));
        let (commit_tx, commit_rx) = watch::channel(Commit {
            commit_index: first_index - 1,
            first_index,
        });
        let (request_tx, request_rx) = mpsc::channel(REQUEST_QUEUE_MAX);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let open_consumes = clients::OpenConsumes::default();

        let mut background = Vec::new();
        let context = ClientContext {
            requests: request_tx,
            log: shared_log.clone(),
            commit: commit_rx,
            metrics: metrics.clone(),
            buffers: budget::ClientBuffers::new(budget::CLIENT_BUFFER_BYTES_MAX),
            allow_anonymous_clients: config.allow_anonymous_clients,
            open_consumes: open_consumes.clone(),
        };
        background.push(tokio::spawn(accept_loop(incoming, links.clone(), context)));
        if let Some(addr) = config.metrics_listen {
            let listener = metrics::bind(addr)
                .await
                .map_err(|source| ServerError::Metrics { addr, source })?;
            background.push(tokio::spawn(metrics::serve(listener, metrics.clone())));
        }
        background.push(tokio::spawn(metrics::refresh_disk_bytes(
            config.data_dir.join(crate::storage::LOG_DIR_NAME),
            metrics.clone(),
        )));

        let links_for_shutdown = links.clone();
        let driver = Driver::new(
            config.clone(),
            core,
            shared_log,
            links,
            metrics.clone(),
            commit_tx,
            recovered.producers,
            last_index,
            config_history,
        );
        let driver = tokio::spawn(driver.run(DriverInputs {
            requests: request_rx,
            peer_frames,
            shutdown: shutdown_rx,
        }));
        Ok(NodeHandle {
            id: config.id,
            tls_dir: config.tls_dir.clone(),
            local_addr,
            shutdown: shutdown_tx,
            driver,
            background,
            endpoint,
            links: links_for_shutdown,
            metrics,
            open_consumes,
        })
    }
}

/// Client connections a node serves at once. Each may make the node buffer
/// up to its QUIC receive window
/// ([`net::transport::CLIENT_CONNECTION_RECEIVE_WINDOW_BYTES`], 2 MiB)
/// below the application, so this also bounds that memory (1 GiB).
pub const CLIENT_CONNECTIONS_MAX: usize = 512;

/// Hands verified peer connections to the peer links (which feed the
/// driver) and gives each client connection a task, at most
/// [`CLIENT_CONNECTIONS_MAX`] at once: one more is closed with
/// [`net::close_code::CLIENT_CONNECTIONS_FULL`]. The endpoint has already
/// refused (and counted) connections that failed the handshake.
async fn accept_loop(
    mut incoming: net::IncomingConnections,
    links: Arc<net::PeerLinks>,
    context: ClientContext,
) {
    let client_connections = Arc::new(tokio::sync::Semaphore::new(CLIENT_CONNECTIONS_MAX));
    while let Some(connection) = incoming.next().await {
        match connection {
            net::Incoming::Peer {
                node_id,
                connection,
            } => {
                // A node serves and dials from its one endpoint, so a peer's
                // remote address is where it listens. Linking back to a peer
                // we did not know lets a joining node (whose membership is
                // still empty) answer the leader that is adding it.
                let mut known = links.peers();
                if let std::collections::btree_map::Entry::Vacant(slot) = known.entry(node_id) {
                    slot.insert(connection.remote_address());
                    links.set_peers(known);
                }
                links.accept_inbound(node_id, connection)
            }
            net::Incoming::Client {
                connection,
                client_identity,
            } => {
                let Ok(permit) = client_connections.clone().try_acquire_owned() else {
                    tracing::debug!(remote = %connection.remote_address(), "refusing a client: {CLIENT_CONNECTIONS_MAX} client connections are open");
                    connection.close(
                        net::close_code::CLIENT_CONNECTIONS_FULL,
                        b"too many client connections",
                    );
                    continue;
                };
                let context = context.clone();
                tokio::spawn(async move {
                    clients::serve_connection(connection, client_identity, context).await;
                    drop(permit);
                });
            }
        }
    }
}

fn ticks(duration: std::time::Duration) -> u64 {
    (duration.as_millis() / TICK_INTERVAL.as_millis()).max(1) as u64
}

fn core_config(config: &ServerConfig) -> raft::Config {
    let mut core = raft::Config::new(config.id);
    core.election_ticks_min = ticks(config.election_timeout_min);
    core.election_ticks_max = ticks(config.election_timeout_max);
    core.heartbeat_ticks = ticks(config.heartbeat_interval);
    core
}

/// Election timeouts must differ between nodes (and runs); the core itself
/// takes only a seed, so the runtime draws it from the OS.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}
