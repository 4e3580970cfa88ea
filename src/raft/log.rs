//! The core's view of its own log: terms as runs of equal term, the log
//! start, the entries not yet persisted, and the config entries.
//!
//! Invariants:
//! - `runs` covers exactly `first_index()..=last_index`, its first indexes
//!   strictly increase and its terms strictly increase (terms in a log never
//!   go down).
//! - `unpersisted` holds exactly the entries `persisted_index + 1 ..= last_index`.
//! - `persisted_index <= last_index` and `persisted_index >= first_index() - 1`.
//! - `configs` lists the config entries in `first_index()..=last_index`, by index.

use std::collections::VecDeque;

use crate::types::{Entry, EntryKind, LogIndex, LogStart, Membership, Term};

/// Bytes an entry costs for flow control: payload plus a fixed allowance
/// for its header on the wire.
pub const ENTRY_OVERHEAD_BYTES: u64 = 32;

pub fn entry_bytes(entry: &Entry) -> u64 {
    entry.payload.len() as u64 + ENTRY_OVERHEAD_BYTES
}

#[derive(Clone, Debug)]
pub struct RaftLog {
    pub start: LogStart,
    runs: Vec<(LogIndex, Term)>,
    pub last_index: LogIndex,
    pub persisted_index: LogIndex,
    unpersisted: VecDeque<Entry>,
    pub unpersisted_bytes: u64,
    pub configs: Vec<(LogIndex, Membership)>,
}

impl RaftLog {
    pub fn new(
        start: LogStart,
        last_index: LogIndex,
        runs: Vec<(LogIndex, Term)>,
        configs: Vec<(LogIndex, Membership)>,
    ) -> RaftLog {
        RaftLog {
            start,
            runs,
            last_index,
            persisted_index: last_index,
            unpersisted: VecDeque::new(),
            unpersisted_bytes: 0,
            configs,
        }
    }

    pub fn first_index(&self) -> LogIndex {
        self.start.first_index
    }

    /// The term of the entry at `index`, if this log knows it (the entry
    /// before the first stored one is known through the log start).
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index + 1 == self.start.first_index {
            return Some(self.start.prev_term);
        }
        if index < self.start.first_index || index > self.last_index {
            return None;
        }
        let position = self.runs.partition_point(|&(first, _)| first <= index);
        position
            .checked_sub(1)
            .and_then(|p| self.runs.get(p))
            .map(|&(_, term)| term)
    }

    pub fn last_term(&self) -> Term {
        self.term(self.last_index).unwrap_or(0)
    }

    /// The first index of the run holding `index` (not below the log start).
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let position = self.runs.partition_point(|&(first, _)| first <= index);
        position
            .checked_sub(1)
            .and_then(|p| self.runs.get(p))
            .map_or(self.start.first_index, |&(first, _)| first)
    }

    /// The last index holding `term` at or below `at_most`, if any is stored.
    pub fn last_index_of_term(&self, term: Term, at_most: LogIndex) -> Option<LogIndex> {
        let position = self.runs.iter().position(|&(_, t)| t == term)?;
        let (first, _) = *self.runs.get(position)?;
        let end = self
            .runs
            .get(position + 1)
            .map_or(self.last_index, |&(next, _)| next - 1);
        let end = end.min(at_most);
        (end >= first).then_some(end)
    }

    /// The membership in force: the latest config entry, else the log start's.
    pub fn membership(&self) -> &Membership {
        self.configs
            .last()
            .map_or(&self.start.membership, |(_, membership)| membership)
    }

    pub fn last_config_index(&self) -> LogIndex {
        self.configs.last().map_or(0, |&(index, _)| index)
    }

    /// Appends entries that continue the log, taking them over (no copy);
    /// returns the config entries that did not decode (a peer or disk bug;
    /// they are kept but not applied).
    pub fn append(&mut self, entries: impl IntoIterator<Item = Entry>) -> Vec<LogIndex> {
        let mut bad_configs = Vec::new();
        let entries = entries.into_iter();
        self.unpersisted.reserve(entries.size_hint().0);
        for entry in entries {
            debug_assert_eq!(
                entry.index,
                self.last_index + 1,
                "log append must be contiguous"
            );
            debug_assert!(
                entry.term >= self.last_term(),
                "terms in a log never decrease"
            );
            if self
                .runs
                .last()
                .map_or(true, |&(_, term)| term != entry.term)
            {
                self.runs.push((entry.index, entry.term));
            }
            self.last_index = entry.index;
            if entry.kind == EntryKind::Config {
                match Membership::decode(&entry.payload) {
                    Ok(membership) => self.configs.push((entry.index, membership)),
                    Err(_) => bad_configs.push(entry.index),
                }
            }
            self.unpersisted_bytes += entry_bytes(&entry);
            self.unpersisted.push_back(entry);
        }
        bad_configs
    }

    /// Drops every entry at or above `from`.
    pub fn truncate_from(&mut self, from: LogIndex) {
        debug_assert!(
            from >= self.start.first_index,
            "cannot truncate below the log start"
        );
        if from > self.last_index {
            return;
        }
        self.last_index = from - 1;
        while self.runs.last().is_some_and(|&(first, _)| first >= from) {
            self.runs.pop();
        }
        while self.configs.last().is_some_and(|&(index, _)| index >= from) {
            self.configs.pop();
        }
        while self.unpersisted.back().is_some_and(|e| e.index >= from) {
            if let Some(entry) = self.unpersisted.pop_back() {
                self.unpersisted_bytes -= entry_bytes(&entry);
            }
        }
        self.persisted_index = self.persisted_index.min(self.last_index);
    }

    /// Storage reports a sync up to `index`; returns true if it advanced.
    pub fn persisted(&mut self, index: LogIndex, term: Term) -> bool {
        if index <= self.persisted_index || self.term(index) != Some(term) {
            return false;
        }
        // `unpersisted` starts at the old `persisted_index + 1`.
        let now_persisted = usize::try_from(index - self.persisted_index)
            .map_or(self.unpersisted.len(), |count| {
                count.min(self.unpersisted.len())
            });
        self.persisted_index = index;
        let bytes: u64 = self
            .unpersisted
            .drain(..now_persisted)
            .map(|e| entry_bytes(&e))
            .sum();
        self.unpersisted_bytes -= bytes;
        debug_assert!(self
            .unpersisted
            .front()
            .map_or(true, |e| e.index == index + 1));
        true
    }

    /// Entries not yet persisted from index `low` on, as the two slices of
    /// the queue (an empty pair if `low` is past the last index).
    pub fn unpersisted_from(&self, low: LogIndex) -> (&[Entry], &[Entry]) {
        let skip = low.saturating_sub(self.persisted_index + 1);
        let skip = usize::try_from(skip).map_or(self.unpersisted.len(), |skip| {
            skip.min(self.unpersisted.len())
        });
        let (front, back) = self.unpersisted.as_slices();
        match (
            front.get(skip..),
            back.get(skip.saturating_sub(front.len())..),
        ) {
            (Some(front), _) => (front, back),
            (None, Some(back)) => (&[], back),
            (None, None) => (&[], &[]),
        }
    }

    /// Forgets entries below `start.first_index` (retention or a reset).
    pub fn set_start(&mut self, start: LogStart) {
        let first = start.first_index;
        if first > self.last_index + 1 || self.term(first - 1) != Some(start.prev_term) {
            // A reset to a log start this log does not reach or match: empty.
            self.runs.clear();
            self.configs.clear();
            self.unpersisted.clear();
            self.unpersisted_bytes = 0;
            self.last_index = first - 1;
            self.persisted_index = first - 1;
        } else {
            let keep_from = self
                .runs
                .partition_point(|&(f, _)| f <= first)
                .saturating_sub(1);
            self.runs.drain(..keep_from);
            if let Some(run) = self.runs.first_mut() {
                run.0 = run.0.max(first);
            }
            if self.last_index < first {
                self.runs.clear();
            }
            self.configs.retain(|&(index, _)| index >= first);
            while self.unpersisted.front().is_some_and(|e| e.index < first) {
                if let Some(entry) = self.unpersisted.pop_front() {
                    self.unpersisted_bytes -= entry_bytes(&entry);
                }
            }
            self.persisted_index = self.persisted_index.max(first - 1);
        }
        self.start = start;
    }

    /// Keeps only the latest config entry at or below `commit_index` and
    /// those after it (older ones can never come back into force).
    pub fn forget_old_configs(&mut self, commit_index: LogIndex) {
        let committed = self
            .configs
            .partition_point(|&(index, _)| index <= commit_index);
        if committed > 1 {
            self.configs.drain(..committed - 1);
        }
    }

    pub fn runs(&self) -> &[(LogIndex, Term)] {
        &self.runs
    }
}
