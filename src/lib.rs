//! raftlog: a replicated, append-only log service built on Raft.
//!
//! Module map (data flows one way, top to bottom):
//! - [`types`]: entries and memberships, shared by everything below.
//! - [`storage`]: the segmented, memory-mapped, checksummed log on disk.
//! - [`raft`]: the sans-IO consensus core.
//! - [`sim`]: a deterministic simulator that runs many cores in one thread.
//! - [`wire`]: binary frames of the peer and client protocols.
//! - [`net`]: QUIC endpoints and mutual TLS.
//! - [`server`]: the node runtime that drives core, storage and network.
//! - [`client`]: the async publisher and consumer library.

pub mod cli;
pub mod client;
pub mod net;
pub mod raft;
pub mod server;
pub mod sim;
pub mod storage;
pub mod types;
pub mod wire;
