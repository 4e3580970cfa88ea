//! The node runtime: drives the consensus core, the storage engine and the
//! network with tokio.

pub mod config;
pub mod metrics;
pub mod producers;
