//! Requests on connections to cluster nodes: TLS setup, one request and
//! its answer, and requests that must reach the leader.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::pool::Pool;
use super::{ClientConfig, ClientError};
use crate::net;
use crate::net::certs::Role;
use crate::wire::client::{ClientRequest, ClientResponse, ErrorResponse};

/// Leader changes followed for one request before giving up: a change in
/// the middle of a request costs one or two.
pub const REDIRECTS_MAX: usize = 10;

/// An open connection to one node.
#[derive(Clone)]
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
pub struct Tls(pub(super) Arc<net::ClientTls>);

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

/// Sends `request` to the leader, following leader changes until
/// `deadline`; errors the cluster answers with become `ClientError::Refused`.
pub async fn request_leader(
    pool: &Pool,
    request: &ClientRequest,
    deadline: Instant,
) -> Result<ClientResponse, ClientError> {
    let mut last_answer = None;
    for _ in 0..REDIRECTS_MAX {
        let node = match pool.leader(deadline).await {
            Ok(node) => node,
            Err(error) => return Err(last_answer.map_or(error, ClientError::Refused)),
        };
        match round_trip(pool.config(), &node, request).await? {
            // The leader changed between the search and the request.
            ClientResponse::Error(
                error @ (ErrorResponse::NotLeader { .. } | ErrorResponse::Unavailable),
            ) => last_answer = Some(error),
            ClientResponse::Error(error) => return Err(ClientError::Refused(error)),
            response => return Ok(response),
        }
    }
    Err(match last_answer {
        Some(error) => ClientError::Refused(error),
        None => ClientError::Unreachable {
            addrs: pool.config().cluster.join(","),
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
