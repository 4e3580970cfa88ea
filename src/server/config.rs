//! Everything a node needs to know to start, already validated.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::types::NodeId;

/// How a node treats durability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// An entry counts toward a majority only after this node synced it.
    Always,
    /// Never sync the log; a machine crash can lose acknowledged records.
    Never,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// The initial voters other than this node (used only to bootstrap an empty data dir,
    /// or, with `join`, as the nodes to ask for the leader).
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    pub tls_dir: PathBuf,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub heartbeat_interval: Duration,
    pub fsync: Fsync,
    pub segment_bytes: u64,
    pub retention_bytes: Option<u64>,
    pub retention: Option<Duration>,
    /// Serve publish, consume and status to callers without a client
    /// certificate (never admin requests). Off by default: every request
    /// needs a certificate of the cluster CA.
    pub allow_anonymous_clients: bool,
    pub join: bool,
    pub record_bytes_max: u64,
    pub producer_expiry: Duration,
    pub metrics_listen: Option<SocketAddr>,
}

/// Defaults, as documented in `raftlog serve --help` and the CLI contract.
pub const ELECTION_TIMEOUT_MIN_DEFAULT: Duration = Duration::from_millis(150);
pub const ELECTION_TIMEOUT_MAX_DEFAULT: Duration = Duration::from_millis(300);
pub const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_millis(50);
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
pub const RECORD_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;
/// The largest `--max-record-bytes` accepted: one record must fit in one
/// client frame with room for the request header.
pub const RECORD_BYTES_CEILING: u64 = crate::wire::RECORD_BYTES_MAX_LIMIT;
pub const PRODUCER_EXPIRY_DEFAULT: Duration = Duration::from_secs(600);
/// One logical tick of the consensus core; timeouts are whole numbers of ticks.
pub const TICK_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required option --{0}")]
    Missing(&'static str),
    #[error("--{option}: {reason}")]
    Invalid {
        option: &'static str,
        reason: String,
    },
}

impl ServerConfig {
    /// Checks how the settings relate; each failure names the option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |option, reason: String| Err(ConfigError::Invalid { option, reason });
        if self.id == 0 {
            return invalid("id", "node id 0 is reserved; ids start at 1".into());
        }
        if self.election_timeout_min < TICK_INTERVAL * 2
            || self.election_timeout_min >= self.election_timeout_max
        {
            return invalid(
                "election-timeout-ms",
                format!("need {}ms <= MIN < MAX", (TICK_INTERVAL * 2).as_millis()),
            );
        }
        if self.heartbeat_interval < TICK_INTERVAL
            || self.heartbeat_interval >= self.election_timeout_min
        {
            return invalid(
                "heartbeat-ms",
                format!(
                    "must be at least {}ms and below the minimum election timeout",
                    TICK_INTERVAL.as_millis()
                ),
            );
        }
        if self.record_bytes_max == 0 || self.record_bytes_max > RECORD_BYTES_CEILING {
            return invalid(
                "max-record-bytes",
                format!("must be between 1 and {}", RECORD_BYTES_CEILING),
            );
        }
        // Any size works with any record limit: a record larger than a
        // segment gets a segment of its own (storage-format.md 2.2).
        let segment_bytes_range =
            crate::storage::SEGMENT_BYTES_MIN..=crate::storage::SEGMENT_BYTES_MAX;
        if !segment_bytes_range.contains(&self.segment_bytes) {
            return invalid(
                "segment-bytes",
                format!(
                    "must be between {} and {}",
                    segment_bytes_range.start(),
                    segment_bytes_range.end()
                ),
            );
        }
        if self.peers.values().any(|addr| addr.is_empty()) {
            return invalid("peer", "a peer has an empty address".into());
        }
        Ok(())
    }
}
