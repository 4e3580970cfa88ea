//! The QUIC transport parameters, tuned for a cluster on one LAN.
//!
//! Assumptions: round trips well under a millisecond up to a few ms, links of
//! 1-25 Gbit/s, replication batches of a few MB pipelined several deep, and a
//! Raft election timeout of 150-300 ms.
//!
//! Two configs: [`lan_transport_config`] for peer links (and for every
//! connection we dial), and [`client_transport_config`] for connections the
//! node accepts from anything but a member's address. A client's windows and
//! stream counts bound what one connection can make the node hold; the
//! endpoint picks the config per connection before the handshake (see
//! [`crate::net::endpoint`]).

use std::sync::Arc;
use std::time::Duration;

use quinn::congestion::CubicConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};

/// Per-stream receive window. One replication stream per peer connection
/// carries pipelined AppendEntries batches of a few MB: 16 MiB lets about
/// four 4 MiB batches be in flight before the sender waits for the reader,
/// i.e. about 13 ms of a 10 Gbit/s link, far above a LAN's bandwidth-delay
/// product (1.25 MB at 1 ms), so the window never throttles a healthy link.
pub const STREAM_RECEIVE_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Connection receive window: the replication stream plus room for the
/// control stream and client streams, so a full replication stream can never
/// use up the connection credit the control stream needs.
pub const CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 4 * STREAM_RECEIVE_WINDOW_BYTES;
/// Unacknowledged bytes a sender keeps in flight per connection. Larger than
/// one stream window so a stalled replication stream cannot block control
/// frames on the same connection.
pub const SEND_WINDOW_BYTES: u64 = 4 * STREAM_RECEIVE_WINDOW_BYTES as u64;
/// Concurrent bidirectional streams a remote may open: client requests
/// (appends in flight, consumer subscriptions) each take one; a publisher
/// window of 64 plus consumers and admin calls fits comfortably.
pub const BIDI_STREAMS_CONCURRENT_MAX: u32 = 256;
/// Concurrent unidirectional streams a remote may open: a peer link opens two
/// (control and replication lanes); a little headroom for reconnect overlap.
pub const UNI_STREAMS_CONCURRENT_MAX: u32 = 16;
/// Keep-alive: an idle peer link still exchanges a packet this often, so the
/// idle timeout below only fires on a real loss of the remote.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// A connection with no packet from the remote for this long is dead. A few
/// keep-alives must be missed (so a loaded machine is not mistaken for a dead
/// one), yet it is short enough that a restarted peer is redialed quickly.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// The RTT assumed before the first sample. quinn's default (333 ms) is an
/// Internet figure; on a LAN it makes the first lost handshake packet wait
/// about a second. 10 ms still covers a loaded host's scheduling delay.
pub const INITIAL_RTT: Duration = Duration::from_millis(10);
/// Cubic's initial congestion window. On a LAN a 4 MiB batch at the default
/// (about 14 KB) would need many round trips of slow start after every
/// idle period; 1 MiB starts near link speed and is still small next to a
/// switch's buffers.
pub const CONGESTION_WINDOW_INITIAL_BYTES: u64 = 1024 * 1024;

/// Per-stream receive window of a client connection: a publisher's append
/// stream or a consumer's request. 1 MiB at a LAN round trip of 0.5 ms
/// still carries 2 GB/s per stream; a larger frame simply takes several
/// window updates.
pub const CLIENT_STREAM_RECEIVE_WINDOW_BYTES: u32 = 1024 * 1024;
/// Receive window of a whole client connection: the most a client can make
/// the node buffer below the application (sent, not yet read) on one
/// connection. With [`CLIENT_STREAMS_PER_CONNECTION_MAX`] streams it is what
/// stalled streams share, not a per-stream figure.
pub const CLIENT_CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 2 * CLIENT_STREAM_RECEIVE_WINDOW_BYTES;
/// Unacknowledged bytes the node keeps in flight to one client: consumer
/// batches (1 MiB each) two deep.
pub const CLIENT_SEND_WINDOW_BYTES: u64 = 2 * 1024 * 1024;
/// Concurrent bidirectional streams one client connection may open. A
/// publisher uses one stream for all its appends, a consumer one, status and
/// admin calls one each: 64 leaves room for a process running many of them
/// on one connection. More waits in the client's QUIC stack (flow control
/// on stream ids), it is never refused.
pub const CLIENT_STREAMS_PER_CONNECTION_MAX: u32 = 64;

/// Keep-alive of a connection a client dials: the node answers each PING
/// with an ACK, so a live node is heard from this often even when the
/// client's streams are quiet (a consumer following an idle log).
pub const CLIENT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(50);
/// A client gives up on a node it has heard nothing from for this long:
/// about one election timeout (150-300 ms by default), so a publisher or a
/// consumer whose node died moves on in the time the cluster takes to elect
/// a new leader, instead of after the peer links' [`IDLE_TIMEOUT`]. The
/// effective timeout is the smaller of both sides', so the node's own longer
/// one does not matter. A false alarm (a node stalled this long) costs a
/// reconnect and a resend, which the producer sequences and the consumer's
/// cursor make harmless. It also bounds a handshake with a dead node.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_millis(250);

const _: () =
    assert!(CLIENT_KEEP_ALIVE_INTERVAL.as_millis() * 4 <= CLIENT_IDLE_TIMEOUT.as_millis());
const _: () = assert!(STREAM_RECEIVE_WINDOW_BYTES as u64 * 2 <= SEND_WINDOW_BYTES);
const _: () = assert!(CLIENT_STREAM_RECEIVE_WINDOW_BYTES <= CLIENT_CONNECTION_RECEIVE_WINDOW_BYTES);
const _: () = assert!(CLIENT_CONNECTION_RECEIVE_WINDOW_BYTES <= CONNECTION_RECEIVE_WINDOW_BYTES);
const _: () = assert!(CLIENT_STREAMS_PER_CONNECTION_MAX <= BIDI_STREAMS_CONCURRENT_MAX);
const _: () = assert!(STREAM_RECEIVE_WINDOW_BYTES < CONNECTION_RECEIVE_WINDOW_BYTES);
const _: () = assert!(KEEP_ALIVE_INTERVAL.as_millis() * 4 <= IDLE_TIMEOUT.as_millis());

/// The transport config used on both sides of every connection.
///
/// Choices not covered by the constants: Cubic stays the congestion
/// controller (BBR in quinn is experimental; on a LAN without competing
/// traffic Cubic with a large initial window reaches line rate quickly);
/// MTU discovery stays on (quinn's default), which finds jumbo frames or the
/// 1500-byte Ethernet MTU instead of QUIC's 1200-byte floor; unreliable
/// datagrams are switched off because neither protocol uses them, so a
/// remote cannot make us buffer any.
pub fn lan_transport_config() -> Arc<TransportConfig> {
    let mut config = TransportConfig::default();
    config
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW_BYTES))
        .send_window(SEND_WINDOW_BYTES)
        .max_concurrent_bidi_streams(VarInt::from_u32(BIDI_STREAMS_CONCURRENT_MAX))
        .max_concurrent_uni_streams(VarInt::from_u32(UNI_STREAMS_CONCURRENT_MAX));
    set_lan_timing(&mut config);
    Arc::new(config)
}

/// The transport config of a connection accepted from a non-member address
/// (a client, or now and then a peer whose source address we do not know
/// yet): the LAN timing of [`lan_transport_config`] with the client windows
/// and stream counts. No unidirectional streams: the client protocol has
/// none; the endpoint grants a peer's two lanes once its certificate showed
/// it is one.
pub fn client_transport_config() -> Arc<TransportConfig> {
    let mut config = TransportConfig::default();
    config
        .stream_receive_window(VarInt::from_u32(CLIENT_STREAM_RECEIVE_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(CLIENT_CONNECTION_RECEIVE_WINDOW_BYTES))
        .send_window(CLIENT_SEND_WINDOW_BYTES)
        .max_concurrent_bidi_streams(VarInt::from_u32(CLIENT_STREAMS_PER_CONNECTION_MAX))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    set_lan_timing(&mut config);
    Arc::new(config)
}

/// The transport config of a connection a client dials to a node: the LAN
/// windows (consume batches flow towards the client) with the client's
/// short keep-alive and idle timeout.
pub fn client_dial_transport_config() -> Arc<TransportConfig> {
    let mut config = TransportConfig::default();
    config
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW_BYTES))
        .send_window(SEND_WINDOW_BYTES)
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    set_timing(&mut config, CLIENT_KEEP_ALIVE_INTERVAL, CLIENT_IDLE_TIMEOUT);
    Arc::new(config)
}

/// Keep-alive, timeouts, initial RTT and congestion control shared by the
/// node's configs.
fn set_lan_timing(config: &mut TransportConfig) {
    set_timing(config, KEEP_ALIVE_INTERVAL, IDLE_TIMEOUT);
}

fn set_timing(config: &mut TransportConfig, keep_alive: Duration, idle_timeout: Duration) {
    config
        .keep_alive_interval(Some(keep_alive))
        .initial_rtt(INITIAL_RTT)
        .datagram_receive_buffer_size(None);
    // The timeouts are at most a few seconds, far inside IdleTimeout's 2^62
    // ms range, so this conversion cannot fail; None would mean "never".
    if let Ok(idle) = IdleTimeout::try_from(idle_timeout) {
        config.max_idle_timeout(Some(idle));
    }
    let mut cubic = CubicConfig::default();
    cubic.initial_window(CONGESTION_WINDOW_INITIAL_BYTES);
    config.congestion_controller_factory(Arc::new(cubic));
}
