//! The async client library: [`Publisher`] and [`Consumer`], plus one-shot
//! [`status`] and [`admin`] requests.
//!
//! A client knows some node addresses (`ClientConfig::cluster`) and finds the
//! leader itself, following `NotLeader` redirects.
//!
//! Publishing is exactly-once: every append carries a producer id (random
//! unless the caller gives one) and the sequence number of its first record.
//! Appends go, in order, on one stream; the node answers them in the same
//! order once committed. When anything fails (timeout, lost connection,
//! leader change) the publisher reconnects and sends every unanswered batch
//! again, in order, with the same sequences: the leader answers a batch that
//! is already in its log with the original indexes instead of appending it
//! twice.
//!
//! Consuming resumes from the index after the last record it returned, on
//! any node, so a reconnect never produces a gap or a duplicate.
//!
//! ```no_run
//! use bytes::Bytes;
//! use raftlog::client::{
//!     ClientConfig, Consumer, ConsumerOptions, Publisher, PublisherOptions, StartFrom,
//! };
//!
//! # async fn example() -> Result<(), raftlog::client::ClientError> {
//! let config = ClientConfig {
//!     cluster: vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()],
//!     tls_dir: "raftlog-dev/tls".into(),
//!     request_timeout: std::time::Duration::from_secs(10),
//! };
//! // Exactly-once: reuse the producer id and first sequence after a restart.
//! let options = PublisherOptions {
//!     producer_id: Some(42),
//!     first_sequence: 0,
//!     inflight_max: 8,
//! };
//! let mut publisher = Publisher::connect(config.clone(), options).await?;
//! // `send` queues a batch (waiting while 8 are in flight); the ticket
//! // resolves to the records' indexes once they are committed.
//! let ticket = publisher.send(vec![Bytes::from("hello"), Bytes::from("world")]).await?;
//! let indexes = ticket.await?;
//! println!("committed at {indexes:?}");
//! publisher.close().await;
//!
//! let options = ConsumerOptions { from: StartFrom::Start, follow: false };
//! let mut consumer = Consumer::connect(config, options).await?;
//! while let Some(records) = consumer.next_batch().await? {
//!     for record in records {
//!         println!("{} {:?}", record.index, record.data);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod connection;
mod consumer;
mod pool;
mod publisher;

use std::path::PathBuf;
use std::time::Duration;

pub use consumer::{Consumer, ConsumerOptions, Record, StartFrom};
pub use publisher::{AppendTicket, Publisher, PublisherOptions};

use crate::types::Membership;
pub use crate::wire::client::{AdminRequest, ClusterStatus, NodeStatus};
use crate::wire::client::{ClientRequest, ErrorResponse};

/// Where the cluster is and how to trust it.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Addresses (HOST:PORT) of any subset of the cluster's nodes.
    pub cluster: Vec<String>,
    /// A directory written by `raftlog certs`: `ca.pem`, and `client.pem` /
    /// `client.key` (presented by publishers, consumers and status) and
    /// `admin.pem` / `admin.key` (presented by [`admin`]). Nodes require a
    /// client certificate unless they run with `--allow-anonymous-clients`.
    pub tls_dir: PathBuf,
    /// How long one request may wait for an answer before it is retried
    /// (appends) or fails (everything else).
    pub request_timeout: Duration,
}

/// Total time a publisher keeps retrying one batch through failures (leader
/// elections, restarts) before giving up: many election timeouts.
pub const RETRY_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between reconnect attempts; doubled up to the maximum.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no node of the cluster could be reached ({addrs}): {last_error}")]
    Unreachable { addrs: String, last_error: String },
    #[error("{0}")]
    Refused(ErrorResponse),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot load TLS files: {0}")]
    Tls(String),
    #[error("bad address `{addr}`: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("protocol error talking to {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("the publisher is closed")]
    Closed,
    #[error("{0}")]
    InvalidInput(String),
    #[error("not sent because an earlier append failed: {0}")]
    Abandoned(String),
}

impl ClientError {
    /// True when retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Timeout(_) => true,
            ClientError::Protocol { .. } => true,
            ClientError::Refused(response) => response.is_retryable(),
            _ => false,
        }
    }
}

/// How long `status` looks for a leader before it reports what some node
/// says without one: several election timeouts.
pub const STATUS_LEADER_WAIT: Duration = Duration::from_secs(2);

/// One process's handle on a cluster: the connections to its nodes, dialled
/// in parallel and shared by every publisher, consumer and request made
/// through it (clones share them too). The free functions [`status`] and
/// [`admin`] and [`Publisher::connect`] / [`Consumer::connect`] make a
/// handle of their own each.
#[derive(Clone)]
pub struct Client {
    pool: pool::Pool,
}

impl Client {
    /// Loads the client identity from `config.tls_dir` and starts dialling
    /// every node of `config.cluster`.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let tls = connection::Tls::load(&config)?;
        Ok(Client {
            pool: pool::Pool::new(config, tls)?,
        })
    }

    /// Like [`Client::new`], presenting the admin identity (`admin.pem`),
    /// which membership changes and leadership transfers need.
    pub fn new_admin(config: ClientConfig) -> Result<Client, ClientError> {
        let tls = connection::Tls::load_as(&config, crate::net::certs::Role::Admin)?;
        Ok(Client {
            pool: pool::Pool::new(config, tls)?,
        })
    }

    pub fn config(&self) -> &ClientConfig {
        self.pool.config()
    }

    /// The cluster's status as its leader sees it. Without a leader for
    /// [`STATUS_LEADER_WAIT`], what a reachable node says (with no leader).
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        let wait = self.config().request_timeout.min(STATUS_LEADER_WAIT);
        let deadline = std::time::Instant::now() + wait;
        match connection::request_leader(&self.pool, &ClientRequest::Status, deadline).await {
            Ok(crate::wire::client::ClientResponse::Status(status)) => Ok(status),
            Ok(other) => Err(connection::unexpected(&other)),
            Err(error) => {
                // No leader: a node that knows none answers with its own view.
                let deadline = std::time::Instant::now() + self.config().request_timeout;
                let node = self.pool.any(None, deadline).await.map_err(|_| error)?;
                match connection::round_trip(self.config(), &node, &ClientRequest::Status).await? {
                    crate::wire::client::ClientResponse::Status(status) => Ok(status),
                    crate::wire::client::ClientResponse::Error(answer) => {
                        Err(ClientError::Refused(answer))
                    }
                    other => Err(connection::unexpected(&other)),
                }
            }
        }
    }

    /// A membership change or leadership transfer (see [`admin`]).
    pub async fn admin(&self, request: AdminRequest) -> Result<Membership, ClientError> {
        let deadline = std::time::Instant::now() + self.config().request_timeout;
        let request = ClientRequest::Admin(request);
        match connection::request_leader(&self.pool, &request, deadline).await? {
            crate::wire::client::ClientResponse::Admin(membership) => Ok(membership),
            other => Err(connection::unexpected(&other)),
        }
    }

    /// A publisher on this handle's connections.
    pub async fn publisher(&self, options: PublisherOptions) -> Result<Publisher, ClientError> {
        Publisher::with_pool(self.pool.clone(), options).await
    }

    /// A consumer on this handle's connections.
    pub async fn consumer(&self, options: ConsumerOptions) -> Result<Consumer, ClientError> {
        Consumer::with_pool(self.pool.clone(), options).await
    }
}

/// The cluster's status, as its leader sees it (asked of every node at
/// once; without a leader for [`STATUS_LEADER_WAIT`], what a node says).
pub async fn status(config: &ClientConfig) -> Result<ClusterStatus, ClientError> {
    Client::new(config.clone())?.status().await
}

/// A membership change or leadership transfer; returns the membership after
/// it. Presents the admin identity (`admin.pem`); nodes answer any other
/// caller with `PermissionDenied`.
pub async fn admin(
    config: &ClientConfig,
    request: AdminRequest,
) -> Result<Membership, ClientError> {
    Client::new_admin(config.clone())?.admin(request).await
}
