//! Types shared by the storage engine, the consensus core and the wire codecs.
//!
//! Only plain data lives here: what an entry is and what a cluster membership
//! is. Each module that stores or sends them owns its own byte layout, except
//! the membership, whose encoding is shared because it is the payload of a
//! config entry (stored and replicated) and also part of the log-start file.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A node's identity in the cluster; never 0.
pub type NodeId = u64;
/// A Raft term; 0 means "before any term".
pub type Term = u64;
/// A position in the log; entries start at index 1, 0 means "before the log".
pub type LogIndex = u64;

/// The highest term a node accepts from a peer or from its disk. No honest
/// cluster gets near it (a new term every millisecond would take 146
/// million years), and below it `term + 1` never overflows.
pub const TERM_MAX: Term = 1 << 62;

/// The highest log index a node accepts from a peer, a client or its disk;
/// far beyond any real log, it keeps index arithmetic (`first + count`)
/// clear of overflow.
pub const LOG_INDEX_MAX: LogIndex = 1 << 62;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// A record appended by a publisher.
    Data = 1,
    /// A membership change: the payload is an encoded [`Membership`].
    Config = 2,
    /// The empty entry a new leader appends to commit entries of older terms.
    Noop = 3,
}

impl EntryKind {
    pub fn from_u8(value: u8) -> Option<EntryKind> {
        match value {
            1 => Some(EntryKind::Data),
            2 => Some(EntryKind::Config),
            3 => Some(EntryKind::Noop),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Data => "data",
            EntryKind::Config => "config",
            EntryKind::Noop => "noop",
        }
    }
}

/// The exactly-once tag of a data entry: which producer wrote it and its
/// sequence number in that producer's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProducerSeq {
    pub producer_id: u64,
    pub sequence: u64,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: LogIndex,
    pub term: Term,
    pub kind: EntryKind,
    pub producer: Option<ProducerSeq>,
    pub payload: Bytes,
}

impl Entry {
    pub fn data(index: LogIndex, term: Term, payload: Bytes) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Data,
            producer: None,
            payload,
        }
    }

    pub fn noop(index: LogIndex, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Noop,
            producer: None,
            payload: Bytes::new(),
        }
    }
}

/// The state Raft requires to be durable before a node answers a message
/// that depends on it: the current term and the vote cast in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
}

/// Where a node's log begins: entries below `first_index` were dropped by
/// retention (or never received, after a reset to the leader's log start).
/// `prev_term` is the term of entry `first_index - 1` (0 when `first_index`
/// is 1), needed for the AppendEntries consistency check at the boundary;
/// `membership` is the configuration in force at that point, so a node whose
/// log starts after the last config entry still knows its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStart {
    pub first_index: LogIndex,
    pub prev_term: Term,
    pub membership: Membership,
    /// The server's exactly-once producer table as of `first_index - 1`
    /// (`server::producers`), so retention and a follower reset do not
    /// forget the producers of the entries they drop. Opaque to the core and
    /// the storage engine, which keep and send it as given; empty for none.
    pub producers: Bytes,
}

impl LogStart {
    /// The start of a brand-new log whose first configuration is `membership`.
    pub fn initial(membership: Membership) -> LogStart {
        LogStart {
            first_index: 1,
            prev_term: 0,
            membership,
            producers: Bytes::new(),
        }
    }
}

/// Where the records of one append landed, in request order: runs of
/// consecutive indexes. One run in the common case; a re-sent batch whose
/// records were first appended in several batches (interleaved with other
/// producers), or that is partly in the log and partly new, has several.
///
/// Invariant (kept by the constructors): every run has at least one record
/// and `first_index >= 1`, and no index passes [`LOG_INDEX_MAX`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendedIndexes {
    /// `(first_index, count)`, in request order.
    runs: Vec<(LogIndex, u64)>,
}

impl AppendedIndexes {
    /// `first..=last`, one record each; `None` unless `1 <= first <= last <= LOG_INDEX_MAX`.
    pub fn contiguous(first: LogIndex, last: LogIndex) -> Option<AppendedIndexes> {
        let mut indexes = AppendedIndexes::default();
        indexes.push_run(first, last.checked_sub(first)?.checked_add(1)?)?;
        Some(indexes)
    }

    /// Appends `count` records at `first_index..first_index + count`, merged
    /// with the last run when it continues it. `None` (and no change) when
    /// `count` is 0 or an index would be 0 or pass [`LOG_INDEX_MAX`].
    pub fn push_run(&mut self, first_index: LogIndex, count: u64) -> Option<()> {
        if first_index == 0 || count == 0 {
            return None;
        }
        let end = first_index.checked_add(count)?;
        if end - 1 > LOG_INDEX_MAX {
            return None;
        }
        match self.runs.last_mut() {
            Some((first, run_count)) if first.checked_add(*run_count) == Some(first_index) => {
                // No overflow: the merged run ends at `end - 1 <= LOG_INDEX_MAX`.
                *run_count += count;
            }
            _ => self.runs.push((first_index, count)),
        }
        Some(())
    }

    /// `(first_index, count)` of each run, in request order.
    pub fn runs(&self) -> &[(LogIndex, u64)] {
        &self.runs
    }

    /// The number of records.
    pub fn count(&self) -> u64 {
        // No overflow: each run's indexes are distinct values up to LOG_INDEX_MAX.
        self.runs.iter().map(|&(_, count)| count).sum()
    }

    /// `Some((first, last))` when the records are at one range of indexes.
    pub fn as_range(&self) -> Option<(LogIndex, LogIndex)> {
        match self.runs.as_slice() {
            [(first, count)] => Some((*first, first + (count - 1))),
            _ => None,
        }
    }

    /// The lowest and the highest index (`None` when empty).
    pub fn bounds(&self) -> Option<(LogIndex, LogIndex)> {
        let low = self.runs.iter().map(|&(first, _)| first).min()?;
        let high = self
            .runs
            .iter()
            .map(|&(first, count)| first + (count - 1))
            .max()?;
        Some((low, high))
    }

    /// Splits off the first `count` records' indexes (for a request that
    /// carried several callers' batches); `None` when fewer are left.
    pub fn split_front(&mut self, count: u64) -> Option<AppendedIndexes> {
        if count > self.count() {
            return None;
        }
        let mut front = AppendedIndexes::default();
        let mut left = count;
        while left > 0 {
            let (first, run_count) = self.runs.first_mut()?;
            let take = left.min(*run_count);
            front.push_run(*first, take)?;
            left -= take;
            if take == *run_count {
                self.runs.remove(0);
            } else {
                // `take < run_count`, so the rest of the run stays in range.
                *first += take;
                *run_count -= take;
            }
        }
        Some(front)
    }

    /// Each record's index, in request order.
    pub fn iter(&self) -> impl Iterator<Item = LogIndex> + '_ {
        self.runs
            .iter()
            .flat_map(|&(first, count)| first..first + count)
    }
}

impl IntoIterator for AppendedIndexes {
    type Item = LogIndex;
    type IntoIter = std::iter::FlatMap<
        std::vec::IntoIter<(LogIndex, u64)>,
        std::ops::Range<LogIndex>,
        fn((LogIndex, u64)) -> std::ops::Range<LogIndex>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        fn run((first, count): (LogIndex, u64)) -> std::ops::Range<LogIndex> {
            first..first + count
        }
        self.runs
            .into_iter()
            .flat_map(run as fn((LogIndex, u64)) -> std::ops::Range<LogIndex>)
    }
}

/// The members of the cluster and their roles.
///
/// Invariants: every id in `voters`, `voters_outgoing` and `learners` has an
/// address in `addrs`; `learners` is disjoint from `voters` and from
/// `voters_outgoing`. `voters_outgoing` is non-empty only during joint
/// consensus (C_old,new), when a decision needs a majority of both sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub addrs: BTreeMap<NodeId, String>,
    pub voters: BTreeSet<NodeId>,
    pub voters_outgoing: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

/// Why bytes did not decode as a [`Membership`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MembershipDecodeError {
    #[error("membership encoding is truncated")]
    Truncated,
    #[error("unsupported membership encoding version {0}")]
    UnsupportedVersion(u8),
    #[error("membership has {0} members, more than the limit of {MEMBERS_MAX}")]
    TooManyMembers(u32),
    #[error("member address is {0} bytes, more than the limit of {ADDR_BYTES_MAX}")]
    AddressTooLong(u32),
    #[error("member address is not UTF-8")]
    AddressNotUtf8,
    #[error("unknown member role {0}")]
    UnknownRole(u8),
    #[error("node id 0 is reserved")]
    ZeroNodeId,
    #[error("{0} trailing bytes after the membership")]
    TrailingBytes(usize),
}

/// More members than any real cluster has; bounds what a decoder allocates.
pub const MEMBERS_MAX: u32 = 1024;
/// A host:port fits easily; bounds what a decoder allocates.
pub const ADDR_BYTES_MAX: u32 = 1024;

const MEMBERSHIP_VERSION: u8 = 1;
const ROLE_VOTER: u8 = 1 << 0;
const ROLE_VOTER_OUTGOING: u8 = 1 << 1;
const ROLE_LEARNER: u8 = 1 << 2;
const ROLES_KNOWN: u8 = ROLE_VOTER | ROLE_VOTER_OUTGOING | ROLE_LEARNER;

impl Membership {
    /// A cluster of voters only, as bootstrapped from `--peer` flags.
    pub fn with_voters(members: impl IntoIterator<Item = (NodeId, String)>) -> Membership {
        let addrs: BTreeMap<NodeId, String> = members.into_iter().collect();
        let voters = addrs.keys().copied().collect();
        Membership {
            addrs,
            voters,
            ..Membership::default()
        }
    }

    /// True during joint consensus.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// True if `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Every member, voters and learners, in id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.addrs.keys().copied()
    }

    /// Layout (all integers little-endian):
    /// `version: u8 = 1, count: u32, count × { id: u64, roles: u8, addr_len: u32, addr: [u8] }`
    /// where `roles` is a bit set: 1 voter, 2 outgoing voter, 4 learner.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(MEMBERSHIP_VERSION);
        out.put_u32_le(self.addrs.len() as u32);
        for (id, addr) in &self.addrs {
            let mut roles = 0u8;
            if self.voters.contains(id) {
                roles |= ROLE_VOTER;
            }
            if self.voters_outgoing.contains(id) {
                roles |= ROLE_VOTER_OUTGOING;
            }
            if self.learners.contains(id) {
                roles |= ROLE_LEARNER;
            }
            out.put_u64_le(*id);
            out.put_u8(roles);
            out.put_u32_le(addr.len() as u32);
            out.put_slice(addr.as_bytes());
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// Decodes exactly one membership from `bytes`; trailing bytes are an error.
    pub fn decode(mut bytes: &[u8]) -> Result<Membership, MembershipDecodeError> {
        use MembershipDecodeError as E;
        if bytes.remaining() < 5 {
            return Err(E::Truncated);
        }
        let version = bytes.get_u8();
        if version != MEMBERSHIP_VERSION {
            return Err(E::UnsupportedVersion(version));
        }
        let count = bytes.get_u32_le();
        if count > MEMBERS_MAX {
            return Err(E::TooManyMembers(count));
        }
        let mut membership = Membership::default();
        for _ in 0..count {
            if bytes.remaining() < 13 {
                return Err(E::Truncated);
            }
            let id = bytes.get_u64_le();
            let roles = bytes.get_u8();
            let addr_len = bytes.get_u32_le();
            if id == 0 {
                return Err(E::ZeroNodeId);
            }
            if roles & !ROLES_KNOWN != 0 {
                return Err(E::UnknownRole(roles));
            }
            if addr_len > ADDR_BYTES_MAX {
                return Err(E::AddressTooLong(addr_len));
            }
            if bytes.remaining() < addr_len as usize {
                return Err(E::Truncated);
            }
            let addr = std::str::from_utf8(&bytes[..addr_len as usize])
                .map_err(|_| E::AddressNotUtf8)?
                .to_string();
            bytes.advance(addr_len as usize);
            membership.addrs.insert(id, addr);
            if roles & ROLE_VOTER != 0 {
                membership.voters.insert(id);
            }
            if roles & ROLE_VOTER_OUTGOING != 0 {
                membership.voters_outgoing.insert(id);
            }
            if roles & ROLE_LEARNER != 0 {
                membership.learners.insert(id);
            }
        }
        if bytes.has_remaining() {
            return Err(E::TrailingBytes(bytes.remaining()));
        }
        Ok(membership)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joint() -> Membership {
        let mut m = Membership::with_voters([
            (1, "127.0.0.1:7001".to_string()),
            (2, "127.0.0.1:7002".to_string()),
        ]);
        m.addrs.insert(3, "127.0.0.1:7003".to_string());
        m.addrs.insert(4, "host-4:7004".to_string());
        m.voters_outgoing = [1, 2, 3].into_iter().collect();
        m.learners.insert(4);
        m
    }

    #[test]
    fn split_front_hands_out_each_batch_its_indexes_in_order() {
        let mut indexes = AppendedIndexes::default();
        indexes.push_run(10, 3).unwrap();
        indexes.push_run(40, 2).unwrap();
        let first = indexes.split_front(2).unwrap();
        assert_eq!(first.runs(), &[(10, 2)]);
        let second = indexes.split_front(2).unwrap();
        assert_eq!(second.runs(), &[(12, 1), (40, 1)]);
        assert_eq!(indexes.split_front(2), None, "only one left");
        assert_eq!(indexes.split_front(1).unwrap().runs(), &[(41, 1)]);
        assert_eq!(indexes.count(), 0);
    }

    #[test]
    fn membership_round_trips_through_its_encoding() {
        let m = joint();
        assert_eq!(Membership::decode(&m.to_bytes()), Ok(m));
    }

    #[test]
    fn membership_decode_rejects_every_truncation() {
        let bytes = joint().to_bytes();
        for len in 0..bytes.len() {
            assert!(Membership::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
    }

    #[test]
    fn membership_decode_rejects_trailing_bytes_and_bad_version() {
        let mut bytes = joint().to_bytes().to_vec();
        bytes.push(0);
        assert_eq!(
            Membership::decode(&bytes),
            Err(MembershipDecodeError::TrailingBytes(1))
        );
        bytes[0] = 9;
        assert_eq!(
            Membership::decode(&bytes),
            Err(MembershipDecodeError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn membership_decode_refuses_a_huge_declared_count_without_allocating() {
        let mut bytes = vec![MEMBERSHIP_VERSION];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Membership::decode(&bytes),
            Err(MembershipDecodeError::TooManyMembers(u32::MAX))
        );
    }
}
