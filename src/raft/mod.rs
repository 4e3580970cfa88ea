//! The sans-IO Raft consensus core.
//!
//! [`Core`] is one node's Raft state machine: the runtime (or the simulator)
//! feeds it ticks, messages, proposals and "storage synced up to N", and
//! drains a [`Ready`] of what to persist and send. No clock, no I/O, no
//! global randomness: a seeded [`SplitMix64`] draws election timeouts, so a
//! whole cluster replays from one seed. The driving contract is on [`Core`].

mod config;
mod core;
mod log;
pub mod message;
mod progress;
mod quorum;
mod rng;

pub use self::config::{Bugs, Config, ConfigError};
pub use self::core::*;
pub use self::log::{entry_bytes, ENTRY_OVERHEAD_BYTES};
pub use self::message::*;
pub use self::progress::ReplicationState;
pub use self::rng::SplitMix64;
