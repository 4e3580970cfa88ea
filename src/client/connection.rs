//! Connections to cluster nodes: TLS setup, trying addresses in turn, and
//! following `NotLeader` redirects.

use std::sync::Arc;

use bytes::Bytes;

use super::{ClientConfig, ClientError};
use crate::net;
use crate::net::certs::Role;
use crate::wire::client::{ClientRequest, ClientResponse, ErrorResponse};

/// Redirects (or waits for an election) followed for one request before
/// giving up: a leader change in the middle of a request costs one or two.
pub const REDIRECTS_MAX: usize = 10;

/// An open connection to one node.
pub struct NodeConnection {
    pub addr: String,
    pub connection: quinn::Connection,
}

impl NodeConnection {
    /// A new bidirectional stream for one request (or one append session).
    pub async fn open_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        self.connection
            .open_bi()
            .await
            .map_err(|error| ClientError::Unreachable {
                addrs: self.addr.clone(),
                last_error: error.to_string(),
            })
    }
}

/// TLS material for clients, loaded once per client object.
#[derive(Clone)]
pub struct Tls(Arc<net::ClientTls>);

impl Tls {
    /// The client identity (`client.pem`/`client.key`) of the TLS dir.
    pub fn load(config: &ClientConfig) -> Result<Tls, ClientError> {
        Self::load_as(config, Role::Client)
    }

    /// The identity of `role` (`admin.pem`/`admin.key` for admin), see
    /// [`net::ClientTls::load_as`].
    pub fn load_as(config: &ClientConfig, role: Role) -> Result<Tls, ClientError> {
        net::ClientTls::load_as(&config.tls_dir, role)
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
    let connecting = net::connect_client(addr, &tls.0);
    let connection = tokio::time::timeout(config.request_timeout, connecting)
        .await
        .map_err(|_| ClientError::Timeout(config.request_timeout))?
        .map_err(|error| match error {
            net::NetError::InvalidAddress { .. } => ClientError::BadAddress {
                addr: addr.to_string(),
                reason: error.to_string(),
            },
            error => ClientError::Unreachable {
                addrs: addr.to_string(),
                last_error: error.to_string(),
            },
        })?;
    Ok(NodeConnection {
        addr: addr.to_string(),
        connection,
    })
}

/// Connects to the first node of the cluster that answers, trying each
/// address in turn starting at position `first`.
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

pub fn encode(request: &ClientRequest) -> Result<Bytes, ClientError> {
    request
        .encode()
        .map_err(|error| ClientError::InvalidInput(error.to_string()))
}

/// Sends one request on a fresh stream and reads its one answer.
pub async fn round_trip(
    config: &ClientConfig,
    node: &NodeConnection,
    request: &ClientRequest,
) -> Result<ClientResponse, ClientError> {
    let body = encode(request)?;
    let protocol = |reason: String| ClientError::Protocol {
        addr: node.addr.clone(),
        reason,
    };
    let exchange = async {
        let (mut send, mut recv) = node.open_stream().await?;
        net::write_frame(&mut send, body)
            .await
            .map_err(|error| protocol(error.to_string()))?;
        let _ = send.finish();
        let frame = net::read_frame(&mut recv, crate::wire::FRAME_BYTES_MAX)
            .await
            .map_err(|error| protocol(error.to_string()))?
            .ok_or_else(|| protocol("the node closed the stream without answering".into()))?;
        ClientResponse::decode(frame).map_err(|error| protocol(error.to_string()))
    };
    tokio::time::timeout(config.request_timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(config.request_timeout))?
}

/// Sends `request` to the leader, following redirects and waiting out
/// elections; errors the cluster answers with become `ClientError::Refused`.
/// Admin requests present the admin identity, the others the client one.
pub async fn request_leader(
    config: &ClientConfig,
    request: ClientRequest,
) -> Result<ClientResponse, ClientError> {
    let role = match request {
        ClientRequest::Admin(_) => Role::Admin,
        _ => Role::Client,
    };
    let tls = Tls::load_as(config, role)?;
    let (mut position, mut node) = connect_any(config, &tls, 0).await?;
    let mut last_answer = None;
    for _ in 0..REDIRECTS_MAX {
        match round_trip(config, &node, &request).await? {
            ClientResponse::Error(ErrorResponse::NotLeader {
                leader_addr: Some(leader),
                ..
            }) if leader != node.addr => {
                node = connect(config, &tls, &leader).await?;
            }
            ClientResponse::Error(
                error @ (ErrorResponse::NotLeader { .. } | ErrorResponse::Unavailable),
            ) => {
                // No leader known yet (an election): wait a little, ask the next node.
                last_answer = Some(error);
                tokio::time::sleep(super::RECONNECT_BACKOFF_MAX).await;
                let (next, next_node) = connect_any(config, &tls, position + 1).await?;
                position = next;
                node = next_node;
            }
            ClientResponse::Error(error) => return Err(ClientError::Refused(error)),
            response => return Ok(response),
        }
    }
    Err(match last_answer {
        Some(error) => ClientError::Refused(error),
        None => ClientError::Unreachable {
            addrs: config.cluster.join(","),
            last_error: format!("no leader found after {REDIRECTS_MAX} redirects"),
        },
    })
}

pub fn unexpected(response: &ClientResponse) -> ClientError {
    let kind = match response {
        ClientResponse::Appended { .. } | ClientResponse::AppendedRuns(_) => "an append answer",
        ClientResponse::Records(_) => "records",
        ClientResponse::ConsumeEnd(_) => "the end of a consume stream",
        ClientResponse::Status(_) => "a status",
        ClientResponse::Admin(_) => "a membership",
        ClientResponse::Error(_) => "an error",
    };
    ClientError::Protocol {
        addr: String::new(),
        reason: format!("unexpected answer: {kind}"),
    }
}
