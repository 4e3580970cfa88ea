//! Cluster certificates: a private CA, one certificate per node, a client
//! and an admin identity.
//!
//! `raftlog certs` writes a TLS directory with these files:
//!
//! | file              | what                                               | mode |
//! |-------------------|----------------------------------------------------|------|
//! | `ca.pem`          | the cluster CA certificate (trust anchor)          | 0644 |
//! | `ca.key`          | the CA private key, kept so nodes can be added later | 0600 |
//! | `node-<id>.pem`   | node `<id>`'s certificate, signed by the CA        | 0644 |
//! | `node-<id>.key`   | its private key (PKCS#8 PEM)                       | 0600 |
//! | `client.pem`      | the client identity (role `client`), signed by the CA | 0644 |
//! | `client.key`      | its private key                                    | 0600 |
//! | `admin.pem`       | the admin identity (role `admin`), signed by the CA | 0644 |
//! | `admin.key`       | its private key                                    | 0600 |
//! | `node-<id>/`      | node `<id>`'s bundle: `ca.pem`, `node-<id>.pem`, `node-<id>.key` and nothing else, the directory to copy to that node's host | 0700 |
//!
//! Roles: every certificate carries one URI subject alternative name
//! `raftlog:role=<role>` ([`ROLE_URI_PREFIX`], [`Role`]): `node`, `client`
//! or `admin`. Nodes serve admin requests only to a CA-signed certificate
//! whose role is `admin` ([`role_of_certificate`]); a CA-signed certificate
//! without a role URI (issued before roles existed) counts as `client`.
//!
//! Identity scheme (what the transport checks, see [`crate::net::tls`]):
//! - A node certificate carries two subject alternative names: its host (an IP
//!   SAN when the host parses as an IP address, else a DNS SAN), which clients
//!   verify against the address they dialed, and the DNS SAN
//!   `node-<id>.raftlog` ([`node_identity_name`]), which is the node's
//!   machine-checkable identity. Peers dial each other with that name as the
//!   TLS server name, so rustls itself refuses a peer holding another id's
//!   certificate; inbound, the id is read back from that SAN
//!   ([`node_id_of_certificate`]). Exactly one such name may appear.
//! - Client and admin certificates carry the DNS SAN `client.raftlog`
//!   ([`CLIENT_IDENTITY_NAME`]) and no node name, so they can never pass as a
//!   node. Their extended key usage is client-auth only. Their subject
//!   common name is the name given to `raftlog certs client --name`
//!   (`client` and `admin` for the pair `raftlog certs` writes), for logs.
//! - Hosts under the reserved `.raftlog` domain are refused, so a host name
//!   can never smuggle in a second node identity.
//!
//! Keys are ECDSA P-256. Certificates are valid from one day before creation
//! (clock skew between machines) for [`CERT_VALIDITY_DAYS`].

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::types::NodeId;

/// The reserved DNS domain of identity names; no host may live under it.
pub const IDENTITY_DOMAIN: &str = "raftlog";
/// The DNS SAN that names the holder of the client certificate.
pub const CLIENT_IDENTITY_NAME: &str = "client.raftlog";
/// The prefix of the URI SAN that names a certificate's role.
pub const ROLE_URI_PREFIX: &str = "raftlog:role=";
/// Longest name of a client identity (`certs client --name`).
pub const CLIENT_NAME_BYTES_MAX: usize = 64;
/// How long generated certificates stay valid.
pub const CERT_VALIDITY_DAYS: i64 = 3650;
/// Longest host name accepted (the DNS limit).
pub const HOST_BYTES_MAX: usize = 253;

const NODE_NAME_PREFIX: &str = "node-";
const IDENTITY_SUFFIX: &str = ".raftlog";

/// Errors while generating or extending a TLS directory.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} already exists; refusing to overwrite it (remove it or use another directory)"
    )]
    AlreadyExists { path: PathBuf },
    #[error("node id {node_id} is invalid: node ids start at 1")]
    InvalidNodeId { node_id: NodeId },
    #[error("node id {node_id} is listed twice")]
    DuplicateNodeId { node_id: NodeId },
    #[error("node {node_id}: host {host:?} is not an IP address or a DNS name")]
    InvalidHost { node_id: NodeId, host: String },
    #[error("node {node_id}: host {host:?} is under the reserved .{IDENTITY_DOMAIN} domain")]
    ReservedHost { node_id: NodeId, host: String },
    #[error("no nodes given: a cluster needs at least one node certificate")]
    NoNodes,
    #[error("{path}: not a usable CA ({source})")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("generating the {what} certificate: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("certificate cannot be parsed: {detail}")]
    Parse { detail: String },
    #[error(
        "client name {name:?} is invalid: use 1-{CLIENT_NAME_BYTES_MAX} characters of [a-z0-9._-]"
    )]
    InvalidClientName { name: String },
    #[error("{path} differs from the CA certificate being issued from ({ca}); refusing to mix two CAs in one directory")]
    ForeignCa { path: PathBuf, ca: PathBuf },
}

/// What a certificate's holder may do, carried in its `raftlog:role=` URI SAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A cluster node (peer protocol; never admin on the client protocol).
    Node,
    /// Publish, consume, status.
    Client,
    /// Everything a client may do, and membership changes and transfers.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }

    fn from_name(name: &str) -> Option<Role> {
        match name {
            "node" => Some(Role::Node),
            "client" => Some(Role::Client),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// `raftlog:role=<role>`, the URI SAN put in certificates of this role.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `node-<id>.raftlog`: the identity name a node certificate carries.
pub fn node_identity_name(node_id: NodeId) -> String {
    format!("{NODE_NAME_PREFIX}{node_id}{IDENTITY_SUFFIX}")
}

/// The node id named by `name` if it is exactly `node-<id>.raftlog` with a
/// canonical decimal id >= 1 (no sign, no leading zero), else `None`.
pub fn parse_node_identity_name(name: &str) -> Option<NodeId> {
    let digits = name
        .strip_prefix(NODE_NAME_PREFIX)?
        .strip_suffix(IDENTITY_SUFFIX)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let node_id: NodeId = digits.parse().ok()?;
    debug_assert!(node_id >= 1);
    Some(node_id)
}

pub fn ca_cert_path(tls_dir: &Path) -> PathBuf {
    tls_dir.join("ca.pem")
}
pub fn ca_key_path(tls_dir: &Path) -> PathBuf {
    tls_dir.join("ca.key")
}
pub fn node_cert_path(tls_dir: &Path, node_id: NodeId) -> PathBuf {
    tls_dir.join(format!("node-{node_id}.pem"))
}
pub fn node_key_path(tls_dir: &Path, node_id: NodeId) -> PathBuf {
    tls_dir.join(format!("node-{node_id}.key"))
}
pub fn client_cert_path(tls_dir: &Path) -> PathBuf {
    tls_dir.join("client.pem")
}
pub fn client_key_path(tls_dir: &Path) -> PathBuf {
    tls_dir.join("client.key")
}
pub fn admin_cert_path(tls_dir: &Path) -> PathBuf {
    tls_dir.join("admin.pem")
}
pub fn admin_key_path(tls_dir: &Path) -> PathBuf {
    tls_dir.join("admin.key")
}
/// `node-<id>/`: the bundle to copy to node `<id>`'s host.
pub fn node_bundle_dir(tls_dir: &Path, node_id: NodeId) -> PathBuf {
    tls_dir.join(format!("node-{node_id}"))
}
/// The certificate and key file of a client identity of `role` in `tls_dir`
/// (`admin.pem`/`admin.key` for admin, `client.pem`/`client.key` else).
pub fn identity_paths(tls_dir: &Path, role: Role) -> (PathBuf, PathBuf) {
    match role {
        Role::Admin => (admin_cert_path(tls_dir), admin_key_path(tls_dir)),
        Role::Client | Role::Node => (client_cert_path(tls_dir), client_key_path(tls_dir)),
    }
}

/// Writes a new CA, a certificate for every `(node id, host)` (flat, and in
/// its bundle `node-<id>/`), and the client and admin identities into
/// `out_dir` (created if missing). Refuses to overwrite an existing CA: a new
/// CA would lock every running node out of the cluster. Everything is
/// validated before the first file is written.
pub fn generate(out_dir: &Path, nodes: &[(NodeId, String)]) -> Result<(), CertError> {
    if nodes.is_empty() {
        return Err(CertError::NoNodes);
    }
    let mut seen = BTreeSet::new();
    for (node_id, host) in nodes {
        host_san(*node_id, host)?;
        if !seen.insert(*node_id) {
            return Err(CertError::DuplicateNodeId { node_id: *node_id });
        }
    }
    let mut taken = vec![ca_cert_path(out_dir), ca_key_path(out_dir)];
    taken.extend(nodes.iter().map(|(id, _)| node_bundle_dir(out_dir, *id)));
    for path in taken {
        if path.exists() {
            return Err(CertError::AlreadyExists { path });
        }
    }
    fs::create_dir_all(out_dir).map_err(|source| CertError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;

    let ca_key = new_key("CA")?;
    let ca_params = ca_params();
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|source| CertError::Generate {
            what: "CA".into(),
            source,
        })?;
    write_file(
        &ca_key_path(out_dir),
        ca_key.serialize_pem().as_bytes(),
        true,
    )?;
    write_file(&ca_cert_path(out_dir), ca_cert.pem().as_bytes(), false)?;
    let issuer = Issuer::new(ca_params, ca_key);

    for (node_id, host) in nodes {
        write_node(out_dir, &issuer, *node_id, host)?;
        write_node_bundle(out_dir, &node_bundle_dir(out_dir, *node_id), *node_id)?;
    }
    write_identity(out_dir, &issuer, "client", Role::Client)?;
    write_identity(out_dir, &issuer, "admin", Role::Admin)
}

/// Adds a certificate for node `node_id` at `host` to an existing TLS
/// directory, signed by its `ca.key` (for `admin add-node` workflows): the
/// pair beside the others and the bundle `node-<id>/`. Refuses to overwrite
/// an existing certificate of that node.
pub fn add_node(tls_dir: &Path, node_id: NodeId, host: &str) -> Result<(), CertError> {
    host_san(node_id, host)?;
    let cert_path = node_cert_path(tls_dir, node_id);
    let bundle = node_bundle_dir(tls_dir, node_id);
    for path in [cert_path, bundle.clone()] {
        if path.exists() {
            return Err(CertError::AlreadyExists { path });
        }
    }
    let issuer = load_issuer(tls_dir)?;
    write_node(tls_dir, &issuer, node_id, host)?;
    write_node_bundle(tls_dir, &bundle, node_id)
}

/// Issues a certificate for node `node_id` at `host` from the CA in
/// `ca_dir` into the bundle directory `out_dir` only (`ca.pem`,
/// `node-<id>.pem`, `node-<id>.key`); nothing is written to `ca_dir`.
pub fn add_node_to(
    ca_dir: &Path,
    node_id: NodeId,
    host: &str,
    out_dir: &Path,
) -> Result<(), CertError> {
    host_san(node_id, host)?;
    for path in [
        node_cert_path(out_dir, node_id),
        node_key_path(out_dir, node_id),
    ] {
        if path.exists() {
            return Err(CertError::AlreadyExists { path });
        }
    }
    let issuer = load_issuer(ca_dir)?;
    create_private_dir(out_dir)?;
    copy_ca(ca_dir, out_dir)?;
    write_node(out_dir, &issuer, node_id, host)
}

/// Issues another client identity named `name` from the CA in `ca_dir` into
/// `out_dir` (created if missing): `ca.pem` and `client.pem`/`client.key`,
/// or `admin.pem`/`admin.key` for `role` admin, so `out_dir` works as a
/// `--tls-dir`. Refuses to overwrite an existing pair.
pub fn issue_client(
    ca_dir: &Path,
    name: &str,
    role: Role,
    out_dir: &Path,
) -> Result<(), CertError> {
    validate_client_name(name)?;
    let (cert_path, key_path) = identity_paths(out_dir, role);
    for path in [cert_path, key_path] {
        if path.exists() {
            return Err(CertError::AlreadyExists { path });
        }
    }
    let issuer = load_issuer(ca_dir)?;
    create_private_dir(out_dir)?;
    copy_ca(ca_dir, out_dir)?;
    write_identity(out_dir, &issuer, name, role)
}

/// Writes the client and admin pairs into an existing TLS directory (signed
/// by its CA) when they are missing, leaving present ones alone: for a
/// directory written before identities had roles (`raftlog dev` reuses its
/// directory across versions). Returns the roles written.
pub fn ensure_identities(tls_dir: &Path) -> Result<Vec<Role>, CertError> {
    let mut written = Vec::new();
    for (name, role) in [("client", Role::Client), ("admin", Role::Admin)] {
        let (cert_path, key_path) = identity_paths(tls_dir, role);
        if cert_path.exists() || key_path.exists() {
            continue;
        }
        let issuer = load_issuer(tls_dir)?;
        write_identity(tls_dir, &issuer, name, role)?;
        written.push(role);
    }
    Ok(written)
}

/// Writes `client.pem`/`client.key` into an existing TLS directory signed by
/// its CA, replacing any previous client pair (clients hold no identity state).
pub fn regenerate_client(tls_dir: &Path) -> Result<(), CertError> {
    let issuer = load_issuer(tls_dir)?;
    write_identity(tls_dir, &issuer, "client", Role::Client)
}

fn validate_client_name(name: &str) -> Result<(), CertError> {
    let valid = !name.is_empty()
        && name.len() <= CLIENT_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(CertError::InvalidClientName {
            name: name.to_string(),
        })
    }
}

fn parse_certificate(
    cert_der: &[u8],
) -> Result<x509_parser::certificate::X509Certificate<'_>, CertError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|err| CertError::Parse {
            detail: err.to_string(),
        })?;
    Ok(cert)
}

/// The certificate's subject alternative names, if it has the extension.
fn subject_alt_names<'a>(
    cert: &'a x509_parser::certificate::X509Certificate<'_>,
) -> Result<Option<&'a x509_parser::extensions::SubjectAlternativeName<'a>>, CertError> {
    cert.subject_alternative_name()
        .map(|san| san.map(|ext| ext.value))
        .map_err(|err| CertError::Parse {
            detail: err.to_string(),
        })
}

/// The role named by a DER certificate's `raftlog:role=` URI SAN: `None`
/// when it carries none (a certificate from before roles, or a foreign
/// one). Two different roles, or an unknown role name, are refused rather
/// than guessed at.
pub fn role_of_certificate(cert_der: &[u8]) -> Result<Option<Role>, CertError> {
    let cert = parse_certificate(cert_der)?;
    let san = subject_alt_names(&cert)?;
    let mut roles = BTreeSet::new();
    if let Some(san) = san {
        for name in &san.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                if let Some(role_name) = uri.strip_prefix(ROLE_URI_PREFIX) {
                    let role = Role::from_name(role_name).ok_or_else(|| CertError::Parse {
                        detail: format!("unknown role {role_name:?} in {uri}"),
                    })?;
                    roles.insert(role);
                }
            }
        }
    }
    let mut iter = roles.iter();
    match (iter.next(), iter.next()) {
        (None, _) => Ok(None),
        (Some(role), None) => Ok(Some(*role)),
        (Some(first), Some(second)) => Err(CertError::Parse {
            detail: format!("certificate names two roles ({first} and {second})"),
        }),
    }
}

/// A DER certificate's `notAfter` as Unix seconds.
pub fn not_after_unix(cert_der: &[u8]) -> Result<i64, CertError> {
    let cert = parse_certificate(cert_der)?;
    Ok(cert.validity().not_after.timestamp())
}

/// The DNS names among a DER certificate's subject alternative names.
pub fn dns_names_of_certificate(cert_der: &[u8]) -> Result<Vec<String>, CertError> {
    let cert = parse_certificate(cert_der)?;
    let san = subject_alt_names(&cert)?;
    let mut names = Vec::new();
    if let Some(san) = san {
        for name in &san.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_string());
            }
        }
    }
    Ok(names)
}

/// The node id a DER certificate names, `None` when it names none. A
/// certificate naming two different node ids is refused as unparseable
/// rather than guessed at.
pub fn node_id_of_certificate(cert_der: &[u8]) -> Result<Option<NodeId>, CertError> {
    let ids: BTreeSet<NodeId> = dns_names_of_certificate(cert_der)?
        .iter()
        .filter_map(|name| parse_node_identity_name(name))
        .collect();
    let mut iter = ids.iter();
    match (iter.next(), iter.next()) {
        (None, _) => Ok(None),
        (Some(id), None) => Ok(Some(*id)),
        (Some(first), Some(second)) => Err(CertError::Parse {
            detail: format!("certificate names two node identities ({first} and {second})"),
        }),
    }
}

fn load_issuer(tls_dir: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
    let key_path = ca_key_path(tls_dir);
    let cert_path = ca_cert_path(tls_dir);
    let key_pem = read_string(&key_path)?;
    let cert_pem = read_string(&cert_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|source| CertError::BadCa {
        path: key_path,
        source,
    })?;
    Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|source| CertError::BadCa {
        path: cert_path,
        source,
    })
}

/// Copies `ca.pem` of `ca_dir` into `out_dir`; an existing `ca.pem` there
/// must be the same certificate (the same directory, or a copy of it).
fn copy_ca(ca_dir: &Path, out_dir: &Path) -> Result<(), CertError> {
    let source = ca_cert_path(ca_dir);
    let target = ca_cert_path(out_dir);
    let ca = read_string(&source)?;
    if target.exists() {
        if read_string(&target)? == ca {
            return Ok(());
        }
        return Err(CertError::ForeignCa {
            path: target,
            ca: source,
        });
    }
    write_file(&target, ca.as_bytes(), false)
}

/// Creates `dir` (and its parents); a directory created here is 0700, as it
/// will hold a private key.
fn create_private_dir(dir: &Path) -> Result<(), CertError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes node `node_id`'s bundle `bundle` from the files in `tls_dir`:
/// `ca.pem` and that node's pair, nothing else.
fn write_node_bundle(tls_dir: &Path, bundle: &Path, node_id: NodeId) -> Result<(), CertError> {
    create_private_dir(bundle)?;
    copy_ca(tls_dir, bundle)?;
    for (source, target, private) in [
        (
            node_cert_path(tls_dir, node_id),
            node_cert_path(bundle, node_id),
            false,
        ),
        (
            node_key_path(tls_dir, node_id),
            node_key_path(bundle, node_id),
            true,
        ),
    ] {
        let contents = read_string(&source)?;
        write_file(&target, contents.as_bytes(), private)?;
    }
    Ok(())
}

fn read_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "raftlog cluster CA");
    // Constrained(0): the CA signs leaves only, never an intermediate CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    params
}

fn set_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CERT_VALIDITY_DAYS);
}

fn leaf_params(common_name: &str, sans: Vec<SanType>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = sans;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params);
    params
}

fn write_node(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    node_id: NodeId,
    host: &str,
) -> Result<(), CertError> {
    let what = format!("node {node_id}");
    let identity =
        rcgen::string::Ia5String::try_from(node_identity_name(node_id)).map_err(|source| {
            CertError::Generate {
                what: what.clone(),
                source,
            }
        })?;
    let role = rcgen::string::Ia5String::try_from(Role::Node.uri()).map_err(|source| {
        CertError::Generate {
            what: what.clone(),
            source,
        }
    })?;
    let sans = vec![
        host_san(node_id, host)?,
        SanType::DnsName(identity),
        SanType::URI(role),
    ];
    let mut params = leaf_params(&format!("raftlog node {node_id}"), sans);
    // A node is a TLS server for clients and peers and a TLS client when it
    // dials peers, so it needs both usages.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = new_key(&what)?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| CertError::Generate { what, source })?;
    write_file(
        &node_key_path(dir, node_id),
        key.serialize_pem().as_bytes(),
        true,
    )?;
    write_file(&node_cert_path(dir, node_id), cert.pem().as_bytes(), false)
}

/// Writes a client identity `name` of `role` (client or admin) into `dir`.
fn write_identity(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    role: Role,
) -> Result<(), CertError> {
    debug_assert!(role != Role::Node, "node certificates come from write_node");
    let what = format!("{role} identity {name}");
    let generate = |source| CertError::Generate {
        what: what.clone(),
        source,
    };
    let dns = rcgen::string::Ia5String::try_from(CLIENT_IDENTITY_NAME).map_err(generate)?;
    let uri = rcgen::string::Ia5String::try_from(role.uri()).map_err(generate)?;
    let mut params = leaf_params(name, vec![SanType::DnsName(dns), SanType::URI(uri)]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = new_key(&what)?;
    let cert = params.signed_by(&key, issuer).map_err(generate)?;
    let (cert_path, key_path) = identity_paths(dir, role);
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&cert_path, cert.pem().as_bytes(), false)
}

fn new_key(what: &str) -> Result<KeyPair, CertError> {
    KeyPair::generate().map_err(|source| CertError::Generate {
        what: what.to_string(),
        source,
    })
}

/// The SAN for a node's host: an IP SAN if it parses as an IP address (with
/// or without IPv6 brackets), else a DNS SAN; reserved or malformed names are
/// refused.
fn host_san(node_id: NodeId, host: &str) -> Result<SanType, CertError> {
    if node_id == 0 {
        return Err(CertError::InvalidNodeId { node_id });
    }
    let invalid = || CertError::InvalidHost {
        node_id,
        host: host.to_string(),
    };
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid_dns = !host.is_empty()
        && host.len() <= HOST_BYTES_MAX
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid_dns {
        return Err(invalid());
    }
    let lower = host.to_ascii_lowercase();
    if lower == IDENTITY_DOMAIN || lower.ends_with(IDENTITY_SUFFIX) {
        return Err(CertError::ReservedHost {
            node_id,
            host: host.to_string(),
        });
    }
    let name = rcgen::string::Ia5String::try_from(host.to_string()).map_err(|_| invalid())?;
    Ok(SanType::DnsName(name))
}

/// Writes `contents` to `path`, private files with mode 0600 (set on open so
/// the key is never readable by others, and reset if the file existed).
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = if private { 0o600 } else { 0o644 };
        options.mode(mode);
        let mut file = options.open(path).map_err(io_err)?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err)?;
        file.write_all(contents).map_err(io_err)?;
        file.sync_all().map_err(io_err)
    }
    #[cfg(not(unix))]
    {
        let _ = private;
        let mut file = options.open(path).map_err(io_err)?;
        file.write_all(contents).map_err(io_err)?;
        file.sync_all().map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_identity_names_round_trip_and_reject_lookalikes() {
        assert_eq!(node_identity_name(7), "node-7.raftlog");
        assert_eq!(parse_node_identity_name("node-7.raftlog"), Some(7));
        assert_eq!(
            parse_node_identity_name(&node_identity_name(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "node-0.raftlog",
            "node-07.raftlog",
            "node-.raftlog",
            "node-+7.raftlog",
            "node-7.raftlog.evil",
            "xnode-7.raftlog",
            "node-18446744073709551616.raftlog",
            "client.raftlog",
        ] {
            assert_eq!(parse_node_identity_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn hosts_under_the_identity_domain_are_refused() {
        assert!(matches!(
            host_san(1, "node-2.raftlog"),
            Err(CertError::ReservedHost { .. })
        ));
        assert!(matches!(
            host_san(1, "host:7001"),
            Err(CertError::InvalidHost { .. })
        ));
        assert!(matches!(host_san(1, "[::1]"), Ok(SanType::IpAddress(_))));
        assert!(matches!(host_san(1, "db-1.lan"), Ok(SanType::DnsName(_))));
        assert!(matches!(
            host_san(0, "127.0.0.1"),
            Err(CertError::InvalidNodeId { node_id: 0 })
        ));
    }

    fn der(path: &Path) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_file(path)
            .expect("certificate")
            .to_vec()
    }

    fn files_in(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .expect("dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    /// Issue 12: each certificate carries its role; the node bundles hold
    /// the CA certificate and that node's pair only (never ca.key or
    /// another node's key); issued clients and nodes verify as the same CA.
    #[test]
    fn certificates_carry_their_role_and_bundles_hold_only_their_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = dir.path();
        generate(tls, &[(1, "127.0.0.1".into()), (2, "db-2.lan".into())]).expect("generate");
        assert_eq!(
            role_of_certificate(&der(&client_cert_path(tls))).ok(),
            Some(Some(Role::Client))
        );
        assert_eq!(
            role_of_certificate(&der(&admin_cert_path(tls))).ok(),
            Some(Some(Role::Admin))
        );
        assert_eq!(
            role_of_certificate(&der(&node_cert_path(tls, 1))).ok(),
            Some(Some(Role::Node))
        );
        assert_eq!(
            node_id_of_certificate(&der(&admin_cert_path(tls))).ok(),
            Some(None)
        );
        for id in [1, 2] {
            let bundle = node_bundle_dir(tls, id);
            let expected: BTreeSet<String> = [
                "ca.pem".to_string(),
                format!("node-{id}.pem"),
                format!("node-{id}.key"),
            ]
            .into_iter()
            .collect();
            assert_eq!(files_in(&bundle), expected);
            assert_eq!(
                fs::read(node_key_path(&bundle, id)).expect("key"),
                fs::read(node_key_path(tls, id)).expect("key")
            );
        }

        add_node(tls, 3, "127.0.0.1").expect("add node 3");
        assert_eq!(files_in(&node_bundle_dir(tls, 3)).len(), 3);
        let out = dir.path().join("node-4-out");
        add_node_to(tls, 4, "127.0.0.1", &out).expect("add node 4 elsewhere");
        assert_eq!(
            files_in(&out),
            ["ca.pem", "node-4.pem", "node-4.key"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        assert!(
            !node_cert_path(tls, 4).exists(),
            "--out writes nothing to the CA dir"
        );
        assert!(matches!(
            add_node_to(tls, 4, "127.0.0.1", &out),
            Err(CertError::AlreadyExists { .. })
        ));

        let alice = dir.path().join("alice");
        issue_client(tls, "alice", Role::Client, &alice).expect("alice");
        issue_client(tls, "alice", Role::Admin, &alice).expect("alice as admin too");
        assert_eq!(
            role_of_certificate(&der(&admin_cert_path(&alice))).ok(),
            Some(Some(Role::Admin))
        );
        assert!(matches!(
            issue_client(tls, "alice", Role::Client, &alice),
            Err(CertError::AlreadyExists { .. })
        ));
        assert!(matches!(
            issue_client(tls, "Alice!", Role::Client, &dir.path().join("x")),
            Err(CertError::InvalidClientName { .. })
        ));
        // A directory of another CA is not mixed with ours.
        let other = tempfile::tempdir().expect("tempdir");
        generate(other.path(), &[(1, "127.0.0.1".into())]).expect("other CA");
        let foreign = dir.path().join("foreign");
        fs::create_dir(&foreign).expect("mkdir");
        fs::copy(ca_cert_path(other.path()), ca_cert_path(&foreign)).expect("copy");
        assert!(matches!(
            issue_client(tls, "bob", Role::Client, &foreign),
            Err(CertError::ForeignCa { .. })
        ));
    }

    #[test]
    fn ensure_identities_adds_only_missing_pairs() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(dir.path(), &[(1, "127.0.0.1".into())]).expect("generate");
        let client_before = fs::read(client_cert_path(dir.path())).expect("client");
        fs::remove_file(admin_cert_path(dir.path())).expect("rm");
        fs::remove_file(admin_key_path(dir.path())).expect("rm");
        assert_eq!(
            ensure_identities(dir.path()).expect("ensure"),
            vec![Role::Admin]
        );
        assert_eq!(
            fs::read(client_cert_path(dir.path())).expect("client"),
            client_before
        );
        assert!(admin_cert_path(dir.path()).exists());
        assert_eq!(
            ensure_identities(dir.path()).expect("ensure"),
            Vec::<Role>::new()
        );
    }
}
