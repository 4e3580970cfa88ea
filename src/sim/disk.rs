//! The simulator's disk: what a node stores, split into synced and
//! unsynced writes. A crash keeps the hard state and log start (written
//! durably, as the driving contract requires) and the synced prefix of the
//! log, and loses every entry written after the last sync.

use crate::raft::{LogReadError, LogReader, PersistedState, Repair};
use crate::types::{Entry, EntryKind, HardState, LogIndex, LogStart, Membership, Term};

#[derive(Clone, Debug)]
pub struct Disk {
    pub hard_state: HardState,
    log_start: LogStart,
    /// Entries from `log_start.first_index`, consecutive.
    entries: Vec<Entry>,
    /// How many of `entries` survive a crash.
    synced_count: usize,
    /// Indexes of the config entries in `entries`, increasing (so finding
    /// the membership at a point does not scan the log).
    config_indexes: Vec<LogIndex>,
    /// The durable repair marker that damage leaves (see [`Disk::damage`]).
    pub repair: Option<Repair>,
}

impl Disk {
    pub fn new(log_start: LogStart) -> Disk {
        Disk {
            hard_state: HardState::default(),
            log_start,
            entries: Vec::new(),
            synced_count: 0,
            config_indexes: Vec::new(),
            repair: None,
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
        debug_assert_eq!(entry.index, self.last_index() + 1);
        if entry.kind == EntryKind::Config {
            self.config_indexes.push(entry.index);
        }
        self.entries.push(entry);
    }

    /// Appends consecutive entries that continue the log.
    pub fn append_all(&mut self, entries: Vec<Entry>) {
        debug_assert!(entries
            .iter()
            .zip(self.last_index() + 1..)
            .all(|(entry, index)| entry.index == index));
        self.config_indexes.extend(
            entries
                .iter()
                .filter(|e| e.kind == EntryKind::Config)
                .map(|e| e.index),
        );
        self.entries.extend(entries);
    }

    pub fn truncate_from(&mut self, from: LogIndex) {
        let keep = from.saturating_sub(self.log_start.first_index) as usize;
        self.entries.truncate(keep);
        self.synced_count = self.synced_count.min(keep);
        self.forget_configs_from(from);
    }

    pub fn reset(&mut self, start: LogStart) {
        self.entries.clear();
        self.config_indexes.clear();
        self.synced_count = 0;
        self.log_start = start;
    }

    fn forget_configs_from(&mut self, from: LogIndex) {
        let keep = self.config_indexes.partition_point(|&index| index < from);
        self.config_indexes.truncate(keep);
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
        self.forget_configs_from(self.last_index() + 1);
    }

    /// Storage damage found at open (what `storage::Log::open` does with a
    /// corrupt or missing range): the log is cut before `cut_from`, synced
    /// entries included, and a repair marker remembers how far it reached.
    /// Call it on a crashed disk.
    pub fn damage(&mut self, cut_from: LogIndex) {
        let until_index = self.last_index();
        let cut_from = cut_from.max(self.first_index());
        if cut_from > until_index {
            return;
        }
        self.truncate_from(cut_from);
        self.mark_repair(until_index, false);
    }

    /// Both hard-state copies unreadable at open: the term and vote are
    /// gone, and the repair marker says so (what `storage::Log::open`
    /// does). Call it on a crashed disk.
    pub fn lose_hard_state(&mut self) {
        self.hard_state = HardState::default();
        self.mark_repair(self.last_index(), true);
    }

    /// Raises the repair marker the way storage does: `until_index` never
    /// goes down and a lost hard state stays lost until the repair ends.
    fn mark_repair(&mut self, until_index: LogIndex, hard_state_lost: bool) {
        let previous = self.repair.unwrap_or(Repair {
            until_index,
            hard_state_lost,
        });
        self.repair = Some(Repair {
            until_index: previous.until_index.max(until_index),
            hard_state_lost: previous.hard_state_lost || hard_state_lost,
        });
    }

    /// The log start that dropping everything below `first_index` gives.
    pub fn log_start_at(&self, first_index: LogIndex) -> Option<LogStart> {
        let prev_term = self.term(first_index - 1)?;
        let below = self
            .config_indexes
            .partition_point(|&index| index < first_index);
        let membership = self
            .config_indexes
            .iter()
            .take(below)
            .rev()
            .filter_map(|&index| self.entry(index))
            .find_map(|e| Membership::decode(&e.payload).ok())
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
        let below = self
            .config_indexes
            .partition_point(|&index| index < start.first_index);
        self.config_indexes.drain(..below);
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
            repair: self.repair,
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
        if high < low {
            return Ok(Vec::new());
        }
        let offset = (low - self.log_start.first_index) as usize;
        let count_max = (high - low).saturating_add(1) as usize;
        let stored = self.entries.get(offset..).unwrap_or(&[]);
        let mut out = Vec::with_capacity(count_max.min(stored.len()));
        let mut bytes = 0u64;
        for entry in stored.iter().take(count_max) {
            if !out.is_empty() && bytes >= bytes_max {
                break;
            }
            bytes += crate::raft::entry_bytes(entry);
            out.push(entry.clone());
        }
        Ok(out)
    }
}
