//! raft: the sans-IO consensus core (under construction).

pub mod message;

pub use message::*;
