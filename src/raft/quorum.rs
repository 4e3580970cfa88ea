//! Quorum counting: majorities of one voter set and of both sets of a joint
//! configuration (thesis §4.3).

use std::collections::BTreeSet;

use crate::types::{LogIndex, Membership, NodeId};

pub fn majority(voters: &BTreeSet<NodeId>, has: impl Fn(NodeId) -> bool) -> bool {
    let count = voters.iter().filter(|&&id| has(id)).count();
    count * 2 > voters.len()
}

/// True if `has` holds for a majority of every voter set of `membership`.
pub fn quorum(membership: &Membership, has: impl Fn(NodeId) -> bool) -> bool {
    majority(&membership.voters, &has)
        && (membership.voters_outgoing.is_empty() || majority(&membership.voters_outgoing, &has))
}

/// The highest index a majority of `voters` has (0 for an empty set).
pub fn majority_index(
    voters: &BTreeSet<NodeId>,
    index_of: &impl Fn(NodeId) -> LogIndex,
) -> LogIndex {
    if voters.is_empty() {
        return LogIndex::MAX;
    }
    let mut indexes: Vec<LogIndex> = voters.iter().map(|&id| index_of(id)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes.get(voters.len() / 2).copied().unwrap_or(0)
}
