//! Configuration of one consensus core, validated before use.

use crate::types::NodeId;

/// Tunables of one core. Times are in ticks: the runtime calls
/// `Core::tick()` at a fixed interval (10 ms by default, so the default
/// election timeout is 150..300 ms as in the Raft paper).
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; never 0.
    pub id: NodeId,
    /// Election timeouts are drawn uniformly from
    /// `election_ticks_min..election_ticks_max` after every reset.
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
    /// A leader sends heartbeats this often; must be below `election_ticks_min`.
    pub heartbeat_ticks: u64,
    /// AppendEntries messages carrying entries in flight to one follower.
    pub inflight_messages_max: usize,
    /// Entry bytes (payload plus a fixed overhead) in flight to one follower.
    pub inflight_bytes_max: u64,
    /// Entries in one AppendEntries.
    pub append_entries_max: usize,
    /// Entry bytes in one AppendEntries (at least one entry is always sent).
    pub append_bytes_max: u64,
    /// Bytes of entries appended but not yet persisted locally that a leader
    /// accepts before `propose` refuses with backpressure.
    pub unpersisted_bytes_max: u64,
    /// Run a pre-vote round before raising the term (thesis §9.6).
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum within an
    /// election timeout, and voters ignore campaigns while a leader is live.
    pub check_quorum: bool,
    /// Deliberately broken rules, for mutation tests of the simulator only.
    #[doc(hidden)]
    pub bugs: Bugs,
}

/// Switches that break one Raft rule each; all off unless a mutation test
/// turns one on to show the simulator notices.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Commit an entry of an older term by counting replicas (Figure 8),
    /// and skip the new leader's no-op that makes the rule unnecessary.
    pub commit_old_term_by_counting: bool,
    /// Grant a vote even after voting for someone else in the same term.
    pub double_vote: bool,
    /// Grant votes without the up-to-date log check (§5.4.1).
    pub vote_without_log_check: bool,
    /// Acknowledge entries before they are persisted.
    pub ack_unpersisted: bool,
    /// Vote and campaign while repairing a damaged log.
    pub vote_while_repairing: bool,
    /// On an InstallLogStart above the commit index, drop the follower's
    /// entries above the boundary even where they match the leader's
    /// (review finding 1: can lose an entry the follower acknowledged).
    pub install_log_start_drops_matching_suffix: bool,
    /// A node that lost its hard state fences with any term report: one
    /// from an earlier incarnation's probe, or a later report lowering an
    /// earlier one (review finding 2: can vote twice in one term).
    pub term_probe_accepts_stale_reports: bool,
    /// A leader treats a reject at exactly a follower's match index as
    /// stale (review finding 3: an idle leader never refills a follower
    /// that lost entries).
    pub reject_at_match_index_is_stale: bool,
    /// Heartbeats and commit notices carry `prev = next_index - 1` (what
    /// was sent) instead of what was acknowledged, so they overtake the
    /// batches they refer to (review finding 4: needless fall-backs to Probe).
    pub heartbeat_prev_is_next_index: bool,
}

impl Bugs {
    /// True if any rule is broken on purpose: the core's assertions of the
    /// rules a mutation breaks stand aside, so that the simulator, not a
    /// panic, reports the violation the mutation causes.
    pub fn any(&self) -> bool {
        *self != Bugs::default()
    }
}

/// The default tick is 10 ms; 15..30 ticks is the paper's 150..300 ms.
pub const ELECTION_TICKS_MIN_DEFAULT: u64 = 15;
pub const ELECTION_TICKS_MAX_DEFAULT: u64 = 30;
pub const HEARTBEAT_TICKS_DEFAULT: u64 = 3;

impl Config {
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_ticks_min: ELECTION_TICKS_MIN_DEFAULT,
            election_ticks_max: ELECTION_TICKS_MAX_DEFAULT,
            heartbeat_ticks: HEARTBEAT_TICKS_DEFAULT,
            inflight_messages_max: 64,
            inflight_bytes_max: 32 << 20,
            append_entries_max: 4096,
            append_bytes_max: 1 << 20,
            unpersisted_bytes_max: 256 << 20,
            pre_vote: true,
            check_quorum: true,
            bugs: Bugs::default(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        if self.election_ticks_min == 0 || self.election_ticks_max <= self.election_ticks_min {
            return Err(ConfigError::ElectionTicks {
                min: self.election_ticks_min,
                max: self.election_ticks_max,
            });
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks_min {
            return Err(ConfigError::HeartbeatTicks {
                heartbeat: self.heartbeat_ticks,
                election_min: self.election_ticks_min,
            });
        }
        let zero = [
            ("inflight_messages_max", self.inflight_messages_max as u64),
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("append_entries_max", self.append_entries_max as u64),
            ("append_bytes_max", self.append_bytes_max),
            ("unpersisted_bytes_max", self.unpersisted_bytes_max),
        ];
        for (field, value) in zero {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { field });
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("node id 0 is reserved")]
    ZeroNodeId,
    #[error("election ticks must satisfy 0 < min < max, got {min}..{max}")]
    ElectionTicks { min: u64, max: u64 },
    #[error("heartbeat ticks ({heartbeat}) must be in 1..election_ticks_min ({election_min})")]
    HeartbeatTicks { heartbeat: u64, election_min: u64 },
    #[error("limit {field} is 0; zero never means unlimited")]
    ZeroLimit { field: &'static str },
}
