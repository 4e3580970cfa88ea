//! Peer links: how the runtime sends frames to other nodes and receives
//! theirs.
//!
//! Sending: [`PeerLinks::send`] never blocks. Each peer has one bounded queue
//! per [`Lane`]; a full queue drops the frame (counted, returned as an
//! error): Raft tolerates lost messages and retransmits. A task per peer
//! dials the peer lazily (on its first queued frame), keeps the connection,
//! and after a loss dials again on the next frame; failed dials back off
//! exponentially from `reconnect_backoff_min` to `reconnect_backoff_max`,
//! dropping (and counting) what was queued meanwhile so a long outage does
//! not replay stale messages. Each lane is its own QUIC stream, the control
//! stream at a higher send priority, so votes and heartbeats never wait
//! behind a replication batch (see also the window sizes in
//! [`crate::net::transport`]). Frames of one lane arrive in order while a
//! connection lasts; nothing is promised across connections.
//!
//! Peer stream format: a node sends on unidirectional streams of the
//! connections it dialed. Each stream starts with a header frame (the usual
//! u32-LE length prefix, see [`crate::net::frame`]) whose 10-byte body is
//!
//! ```text
//! version: u8 = 1 | lane: u8 (1 control, 2 replication) | sender node id: u64 LE
//! ```
//!
//! and then carries one frame per message (the body is a `wire` peer
//! message). The receiver checks that the claimed sender id equals the id
//! the sender's certificate names, else closes the connection with
//! [`close_code::PEER_ID_MISMATCH`] (counted). A bad header or frame closes
//! the connection with [`close_code::BAD_FRAME`] (counted).
//!
//! Receiving: frames from every peer connection, dialed or accepted, come
//! out of the one [`PeerInbound`] returned by [`PeerLinks::new`], as
//! `(verified sender id, body)`. It is bounded in frames
//! (`inbound_queue_frames_max`) and in bytes (`inbound_queue_bytes_max`: a
//! reader takes a frame's bytes after its length prefix, before reading the
//! body, and they return when the runtime takes the frame). When the
//! runtime lags, the readers wait, so QUIC flow control pushes back on the
//! senders instead of memory growing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::net::endpoint::Endpoint;
use crate::net::frame::{
    read_frame, read_frame_body, read_frame_length, write_frame, FrameReadError,
};
use crate::net::{close_code, NetStats};
use crate::types::NodeId;

/// Version of the peer stream header.
pub const PEER_STREAM_VERSION: u8 = 1;
/// Bytes of the peer stream header body.
pub const PEER_STREAM_HEADER_BYTES: usize = 10;
/// QUIC send priority of the control lane's stream (higher goes first).
const CONTROL_STREAM_PRIORITY: i32 = 1;
/// QUIC send priority of the replication lane's stream.
const REPLICATION_STREAM_PRIORITY: i32 = 0;

const _: () = assert!(CONTROL_STREAM_PRIORITY > REPLICATION_STREAM_PRIORITY);

/// Which stream a frame travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Votes, heartbeats, responses: small and latency-sensitive.
    Control,
    /// AppendEntries batches and snapshots: large.
    Replication,
}

impl Lane {
    fn code(self) -> u8 {
        match self {
            Lane::Control => 1,
            Lane::Replication => 2,
        }
    }

    fn from_code(code: u8) -> Option<Lane> {
        match code {
            1 => Some(Lane::Control),
            2 => Some(Lane::Replication),
            _ => None,
        }
    }
}

/// Limits of the peer links.
#[derive(Clone, Debug)]
pub struct PeerLinksConfig {
    /// Frames queued per peer on the control lane before `send` drops.
    pub control_queue_frames_max: usize,
    /// Frames queued per peer on the replication lane before `send` drops.
    /// The runtime's own pipelining window normally keeps this short.
    pub replication_queue_frames_max: usize,
    /// Frames received from all peers waiting for the runtime.
    pub inbound_queue_frames_max: usize,
    /// Body bytes of those frames, at most; at least `frame_bytes_max`.
    pub inbound_queue_bytes_max: usize,
    /// Largest frame body accepted from a peer.
    pub frame_bytes_max: usize,
    /// First wait after a failed dial.
    pub reconnect_backoff_min: Duration,
    /// Longest wait between dials of an unreachable peer.
    pub reconnect_backoff_max: Duration,
}

/// Default largest peer frame: room for a replication batch of a few MB.
pub const PEER_FRAME_BYTES_MAX_DEFAULT: usize = 32 * 1024 * 1024;
/// Default bound on the bytes of inbound frames waiting for the runtime:
/// two largest frames, or a few dozen ordinary replication batches.
pub const PEER_INBOUND_QUEUE_BYTES_MAX_DEFAULT: usize = 2 * PEER_FRAME_BYTES_MAX_DEFAULT;

impl Default for PeerLinksConfig {
    fn default() -> Self {
        PeerLinksConfig {
            control_queue_frames_max: 1024,
            replication_queue_frames_max: 64,
            inbound_queue_frames_max: 4096,
            inbound_queue_bytes_max: PEER_INBOUND_QUEUE_BYTES_MAX_DEFAULT,
            frame_bytes_max: PEER_FRAME_BYTES_MAX_DEFAULT,
            // Short enough to rejoin a restarted peer well within an election
            // timeout's order of magnitude, long enough not to spin.
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
        }
    }
}

/// Why a frame was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerSendError {
    #[error("node {to} is not a known peer")]
    UnknownPeer { to: NodeId },
    #[error("queue of the {lane:?} lane to node {to} is full; frame dropped")]
    QueueFull { to: NodeId, lane: Lane },
    #[error("the link to node {to} is shut down")]
    Closed { to: NodeId },
}

/// Invalid [`PeerLinksConfig`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerLinksConfigError {
    #[error("{field} must be at least 1")]
    Zero { field: &'static str },
    #[error("reconnect_backoff_min ({min_ms} ms) exceeds reconnect_backoff_max ({max_ms} ms)")]
    BackoffOrder { min_ms: u128, max_ms: u128 },
    #[error("inbound_queue_bytes_max ({queue_bytes}) is below frame_bytes_max ({frame_bytes}): a largest frame could never be queued")]
    InboundBytesBelowFrame {
        queue_bytes: usize,
        frame_bytes: usize,
    },
}

impl PeerLinksConfig {
    pub fn validate(&self) -> Result<(), PeerLinksConfigError> {
        for (field, value) in [
            ("control_queue_frames_max", self.control_queue_frames_max),
            (
                "replication_queue_frames_max",
                self.replication_queue_frames_max,
            ),
            ("inbound_queue_frames_max", self.inbound_queue_frames_max),
            ("inbound_queue_bytes_max", self.inbound_queue_bytes_max),
            ("frame_bytes_max", self.frame_bytes_max),
        ] {
            if value == 0 {
                return Err(PeerLinksConfigError::Zero { field });
            }
        }
        // A zero backoff would redial an unreachable peer in a busy loop.
        if self.reconnect_backoff_min.is_zero() {
            return Err(PeerLinksConfigError::Zero {
                field: "reconnect_backoff_min",
            });
        }
        if self.inbound_queue_bytes_max < self.frame_bytes_max
            || self.inbound_queue_bytes_max > Semaphore::MAX_PERMITS
        {
            return Err(PeerLinksConfigError::InboundBytesBelowFrame {
                queue_bytes: self.inbound_queue_bytes_max,
                frame_bytes: self.frame_bytes_max,
            });
        }
        if self.reconnect_backoff_min > self.reconnect_backoff_max {
            return Err(PeerLinksConfigError::BackoffOrder {
                min_ms: self.reconnect_backoff_min.as_millis(),
                max_ms: self.reconnect_backoff_max.as_millis(),
            });
        }
        Ok(())
    }
}

struct PeerHandle {
    addr: watch::Sender<Option<SocketAddr>>,
    /// Whether the peer task currently holds a working connection.
    connected: Arc<AtomicBool>,
    control: mpsc::Sender<Bytes>,
    replication: mpsc::Sender<Bytes>,
}

/// A received frame with the queue bytes it holds.
type InboundFrame = (NodeId, Bytes, OwnedSemaphorePermit);

/// The receiving end of every peer frame (see the module doc): yields
/// `(verified sender id, body)` and gives the frame's bytes back to the
/// queue's byte budget as it does.
#[derive(Debug)]
pub struct PeerInbound {
    receiver: mpsc::Receiver<InboundFrame>,
}

impl PeerInbound {
    /// The next frame; `None` once every link is gone.
    pub async fn recv(&mut self) -> Option<(NodeId, Bytes)> {
        self.receiver
            .recv()
            .await
            .map(|(node_id, frame, _permit)| (node_id, frame))
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Result<(NodeId, Bytes), mpsc::error::TryRecvError> {
        self.receiver
            .try_recv()
            .map(|(node_id, frame, _permit)| (node_id, frame))
    }
}

/// Everything the per-peer and per-connection tasks share.
#[derive(Clone)]
struct Shared {
    endpoint: Endpoint,
    config: Arc<PeerLinksConfig>,
    stats: Arc<NetStats>,
    inbound: mpsc::Sender<InboundFrame>,
    /// Bytes of the frames in `inbound` (and being read into it).
    inbound_bytes: Arc<Semaphore>,
    /// Peer connections open now, dialed and accepted (each has one
    /// [`read_connection`] task for as long as it lasts).
    open_connections: Arc<std::sync::atomic::AtomicUsize>,
}

/// The links from this node to its peers.
pub struct PeerLinks {
    shared: Shared,
    peers: Mutex<BTreeMap<NodeId, PeerHandle>>,
    /// The latest connection each peer dialed to us; an older one is closed
    /// when a newer arrives (the peer only dials again once it lost it).
    accepted: Mutex<BTreeMap<NodeId, quinn::Connection>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain maps behind that
    // are still consistent (every update is a single insert or remove).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PeerLinks {
    /// Links on `endpoint` (whose node id is the sender id we claim) and the
    /// receiver of every inbound peer frame.
    pub fn new(
        endpoint: Endpoint,
        config: PeerLinksConfig,
    ) -> Result<(PeerLinks, PeerInbound), PeerLinksConfigError> {
        config.validate()?;
        let (inbound, receiver) = mpsc::channel(config.inbound_queue_frames_max);
        let stats = endpoint.stats().clone();
        let inbound_bytes = Arc::new(Semaphore::new(config.inbound_queue_bytes_max));
        let links = PeerLinks {
            shared: Shared {
                endpoint,
                config: Arc::new(config),
                stats,
                inbound,
                inbound_bytes,
                open_connections: Arc::default(),
            },
            peers: Mutex::new(BTreeMap::new()),
            accepted: Mutex::new(BTreeMap::new()),
        };
        Ok((links, PeerInbound { receiver }))
    }

    /// Sets the peers to link to: new ids get a link, known ids whose
    /// address changed are redialed at the new one, absent ids are closed
    /// and forgotten. Our own id is ignored.
    pub fn set_peers(&self, peers: BTreeMap<NodeId, SocketAddr>) {
        let self_id = self.shared.endpoint.node_id();
        let mut current = lock(&self.peers);
        current.retain(|node_id, handle| {
            let keep = *node_id != self_id && peers.contains_key(node_id);
            if !keep {
                handle.addr.send_replace(None);
                debug!(peer = node_id, "peer link removed");
            }
            keep
        });
        for (node_id, addr) in peers {
            if node_id == self_id {
                continue;
            }
            match current.get(&node_id) {
                Some(handle) => {
                    handle.addr.send_if_modified(|old| {
                        let changed = *old != Some(addr);
                        *old = Some(addr);
                        changed
                    });
                }
                None => {
                    let handle = self.spawn_peer(node_id, addr);
                    current.insert(node_id, handle);
                }
            }
        }
        // Their handshakes take the peer budget from now on.
        self.shared
            .endpoint
            .set_peer_addrs(current.values().filter_map(|handle| *handle.addr.borrow()));
    }

    /// The peers currently linked and their addresses.
    pub fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        lock(&self.peers)
            .iter()
            .filter_map(|(node_id, handle)| handle.addr.borrow().map(|addr| (*node_id, addr)))
            .collect()
    }

    /// For each linked peer, whether its link currently holds a working
    /// connection (false until the first frame to it was sent, since links
    /// dial lazily).
    pub fn connected(&self) -> BTreeMap<NodeId, bool> {
        lock(&self.peers)
            .iter()
            .map(|(node_id, handle)| (*node_id, handle.connected.load(Ordering::Relaxed)))
            .collect()
    }

    /// Queues `frame` for node `to` on `lane` without waiting.
    pub fn send(&self, to: NodeId, lane: Lane, frame: Bytes) -> Result<(), PeerSendError> {
        let peers = lock(&self.peers);
        let handle = peers.get(&to).ok_or(PeerSendError::UnknownPeer { to })?;
        let queue = match lane {
            Lane::Control => &handle.control,
            Lane::Replication => &handle.replication,
        };
        queue.try_send(frame).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => {
                NetStats::bump(&self.shared.stats.frames_dropped_queue_full);
                PeerSendError::QueueFull { to, lane }
            }
            mpsc::error::TrySendError::Closed(_) => PeerSendError::Closed { to },
        })
    }

    /// Takes a connection the endpoint accepted from peer `node_id` (see
    /// [`crate::net::Incoming::Peer`]) and reads its frames into the inbound
    /// queue. A previous connection from the same peer is closed.
    pub fn accept_inbound(&self, node_id: NodeId, connection: quinn::Connection) {
        let previous = lock(&self.accepted).insert(node_id, connection.clone());
        if let Some(previous) = previous {
            if previous.stable_id() != connection.stable_id() {
                previous.close(close_code::REPLACED, b"replaced by a newer connection");
            }
        }
        tokio::spawn(read_connection(self.shared.clone(), node_id, connection));
    }

    /// Peer connections open now: the ones this node dialed and the ones
    /// peers dialed to it (two nodes may hold one each way).
    pub fn open_connections(&self) -> usize {
        self.shared
            .open_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes every link and accepted peer connection. `send` fails after.
    pub fn shutdown(&self) {
        for (_, handle) in std::mem::take(&mut *lock(&self.peers)) {
            handle.addr.send_replace(None);
        }
        for (_, connection) in std::mem::take(&mut *lock(&self.accepted)) {
            connection.close(close_code::NORMAL, b"shutting down");
        }
    }

    fn spawn_peer(&self, node_id: NodeId, addr: SocketAddr) -> PeerHandle {
        let config = &self.shared.config;
        let (control, control_rx) = mpsc::channel(config.control_queue_frames_max);
        let (replication, replication_rx) = mpsc::channel(config.replication_queue_frames_max);
        let (addr_tx, addr_rx) = watch::channel(Some(addr));
        let connected = Arc::new(AtomicBool::new(false));
        let task = PeerTask {
            shared: self.shared.clone(),
            connected: connected.clone(),
            peer_id: node_id,
            addr: addr_rx,
            control: control_rx,
            replication: replication_rx,
        };
        tokio::spawn(task.run());
        PeerHandle {
            addr: addr_tx,
            connected,
            control,
            replication,
        }
    }
}

impl Drop for PeerLinks {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How a connection's drive ended.
enum DriveEnd {
    /// The peer was removed or the links shut down.
    Exit,
    /// The peer's address changed: dial the new one.
    Redial,
    /// The connection broke.
    Lost(String),
}

struct PeerTask {
    shared: Shared,
    connected: Arc<AtomicBool>,
    peer_id: NodeId,
    addr: watch::Receiver<Option<SocketAddr>>,
    control: mpsc::Receiver<Bytes>,
    replication: mpsc::Receiver<Bytes>,
}

impl PeerTask {
    async fn run(mut self) {
        let config = self.shared.config.clone();
        let mut backoff = config.reconnect_backoff_min;
        // Whether the last dial worked; logs fire on changes only.
        let mut reachable = true;
        loop {
            // Lazy: dial only once there is something to send.
            let first = tokio::select! {
                changed = self.addr.changed() => {
                    if changed.is_err() || self.addr.borrow().is_none() {
                        return;
                    }
                    continue;
                }
                frame = self.control.recv() => match frame {
                    Some(frame) => (Lane::Control, frame),
                    None => return,
                },
                frame = self.replication.recv() => match frame {
                    Some(frame) => (Lane::Replication, frame),
                    None => return,
                },
            };
            let Some(addr) = *self.addr.borrow_and_update() else {
                return;
            };
            let dialed = tokio::select! {
                dialed = self.shared.endpoint.connect_peer(self.peer_id, addr) => dialed,
                changed = self.addr.changed() => {
                    if changed.is_err() || self.addr.borrow().is_none() {
                        return;
                    }
                    // A new address: drop the frame in hand and dial anew.
                    NetStats::bump(&self.shared.stats.frames_dropped_unreachable);
                    continue;
                }
            };
            match dialed {
                Ok(connection) => {
                    backoff = config.reconnect_backoff_min;
                    if !reachable {
                        info!(peer = self.peer_id, %addr, "peer reachable again");
                    } else {
                        debug!(peer = self.peer_id, %addr, "peer link connected");
                    }
                    reachable = true;
                    // The peer may also send on the connection we dialed.
                    tokio::spawn(read_connection(
                        self.shared.clone(),
                        self.peer_id,
                        connection.clone(),
                    ));
                    self.connected.store(true, Ordering::Relaxed);
                    let end = self.drive(&connection, first).await;
                    self.connected.store(false, Ordering::Relaxed);
                    match end {
                        DriveEnd::Exit => {
                            connection.close(close_code::NORMAL, b"peer link closed");
                            return;
                        }
                        DriveEnd::Redial => {
                            connection.close(close_code::NORMAL, b"peer address changed");
                        }
                        DriveEnd::Lost(reason) => {
                            let orderly = matches!(
                                connection.close_reason(),
                                Some(quinn::ConnectionError::ApplicationClosed(close))
                                    if close.error_code == close_code::NORMAL
                            );
                            if orderly {
                                // The peer is stopping (or restarting): not a
                                // fault, and redials fail until it is back.
                                info!(peer = self.peer_id, %addr, "peer closed its connection; it is stopping or restarting");
                                reachable = false;
                            } else {
                                warn!(peer = self.peer_id, %addr, %reason, "peer connection lost");
                            }
                        }
                    }
                }
                Err(err) => {
                    if reachable {
                        warn!(peer = self.peer_id, %addr, error = %err, "cannot reach peer; retrying with backoff");
                    } else {
                        debug!(peer = self.peer_id, %addr, error = %err, "peer still unreachable");
                    }
                    reachable = false;
                    NetStats::bump(&self.shared.stats.frames_dropped_unreachable);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        changed = self.addr.changed() => {
                            if changed.is_err() || self.addr.borrow().is_none() {
                                return;
                            }
                            // A new address is worth trying at once.
                            backoff = config.reconnect_backoff_min;
                        }
                    }
                    self.drop_queued();
                    backoff = backoff.saturating_mul(2).min(config.reconnect_backoff_max);
                    debug_assert!(backoff >= config.reconnect_backoff_min);
                    debug_assert!(backoff <= config.reconnect_backoff_max);
                }
            }
        }
    }

    /// Drops what was queued while the peer was unreachable.
    fn drop_queued(&mut self) {
        let stats = &self.shared.stats;
        while self.control.try_recv().is_ok() {
            NetStats::bump(&stats.frames_dropped_unreachable);
        }
        while self.replication.try_recv().is_ok() {
            NetStats::bump(&stats.frames_dropped_unreachable);
        }
    }

    /// Sends the queued frames on `connection` until it breaks, the address
    /// changes or the peer is removed.
    async fn drive(&mut self, connection: &quinn::Connection, first: (Lane, Bytes)) -> DriveEnd {
        let self_id = self.shared.endpoint.node_id();
        let mut control =
            match open_lane(connection, self_id, Lane::Control, CONTROL_STREAM_PRIORITY).await {
                Ok(stream) => stream,
                Err(reason) => return DriveEnd::Lost(reason),
            };
        let mut replication = match open_lane(
            connection,
            self_id,
            Lane::Replication,
            REPLICATION_STREAM_PRIORITY,
        )
        .await
        {
            Ok(stream) => stream,
            Err(reason) => return DriveEnd::Lost(reason),
        };
        let (first_control, first_replication) = match first {
            (Lane::Control, frame) => (Some(frame), None),
            (Lane::Replication, frame) => (None, Some(frame)),
        };
        let stats = &self.shared.stats;
        tokio::select! {
            end = pump_lane(&mut control, first_control, &mut self.control, stats) => end,
            end = pump_lane(&mut replication, first_replication, &mut self.replication, stats) => end,
            changed = self.addr.changed() => {
                if changed.is_err() || self.addr.borrow().is_none() {
                    DriveEnd::Exit
                } else {
                    DriveEnd::Redial
                }
            }
            reason = connection.closed() => DriveEnd::Lost(reason.to_string()),
        }
    }
}

/// Opens a lane's stream and writes its header.
async fn open_lane(
    connection: &quinn::Connection,
    self_id: NodeId,
    lane: Lane,
    priority: i32,
) -> Result<quinn::SendStream, String> {
    let mut stream = connection.open_uni().await.map_err(|err| err.to_string())?;
    stream
        .set_priority(priority)
        .map_err(|err| err.to_string())?;
    write_frame(&mut stream, encode_stream_header(lane, self_id))
        .await
        .map_err(|err| err.to_string())?;
    Ok(stream)
}

/// Writes `first` and then every frame of `queue` to `stream`.
async fn pump_lane(
    stream: &mut quinn::SendStream,
    first: Option<Bytes>,
    queue: &mut mpsc::Receiver<Bytes>,
    stats: &NetStats,
) -> DriveEnd {
    let mut next = first;
    loop {
        let frame = match next.take() {
            Some(frame) => frame,
            None => match queue.recv().await {
                Some(frame) => frame,
                None => {
                    let _ = stream.finish();
                    return DriveEnd::Exit;
                }
            },
        };
        if let Err(err) = write_frame(stream, frame).await {
            return DriveEnd::Lost(err.to_string());
        }
        NetStats::bump(&stats.frames_sent);
    }
}

fn encode_stream_header(lane: Lane, sender: NodeId) -> Bytes {
    let mut header = BytesMut::with_capacity(PEER_STREAM_HEADER_BYTES);
    header.put_u8(PEER_STREAM_VERSION);
    header.put_u8(lane.code());
    header.put_u64_le(sender);
    debug_assert_eq!(header.len(), PEER_STREAM_HEADER_BYTES);
    header.freeze()
}

/// A parsed peer stream header.
#[derive(Debug, PartialEq, Eq)]
struct StreamHeader {
    lane: Lane,
    sender: NodeId,
}

/// Why a peer stream header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum StreamHeaderError {
    #[error("stream header of {header_bytes} bytes, expected {PEER_STREAM_HEADER_BYTES}")]
    Length { header_bytes: usize },
    #[error("stream header version {version}, expected {PEER_STREAM_VERSION}")]
    Version { version: u8 },
    #[error("stream header names unknown lane {code}")]
    Lane { code: u8 },
}

fn decode_stream_header(body: &[u8]) -> Result<StreamHeader, StreamHeaderError> {
    let header: &[u8; PEER_STREAM_HEADER_BYTES] =
        body.try_into().map_err(|_| StreamHeaderError::Length {
            header_bytes: body.len(),
        })?;
    let [version, lane_code, id @ ..] = *header;
    if version != PEER_STREAM_VERSION {
        return Err(StreamHeaderError::Version { version });
    }
    let lane = Lane::from_code(lane_code).ok_or(StreamHeaderError::Lane { code: lane_code })?;
    Ok(StreamHeader {
        lane,
        sender: u64::from_le_bytes(id),
    })
}

/// Reads every stream `node_id` opens on `connection` until it closes.
async fn read_connection(shared: Shared, node_id: NodeId, connection: quinn::Connection) {
    struct Open(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    shared
        .open_connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _open = Open(shared.open_connections.clone());
    while let Ok(stream) = connection.accept_uni().await {
        tokio::spawn(read_stream(
            shared.clone(),
            node_id,
            connection.clone(),
            stream,
        ));
    }
}

/// Checks a peer stream's header, then forwards its frames to the runtime.
async fn read_stream(
    shared: Shared,
    node_id: NodeId,
    connection: quinn::Connection,
    mut stream: quinn::RecvStream,
) {
    let remote = connection.remote_address();
    let bad_frame = |detail: String| {
        NetStats::bump(&shared.stats.frame_errors);
        warn!(peer = node_id, %remote, %detail, "bad frame from peer; closing the connection");
        connection.close(close_code::BAD_FRAME, b"bad frame");
    };
    let header = match read_frame(&mut stream, PEER_STREAM_HEADER_BYTES).await {
        Ok(Some(body)) => match decode_stream_header(&body) {
            Ok(header) => header,
            Err(err) => return bad_frame(err.to_string()),
        },
        Ok(None) | Err(FrameReadError::Read(_)) => return,
        Err(err) => return bad_frame(err.to_string()),
    };
    if header.sender != node_id {
        NetStats::bump(&shared.stats.peers_refused_id_mismatch);
        warn!(
            certificate_node_id = node_id,
            claimed_node_id = header.sender,
            %remote,
            "refusing peer: claimed node id differs from its certificate"
        );
        connection.close(
            close_code::PEER_ID_MISMATCH,
            b"claimed node id differs from the certificate",
        );
        return;
    }
    debug!(peer = node_id, lane = ?header.lane, "peer stream opened");
    loop {
        let body_bytes = match read_frame_length(&mut stream, shared.config.frame_bytes_max).await {
            Ok(Some(body_bytes)) => body_bytes,
            // A clean end or a lost connection: nothing to blame the peer for.
            Ok(None) | Err(FrameReadError::Read(_)) => return,
            Err(err) => return bad_frame(err.to_string()),
        };
        // Validated: frame_bytes_max <= inbound_queue_bytes_max <= MAX_PERMITS.
        let permits = u32::try_from(body_bytes).unwrap_or(u32::MAX);
        let Ok(permit) = shared
            .inbound_bytes
            .clone()
            .acquire_many_owned(permits)
            .await
        else {
            return; // the links are gone
        };
        match read_frame_body(&mut stream, body_bytes).await {
            Ok(frame) => {
                if shared.inbound.send((node_id, frame, permit)).await.is_err() {
                    return; // the runtime is gone
                }
                NetStats::bump(&shared.stats.frames_received);
            }
            Err(FrameReadError::Read(_)) => return,
            Err(err) => return bad_frame(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_headers_round_trip_and_bad_ones_are_typed_errors() {
        let header = encode_stream_header(Lane::Replication, 42);
        assert_eq!(
            decode_stream_header(&header),
            Ok(StreamHeader {
                lane: Lane::Replication,
                sender: 42
            })
        );
        assert_eq!(
            decode_stream_header(&header[..9]),
            Err(StreamHeaderError::Length { header_bytes: 9 })
        );
        let mut bad_version = header.to_vec();
        bad_version[0] = 9;
        assert_eq!(
            decode_stream_header(&bad_version),
            Err(StreamHeaderError::Version { version: 9 })
        );
        let mut bad_lane = header.to_vec();
        bad_lane[1] = 0;
        assert_eq!(
            decode_stream_header(&bad_lane),
            Err(StreamHeaderError::Lane { code: 0 })
        );
    }

    #[test]
    fn zero_limits_are_refused() {
        let config = PeerLinksConfig {
            inbound_queue_frames_max: 0,
            ..PeerLinksConfig::default()
        };
        assert_eq!(
            config.validate(),
            Err(PeerLinksConfigError::Zero {
                field: "inbound_queue_frames_max"
            })
        );
        assert_eq!(PeerLinksConfig::default().validate(), Ok(()));
        let config = PeerLinksConfig {
            inbound_queue_bytes_max: 1024,
            frame_bytes_max: 1025,
            ..PeerLinksConfig::default()
        };
        assert_eq!(
            config.validate(),
            Err(PeerLinksConfigError::InboundBytesBelowFrame {
                queue_bytes: 1024,
                frame_bytes: 1025
            })
        );
    }
}
