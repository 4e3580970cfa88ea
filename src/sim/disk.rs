//! The simulator's disk: what a node stores, split into synced and
//! unsynced writes. A crash keeps the hard state and log start (written
//! durably, as the driving contract requires) and the synced prefix of the
//! log, and loses every entry written after the last sync.

use crate::raft::{LogReadError, LogReader, PersistedState};
use crate::types::{Entry, EntryKind, HardState, LogIndex, LogStart, Membership, Term};

#[derive(Clone, Debug)]
pub struct Disk {
    pub hard_state: HardState,
    log_start: LogStart,
    /// Entries from `log_start.first_index`, consecutive.
    entries: Vec<Entry>,
    /// How many of `entries` survive a crash.
    synced_count: usize,
}

impl Disk {
    pub fn new(log_start: LogStart) -> Disk {
        Disk {
            hard_state: HardState::default(),
            log_start,
            entries: Vec::new(),
            synced_count: 0,
        }
    }

    pub fn first_index(&self) -> LogIndex {
        self.log_start.first_index
    }

    pub fn last_index(&self) -> LogIndex {
        self.log_start.first_index + self.entries.len() as u64 - 1
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.checked_sub(self.log_start.first_index)?;
        self.entries.get(offset as usize)
    }

    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index + 1 == self.log_start.first_index {
            return Some(self.log_start.prev_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn append(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    pub fn truncate_from(&mut self, from: LogIndex) {
        let keep = from.saturating_sub(self.log_start.first_index) as usize;
        self.entries.truncate(keep);
        self.synced_count = self.synced_count.min(keep);
    }

    pub fn reset(&mut self, start: LogStart) {
        self.entries.clear();
        self.synced_count = 0;
        self.log_start = start;
    }

    /// Makes every write durable; returns the last entry's (index, term).
    pub fn sync(&mut self) -> Option<(LogIndex, Term)> {
        if self.synced_count == self.entries.len() {
            return None;
        }
        self.synced_count = self.entries.len();
        self.entries.last().map(|e| (e.index, e.term))
    }

    pub fn crash(&mut self) {
        self.entries.truncate(self.synced_count);
    }

    /// The log start that dropping everything below `first_index` gives.
    pub fn log_start_at(&self, first_index: LogIndex) -> Option<LogStart> {
        let prev_term = self.term(first_index - 1)?;
        let membership = self
            .entries
            .iter()
            .take_while(|e| e.index < first_index)
            .filter(|e| e.kind == EntryKind::Config)
            .filter_map(|e| Membership::decode(&e.payload).ok())
            .last()
            .unwrap_or_else(|| self.log_start.membership.clone());
        Some(LogStart {
            first_index,
            prev_term,
            membership,
        })
    }

    pub fn compact(&mut self, start: LogStart) {
        let drop = start.first_index.saturating_sub(self.log_start.first_index) as usize;
        let drop = drop.min(self.entries.len());
        self.entries.drain(..drop);
        self.synced_count = self.synced_count.saturating_sub(drop);
        self.log_start = start;
    }

    /// What a restarted core is built from.
    pub fn persisted_state(&self) -> PersistedState {
        let mut term_runs: Vec<(LogIndex, Term)> = Vec::new();
        let mut config_entries = Vec::new();
        for entry in &self.entries {
            if term_runs
                .last()
                .map_or(true, |&(_, term)| term != entry.term)
            {
                term_runs.push((entry.index, entry.term));
            }
            if entry.kind == EntryKind::Config {
                if let Ok(membership) = Membership::decode(&entry.payload) {
                    config_entries.push((entry.index, membership));
                }
            }
        }
        PersistedState {
            hard_state: self.hard_state,
            log_start: self.log_start.clone(),
            last_index: self.last_index(),
            term_runs,
            config_entries,
        }
    }
}

impl LogReader for Disk {
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, LogReadError> {
        if low < self.log_start.first_index {
            return Err(LogReadError::Compacted { index: low });
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for index in low..=high {
            let Some(entry) = self.entry(index) else {
                break;
            };
            if !out.is_empty() && bytes >= bytes_max {
                break;
            }
            bytes += crate::raft::entry_bytes(entry);
            out.push(entry.clone());
        }
        Ok(out)
    }
}
