//! TLS configurations for the node endpoint, outbound peer links and clients.
//!
//! A `--tls-dir` (see [`crate::net::certs`]) is loaded into rustls configs,
//! always with the `ring` provider and TLS 1.3 only (QUIC requires it):
//! - [`NodeTls`]: the node's server side serves ALPN [`ALPN_PEER`] and
//!   [`ALPN_CLIENT`] with the node certificate. Client certificates are
//!   verified against `ca.pem`; they are mandatory in the handshake only with
//!   `require_client_cert` (the node runtime passes false and refuses
//!   certificate-less requests itself, with a typed `PermissionDenied`). The
//!   node certificate must verify against `ca.pem` when loaded, so a reload
//!   with a certificate of another CA is refused instead of locking the node
//!   out of its peers. Peers must always present a node certificate: the
//!   endpoint enforces that per ALPN after the handshake (see
//!   [`crate::net::endpoint`]). The node's outbound side presents the node
//!   certificate and verifies the remote against `ca.pem` with the server
//!   name `node-<id>.raftlog` of the id it expects, so a remote holding
//!   another id's certificate fails the handshake.
//! - [`ClientTls`]: verifies the node certificate against `ca.pem` with the
//!   dialed host as server name, and presents `client.pem` (or, with
//!   [`ClientTls::load_as`] and the admin role, `admin.pem`) when present.
//!
//! There is no insecure mode: every config verifies against the cluster CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::net::certs::{self, CertError, Role};
use crate::types::NodeId;

/// ALPN of the peer (node to node) protocol.
pub const ALPN_PEER: &[u8] = b"raftlog-peer/1";
/// ALPN of the client protocol.
pub const ALPN_CLIENT: &[u8] = b"raftlog-client/1";
/// Largest PEM file we read; real ones are a few KiB.
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Errors while loading a TLS directory into rustls configs.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: file not found (generate the TLS directory with `raftlog certs`)")]
    MissingFile { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: larger than {PEM_FILE_BYTES_MAX} bytes, not a PEM file of ours")]
    TooLarge { path: PathBuf },
    #[error("{path}: bad PEM: {source}")]
    BadPem {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path}: contains no certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: certificate cannot be read: {source}")]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: CertError,
    },
    #[error("{path}: certificate names node {found:?}, expected node {expected}")]
    NodeIdentityMismatch {
        path: PathBuf,
        expected: NodeId,
        found: Option<NodeId>,
    },
    #[error("{path} is not a valid certificate of the CA in {ca}: {source}")]
    NotSignedByCa {
        path: PathBuf,
        ca: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{present} exists but {missing} does not: the client pair must be complete")]
    IncompleteClientPair { present: PathBuf, missing: PathBuf },
    #[error("{path}: not usable as a trust anchor: {source}")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{what}: {source}")]
    Config {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("client certificate verifier: {source}")]
    Verifier {
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("TLS config unusable for QUIC: {source}")]
    Quic {
        #[source]
        source: quinn::crypto::rustls::NoInitialCipherSuite,
    },
}

/// A node's TLS: the server config of its endpoint and the client config of
/// its outbound peer connections.
#[derive(Clone, Debug)]
pub struct NodeTls {
    node_id: NodeId,
    require_client_cert: bool,
    server: Arc<rustls::ServerConfig>,
    peer_client: Arc<rustls::ClientConfig>,
    /// The node's own certificate and the CA's, for their expiry dates.
    node_certificate: (PathBuf, CertificateDer<'static>),
    ca_certificate: (PathBuf, CertificateDer<'static>),
    /// A secret derived from the node's private key, stable across restarts
    /// (see [`NodeTls::stateless_reset_key`]).
    reset_secret: [u8; 32],
}

impl NodeTls {
    /// Loads `ca.pem`, `node-<node_id>.pem` and `node-<node_id>.key` from
    /// `tls_dir`. The node certificate must name `node_id`.
    pub fn load(
        tls_dir: &Path,
        node_id: NodeId,
        require_client_cert: bool,
    ) -> Result<NodeTls, TlsError> {
        let ca_path = certs::ca_cert_path(tls_dir);
        let ca_chain = load_certs(&ca_path)?;
        let roots = Arc::new(roots_of(&ca_path, ca_chain.clone())?);
        let ca_certificate =
            ca_chain
                .into_iter()
                .next()
                .ok_or_else(|| TlsError::NoCertificate {
                    path: ca_path.clone(),
                })?;
        let cert_path = certs::node_cert_path(tls_dir, node_id);
        let chain = load_certs(&cert_path)?;
        let leaf = chain
            .first()
            .cloned()
            .ok_or_else(|| TlsError::NoCertificate {
                path: cert_path.clone(),
            })?;
        let found =
            certs::node_id_of_certificate(&leaf).map_err(|source| TlsError::BadCertificate {
                path: cert_path.clone(),
                source,
            })?;
        if found != Some(node_id) {
            return Err(TlsError::NodeIdentityMismatch {
                path: cert_path,
                expected: node_id,
                found,
            });
        }
        let key = load_key(&certs::node_key_path(tls_dir, node_id))?;
        let reset_secret = derive_reset_secret(key.secret_der());
        let provider = provider();

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
        // Without `require_client_cert` the handshake lets certificate-less
        // clients in; the endpoint still refuses a peer-ALPN connection that
        // lacks a node certificate.
        let verifier = if require_client_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        }
        .build()
        .map_err(|source| TlsError::Verifier { source })?;
        // A node certificate of another CA would load, and then every peer
        // would refuse it: refuse it here, so a reload keeps the old one.
        verifier
            .verify_client_cert(
                &leaf,
                chain.get(1..).unwrap_or(&[]),
                rustls_pki_types::UnixTime::now(),
            )
            .map_err(|source| TlsError::NotSignedByCa {
                path: cert_path.clone(),
                ca: ca_path.clone(),
                source,
            })?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|source| TlsError::Config {
                what: "server protocol versions",
                source,
            })?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|source| TlsError::Config {
                what: "node certificate and key",
                source,
            })?;
        server.alpn_protocols = vec![ALPN_PEER.to_vec(), ALPN_CLIENT.to_vec()];

        let mut peer_client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|source| TlsError::Config {
                what: "client protocol versions",
                source,
            })?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|source| TlsError::Config {
                what: "node certificate and key (as TLS client)",
                source,
            })?;
        peer_client.alpn_protocols = vec![ALPN_PEER.to_vec()];

        Ok(NodeTls {
            node_id,
            require_client_cert,
            server: Arc::new(server),
            peer_client: Arc::new(peer_client),
            node_certificate: (cert_path, leaf),
            ca_certificate: (ca_path, ca_certificate),
            reset_secret,
        })
    }

    /// The key QUIC stateless reset tokens are made with. quinn's default is
    /// random per process, so after a restart the node could not reset the
    /// connections its previous process had: peers (and clients) kept
    /// sending into them until their idle timeout, and a restarted node
    /// stayed cut off from the leader for seconds. Derived from the node's
    /// private key, the key is the same in every process of the node and
    /// secret to it, so the new process answers a packet of an old
    /// connection with a reset the sender accepts, and it redials at once.
    pub fn stateless_reset_key(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.reset_secret)
    }

    /// The key of the connection id generator, stable across restarts for
    /// the same reason: quinn answers a packet for an unknown connection
    /// with a reset only when its connection id validates, and the default
    /// generator's key is random per process.
    pub fn connection_id_key(&self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.reset_secret[24..32]);
        u64::from_le_bytes(bytes)
    }

    /// The certificates in use, labelled `node` and `ca`, with their
    /// `notAfter` as Unix seconds (for the expiry metric).
    pub fn certificate_not_after(&self) -> Result<Vec<(&'static str, i64)>, TlsError> {
        let mut dates = Vec::new();
        for (label, (path, der)) in [
            ("node", &self.node_certificate),
            ("ca", &self.ca_certificate),
        ] {
            let not_after =
                certs::not_after_unix(der).map_err(|source| TlsError::BadCertificate {
                    path: path.clone(),
                    source,
                })?;
            dates.push((label, not_after));
        }
        Ok(dates)
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn require_client_cert(&self) -> bool {
        self.require_client_cert
    }

    pub(crate) fn quinn_server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(self.server.clone())
            .map_err(|source| TlsError::Quic { source })?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport);
        Ok(config)
    }

    pub(crate) fn quinn_peer_client_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, TlsError> {
        quinn_client_config(self.peer_client.clone(), transport)
    }
}

/// A client's TLS: trusts `ca.pem`, presents the client pair when present.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    has_client_certificate: bool,
}

impl ClientTls {
    /// Loads `ca.pem` (required) and the client pair `client.pem` +
    /// `client.key` (both or neither) from `tls_dir`; see [`Self::load_as`].
    pub fn load(tls_dir: &Path) -> Result<ClientTls, TlsError> {
        Self::load_as(tls_dir, Role::Client)
    }

    /// Loads `ca.pem` (required) and the pair of `role` from `tls_dir`:
    /// `admin.pem`/`admin.key` for [`Role::Admin`], `client.pem`/`client.key`
    /// otherwise. When neither file of that pair exists the other pair is
    /// presented instead, when it exists (a directory holding only an admin
    /// identity still publishes; the node then says why an admin request
    /// was refused), else none. Half a pair is an error.
    pub fn load_as(tls_dir: &Path, role: Role) -> Result<ClientTls, TlsError> {
        let roots = Arc::new(load_roots(&certs::ca_cert_path(tls_dir))?);
        let other = match role {
            Role::Admin => Role::Client,
            Role::Client | Role::Node => Role::Admin,
        };
        let mut pair = None;
        for candidate in [role, other] {
            let (cert_path, key_path) = certs::identity_paths(tls_dir, candidate);
            pair = load_pair(cert_path, key_path)?;
            if pair.is_some() {
                break;
            }
        }
        Self::from_parts(roots, pair)
    }

    /// Loads only `ca.pem` from `tls_dir`, never presenting a client
    /// certificate (for clusters that do not require one, and for tests).
    pub fn load_without_client_certificate(tls_dir: &Path) -> Result<ClientTls, TlsError> {
        let roots = Arc::new(load_roots(&certs::ca_cert_path(tls_dir))?);
        Self::from_parts(roots, None)
    }

    fn from_parts(roots: Arc<RootCertStore>, pair: Option<Pair>) -> Result<ClientTls, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|source| TlsError::Config {
                what: "client protocol versions",
                source,
            })?
            .with_root_certificates(roots);
        let has_client_certificate = pair.is_some();
        let mut config = match pair {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TlsError::Config {
                    what: "client certificate and key",
                    source,
                })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            has_client_certificate,
        })
    }

    pub fn has_client_certificate(&self) -> bool {
        self.has_client_certificate
    }

    pub(crate) fn quinn_client_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, TlsError> {
        quinn_client_config(self.config.clone(), transport)
    }
}

fn quinn_client_config(
    config: Arc<rustls::ClientConfig>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|source| TlsError::Quic { source })?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// The ring provider, passed explicitly so no process-wide default is needed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let metadata = std::fs::metadata(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TlsError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            TlsError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    if metadata.len() > PEM_FILE_BYTES_MAX {
        return Err(TlsError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A certificate chain and key, both or neither present.
type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn load_pair(cert_path: PathBuf, key_path: PathBuf) -> Result<Option<Pair>, TlsError> {
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => Ok(Some((load_certs(&cert_path)?, load_key(&key_path)?))),
        (false, false) => Ok(None),
        (true, false) => Err(TlsError::IncompleteClientPair {
            present: cert_path,
            missing: key_path,
        }),
        (false, true) => Err(TlsError::IncompleteClientPair {
            present: key_path,
            missing: cert_path,
        }),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadPem {
            path: path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// HMAC-SHA256 of a fixed label keyed with the private key: reveals nothing
/// of the key and differs from every other use of it.
fn derive_reset_secret(private_key_der: &[u8]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, private_key_der);
    let tag = ring::hmac::sign(&key, b"raftlog QUIC stateless reset key v1");
    let mut secret = [0u8; 32];
    secret.copy_from_slice(tag.as_ref());
    secret
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| TlsError::BadPem {
        path: path.to_path_buf(),
        source,
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    roots_of(path, load_certs(path)?)
}

fn roots_of(path: &Path, chain: Vec<CertificateDer<'static>>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in chain {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// The end-entity certificate the remote presented, if any (already verified
/// against the CA by rustls when present).
pub fn peer_certificate(connection: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().cloned()
}

/// The ALPN protocol negotiated on `connection`.
pub fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    let data = connection.handshake_data()?;
    let data = data
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?;
    data.protocol
}
