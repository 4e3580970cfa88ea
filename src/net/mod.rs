//! net: QUIC transport with mutual TLS, shared by peers and clients.
//!
//! One quinn endpoint per node on one UDP address serves both protocols; ALPN
//! tells them apart ([`tls::ALPN_PEER`], [`tls::ALPN_CLIENT`]). This module
//! moves opaque frames; `wire` gives the bodies their meaning.
//!
//! - [`certs`]: the cluster CA and the node/client/admin certificates, the
//!   identity scheme (`node-<id>.raftlog`) a node certificate carries, and
//!   the role (`raftlog:role=node|client|admin`) every certificate carries.
//! - [`tls`]: a `--tls-dir` loaded into rustls configs (reloadable on a
//!   running endpoint, [`Endpoint::reload_tls`]).
//! - [`transport`]: the quinn transport parameters tuned for a LAN.
//! - [`frame`]: u32-LE length-prefixed frames on QUIC streams.
//! - [`endpoint`]: binding, the accept loop that sorts connections into
//!   verified peers and clients, and client-side dialing.
//! - [`peers`]: lazily dialed, self-healing peer links with a control lane
//!   and a replication lane, and one inbound frame queue.
//!
//! Invariants: a connection handed to the runtime as a peer carries a CA-
//! signed certificate naming exactly the node id it is labelled with; a
//! client connection carries the verified identity (role) of its
//! certificate, or none, and the runtime authorizes each request by it;
//! nothing a remote sends can panic this module or make it buffer without a
//! bound; every refusal is counted in [`NetStats`] and logged.

pub mod certs;
pub mod endpoint;
pub mod frame;
pub mod peers;
pub mod tls;
pub mod transport;

use std::sync::atomic::{AtomicU64, Ordering};

pub use endpoint::{
    connect_client, connect_client_any, connect_client_from, ClientEndpoints, ClientIdentity,
    Endpoint, Incoming, IncomingConnections, NetError,
};
pub use frame::{
    read_frame, read_frame_body, read_frame_length, write_frame, FrameReadError, FrameWriteError,
};
pub use peers::{
    Lane, PeerInbound, PeerLinks, PeerLinksConfig, PeerLinksConfigError, PeerSendError,
};
pub use tls::{ClientTls, NodeTls, TlsError, ALPN_CLIENT, ALPN_PEER};

/// QUIC application error codes this module closes connections with.
///
/// The net layer owns 0x100..=0x1ff; the protocols above use other values.
pub mod close_code {
    use quinn::VarInt;

    /// Orderly close (shutdown, peer removed from the membership).
    pub const NORMAL: VarInt = VarInt::from_u32(0);
    /// A peer-ALPN connection without a certificate naming a node id.
    pub const PEER_NOT_NODE: VarInt = VarInt::from_u32(0x101);
    /// The node id a peer claimed differs from the one its certificate names.
    pub const PEER_ID_MISMATCH: VarInt = VarInt::from_u32(0x102);
    /// A malformed, truncated or oversized frame (or stream header).
    pub const BAD_FRAME: VarInt = VarInt::from_u32(0x103);
    /// A newer connection from the same peer replaced this one.
    pub const REPLACED: VarInt = VarInt::from_u32(0x104);
    /// The negotiated ALPN is not one we serve (cannot happen with rustls'
    /// ALPN enforcement; kept as a guard).
    pub const UNKNOWN_ALPN: VarInt = VarInt::from_u32(0x105);
    /// A certificate that passed the CA check but cannot be parsed.
    pub const BAD_CERTIFICATE: VarInt = VarInt::from_u32(0x106);
    /// The node already serves as many client connections as it allows.
    pub const CLIENT_CONNECTIONS_FULL: VarInt = VarInt::from_u32(0x107);
}

macro_rules! net_counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live counters of the transport, shared by the endpoint and the
        /// peer links. Read them with [`NetStats::snapshot`].
        #[derive(Debug, Default)]
        pub struct NetStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of [`NetStats`] at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
        pub struct NetCounters {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl NetStats {
            pub fn snapshot(&self) -> NetCounters {
                NetCounters {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

net_counters! {
    /// Inbound connections accepted as verified peers.
    peers_accepted,
    /// Inbound connections accepted as clients.
    clients_accepted,
    /// Inbound handshakes that failed (bad certificate, no common ALPN,
    /// timeout, ...).
    handshakes_failed,
    /// Inbound connection attempts from non-member addresses refused
    /// because the client handshake budget was used up.
    handshakes_refused_busy,
    /// Inbound connection attempts from members' addresses refused because
    /// the peer handshake budget was used up.
    peer_handshakes_refused_busy,
    /// Inbound connection attempts answered with a QUIC Retry to prove
    /// their source address first.
    handshakes_retried,
    /// Peer-ALPN connections closed because the certificate names no node.
    peers_refused_not_node,
    /// Peer connections closed because the claimed id differs from the
    /// certificate's.
    peers_refused_id_mismatch,
    /// Connections closed for an ALPN we do not serve or an unparseable
    /// certificate.
    connections_refused_other,
    /// Outbound peer dials that produced a connection.
    peer_dials_succeeded,
    /// Outbound peer dials that failed (unreachable, timeout, TLS).
    peer_dials_failed,
    /// Outbound peer dials whose TLS handshake failed, e.g. because the
    /// remote's certificate does not name the node id we dialed.
    peer_dials_refused_tls,
    /// Frames handed to `PeerLinks::send` and dropped because that peer's
    /// lane queue was full.
    frames_dropped_queue_full,
    /// Queued frames dropped because the peer could not be reached.
    frames_dropped_unreachable,
    /// Frames written to peer streams.
    frames_sent,
    /// Frames received from peers and handed to the runtime.
    frames_received,
    /// Malformed, truncated or oversized frames (or stream headers) received;
    /// each closes its connection.
    frame_errors,
}

impl NetStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
