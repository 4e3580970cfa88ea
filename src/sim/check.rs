//! The simulator's safety checker: plain code, independent of the core's
//! `debug_assert!`s, fed with what every node does as it does it.
//!
//! - After every input a core takes (a tick, a message, a sync report, a
//!   proposal, an operation), [`Checker::observe`] checks election safety
//!   (one leader per term), that a node's commit index never decreases
//!   while it is up, that every node commits the same entry at an index
//!   (state machine safety), and, the first time a node is seen leading a
//!   term, that it holds every entry committed in an earlier term (leader
//!   completeness). A node that wins and loses leadership within one
//!   delivery round is seen.
//! - As a node writes entries, [`Checker::written`] checks log matching: two
//!   entries with the same index and term are identical and have the same
//!   predecessor term.
//! - As a node truncates or resets its log, [`Checker::discarding`] checks
//!   that no entry known committed is among those it drops.

use std::collections::BTreeMap;

use super::Violation;
use crate::raft::{Core, Role};
use crate::types::{Entry, LogIndex, NodeId, Term};

/// What the checker knows of one committed index.
#[derive(Clone, Copy, Debug)]
pub(super) struct Committed {
    /// The term of the entry committed there.
    pub entry_term: Term,
    /// The lowest term any node was in when it first saw the index
    /// committed: the term of the leader that committed it (a follower
    /// learns a commit from a leader of its term or later).
    pub commit_term: Term,
}

#[derive(Default)]
pub(super) struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    /// (index, term) -> (entry hash, predecessor term), for log matching.
    written: BTreeMap<(LogIndex, Term), (u64, Term)>,
    committed: BTreeMap<LogIndex, Committed>,
}

/// FNV-1a over what makes an entry itself, its index included (two no-ops
/// of one term differ only there).
pub(super) fn entry_hash(entry: &Entry) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    feed(entry.kind as u8);
    for byte in entry.index.to_le_bytes() {
        feed(byte);
    }
    for byte in entry.term.to_le_bytes() {
        feed(byte);
    }
    for &byte in entry.payload.iter() {
        feed(byte);
    }
    hash
}

impl Checker {
    /// Checks what `core` (node `id`) shows after an input; `last_commit`
    /// is the commit index last seen on this incarnation of the node.
    pub fn observe(
        &mut self,
        id: NodeId,
        core: &Core,
        last_commit: &mut LogIndex,
    ) -> Result<(), Violation> {
        let term = core.term();
        if core.role() == Role::Leader {
            match self.leaders.get(&term) {
                Some(&other) if other != id => {
                    return Err(Violation::TwoLeadersInTerm {
                        term,
                        first: other,
                        second: id,
                    });
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, id);
                    self.check_leader_completeness(id, core)?;
                }
            }
        }
        let commit = core.commit_index();
        if commit < *last_commit {
            return Err(Violation::CommitIndexDecreased {
                node: id,
                from: *last_commit,
                to: commit,
            });
        }
        // Indexes below the log start were committed before compaction and
        // cannot be read any more.
        let from = (*last_commit + 1).max(core.first_index());
        for index in from..=commit {
            let Some(entry_term) = core.term_at(index) else {
                return Err(Violation::CommittedEntryMissing { node: id, index });
            };
            match self.committed.get_mut(&index) {
                Some(known) if known.entry_term != entry_term => {
                    return Err(Violation::CommittedEntryDiffers { node: id, index });
                }
                Some(known) => known.commit_term = known.commit_term.min(term),
                None => {
                    self.committed.insert(
                        index,
                        Committed {
                            entry_term,
                            commit_term: term,
                        },
                    );
                }
            }
        }
        *last_commit = commit;
        Ok(())
    }

    /// A new leader holds every entry committed in an earlier term (§5.4).
    fn check_leader_completeness(&self, id: NodeId, core: &Core) -> Result<(), Violation> {
        let term = core.term();
        for (&index, known) in self.committed.range(core.first_index()..) {
            if known.commit_term >= term {
                continue;
            }
            if core.term_at(index) != Some(known.entry_term) {
                return Err(Violation::LeaderMissesCommittedEntry {
                    leader: id,
                    term,
                    index,
                });
            }
        }
        Ok(())
    }

    /// Node `id` writes `entry` after an entry of `prev_term`.
    pub fn written(&mut self, id: NodeId, entry: &Entry, prev_term: Term) -> Result<(), Violation> {
        let key = (entry.index, entry.term);
        let value = (entry_hash(entry), prev_term);
        match self.written.get(&key) {
            Some(seen) if *seen != value => Err(Violation::LogMismatch {
                node: id,
                index: entry.index,
                term: entry.term,
            }),
            Some(_) => Ok(()),
            None => {
                self.written.insert(key, value);
                Ok(())
            }
        }
    }

    /// Node `id` drops its entries `(index, term)`: none may be an entry
    /// known committed (a node holding the committed entry never has a
    /// reason to drop it; one that holds another entry there may).
    pub fn discarding(
        &self,
        id: NodeId,
        entries: impl Iterator<Item = (LogIndex, Term)>,
    ) -> Result<(), Violation> {
        for (index, term) in entries {
            if self
                .committed
                .get(&index)
                .is_some_and(|known| known.entry_term == term)
            {
                return Err(Violation::CommittedEntryTruncated { node: id, index });
            }
        }
        Ok(())
    }

    pub fn committed(&self, index: LogIndex) -> Option<Committed> {
        self.committed.get(&index).copied()
    }

    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }
}
