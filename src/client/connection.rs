//! Connections to cluster nodes: TLS setup, trying addresses in turn, and
//! following `NotLeader` redirects.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use bytes::Bytes;

use super::{ClientConfig, ClientError};
use crate::net;
use crate::wire::client::{ClientRequest, ClientResponse, ErrorCode};

/// Redirects followed for one request before giving up: a leader change in
/// the middle of a request can cost one or two, a loop many.
pub const REDIRECTS_MAX: usize = 8;

/// An open connection to one node.
pub struct NodeConnection {
    pub addr: String,
    pub connection: quinn::Connection,
    // Kept alive as long as the connection: quinn needs its endpoint.
    _endpoint: quinn::Endpoint,
}

pub fn resolve(addr: &str) -> Result<SocketAddr, ClientError> {
    addr.to_socket_addrs()
        .map_err(|error| ClientError::BadAddress {
            addr: addr.to_string(),
            reason: error.to_string(),
        })?
        .next()
        .ok_or_else(|| ClientError::BadAddress {
            addr: addr.to_string(),
            reason: "resolves to no address".to_string(),
        })
}

/// TLS material for clients, loaded once per client object.
#[derive(Clone)]
pub struct Tls(Arc<net::tls::ClientTls>);

impl Tls {
    pub fn load(config: &ClientConfig) -> Result<Tls, ClientError> {
        net::tls::ClientTls::load(&config.tls_dir)
            .map(|tls| Tls(Arc::new(tls)))
            .map_err(|error| ClientError::Tls(error.to_string()))
    }
}

/// Connects to `addr`, bounded by the request timeout.
pub async fn connect(
    config: &ClientConfig,
    tls: &Tls,
    addr: &str,
) -> Result<NodeConnection, ClientError> {
    let socket_addr = resolve(addr)?;
    let connecting = net::connect_client(socket_addr, &tls.0);
    let (endpoint, connection) = tokio::time::timeout(config.request_timeout, connecting)
        .await
        .map_err(|_| ClientError::Timeout(config.request_timeout))?
        .map_err(|error| ClientError::Unreachable {
            addrs: addr.to_string(),
            last_error: error.to_string(),
        })?;
    Ok(NodeConnection {
        addr: addr.to_string(),
        connection,
        _endpoint: endpoint,
    })
}

/// Connects to the first node of the cluster that answers, trying each
/// address in turn starting at `first`.
pub async fn connect_any(
    config: &ClientConfig,
    tls: &Tls,
    first: usize,
) -> Result<(usize, NodeConnection), ClientError> {
    if config.cluster.is_empty() {
        return Err(ClientError::BadAddress {
            addr: String::new(),
            reason: "no cluster address given".to_string(),
        });
    }
    let mut last_error = String::new();
    for offset in 0..config.cluster.len() {
        let position = (first + offset) % config.cluster.len();
        match connect(config, tls, &config.cluster[position]).await {
            Ok(connection) => return Ok((position, connection)),
            Err(error @ ClientError::BadAddress { .. }) => return Err(error),
            Err(error) => last_error = error.to_string(),
        }
    }
    Err(ClientError::Unreachable {
        addrs: config.cluster.join(","),
        last_error,
    })
}

/// Sends one request on a fresh stream and reads its one answer.
pub async fn round_trip(
    config: &ClientConfig,
    node: &NodeConnection,
    request: &ClientRequest,
) -> Result<ClientResponse, ClientError> {
    let exchange = async {
        let (mut send, mut recv) =
            node.connection
                .open_bi()
                .await
                .map_err(|error| ClientError::Unreachable {
                    addrs: node.addr.clone(),
                    last_error: error.to_string(),
                })?;
        let protocol = |reason: String| ClientError::Protocol {
            addr: node.addr.clone(),
            reason,
        };
        net::framing::write_frame(&mut send, &request.encode())
            .await
            .map_err(|error| protocol(error.to_string()))?;
        let _ = send.finish();
        let frame: Bytes = net::framing::read_frame(&mut recv, crate::wire::FRAME_BYTES_MAX)
            .await
            .map_err(|error| protocol(error.to_string()))?
            .ok_or_else(|| protocol("the node closed the stream without answering".into()))?;
        ClientResponse::decode(frame).map_err(|error| protocol(error.to_string()))
    };
    tokio::time::timeout(config.request_timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(config.request_timeout))?
}

/// Sends `request` to the leader, following redirects; errors the cluster
/// answers with become `ClientError::Refused`.
pub async fn request_leader(
    config: &ClientConfig,
    request: ClientRequest,
) -> Result<ClientResponse, ClientError> {
    let tls = Tls::load(config)?;
    let (_, mut node) = connect_any(config, &tls, 0).await?;
    for _ in 0..REDIRECTS_MAX {
        match round_trip(config, &node, &request).await? {
            ClientResponse::Error(error) if error.code == ErrorCode::NotLeader => {
                match error.leader_addr.as_deref() {
                    Some(leader) if leader != node.addr => {
                        node = connect(config, &tls, leader).await?;
                    }
                    _ => {
                        // No leader known yet (an election): wait a little and ask again.
                        tokio::time::sleep(super::RECONNECT_BACKOFF_MAX).await;
                    }
                }
            }
            ClientResponse::Error(error) => return Err(ClientError::Refused(error)),
            response => return Ok(response),
        }
    }
    Err(ClientError::Unreachable {
        addrs: config.cluster.join(","),
        last_error: format!("no leader found after {REDIRECTS_MAX} redirects"),
    })
}

pub fn unexpected(response: &ClientResponse) -> ClientError {
    ClientError::Protocol {
        addr: String::new(),
        reason: format!("unexpected answer {}", response.kind_name()),
    }
}
