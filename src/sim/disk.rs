//! The simulator's disk: what a node stores, split into synced and
//! unsynced writes. A crash keeps the hard state and log start (written
//! durably, as the driving contract requires), the synced prefix of the
//! log and possibly some of the unsynced entries after it (written pages
//! may reach the platter before any fsync), and loses the rest.
//!
//! A sync is asynchronous, as in the node (the driver hands it to a thread
//! and goes on): [`Disk::begin_sync`] takes a ticket for everything written
//! so far and [`Disk::finish_sync`] completes it later. A truncation or a
//! reset in between lowers what the ticket can make durable, and the report
//! the core gets is the (index, term) the ticket was taken at, which may no
//! longer be in the log: the core must see that it is stale.

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
    /// The sync in flight, if any (one at a time, as in the driver).
    sync_in_flight: Option<SyncTicket>,
}

/// A sync that was started and has not completed.
#[derive(Clone, Copy, Debug)]
struct SyncTicket {
    /// The last entry written when the sync started, and its term.
    index: LogIndex,
    term: Term,
    /// The lowest last index the log had since the sync started: entries
    /// above it were truncated (or reset away) and written again, and this
    /// sync does not cover the new ones.
    low_water: LogIndex,
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
            sync_in_flight: None,
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
        self.lower_sync_low_water();
    }

    pub fn reset(&mut self, start: LogStart) {
        self.entries.clear();
        self.config_indexes.clear();
        self.synced_count = 0;
        self.log_start = start;
        self.lower_sync_low_water();
    }

    fn lower_sync_low_water(&mut self) {
        let last = self.last_index();
        if let Some(ticket) = self.sync_in_flight.as_mut() {
            ticket.low_water = ticket.low_water.min(last);
        }
    }

    fn forget_configs_from(&mut self, from: LogIndex) {
        let keep = self.config_indexes.partition_point(|&index| index < from);
        self.config_indexes.truncate(keep);
    }

    /// Makes every write durable at once; returns the last entry's (index,
    /// term).
    pub fn sync(&mut self) -> Option<(LogIndex, Term)> {
        if self.synced_count == self.entries.len() {
            return None;
        }
        self.synced_count = self.entries.len();
        self.entries.last().map(|e| (e.index, e.term))
    }

    /// Starts a sync of everything written so far; false if one is already
    /// in flight or nothing is unsynced.
    pub fn begin_sync(&mut self) -> bool {
        if self.sync_in_flight.is_some() || self.synced_count == self.entries.len() {
            return false;
        }
        let index = self.last_index();
        let Some(term) = self.term(index) else {
            return false;
        };
        self.sync_in_flight = Some(SyncTicket {
            index,
            term,
            low_water: index,
        });
        true
    }

    pub fn sync_in_flight(&self) -> bool {
        self.sync_in_flight.is_some()
    }

    /// Completes the sync in flight: what it covered and is still in the log
    /// is durable. Returns the (index, term) the sync was started at, which
    /// is what the node reports to its core (stale if a truncation or reset
    /// came in between; the core must notice).
    pub fn finish_sync(&mut self) -> Option<(LogIndex, Term)> {
        let ticket = self.sync_in_flight.take()?;
        let durable_last = ticket.index.min(ticket.low_water);
        let first = self.log_start.first_index;
        if let Some(count) = (durable_last + 1).checked_sub(first) {
            let count = (count as usize).min(self.entries.len());
            self.synced_count = self.synced_count.max(count);
        }
        Some((ticket.index, ticket.term))
    }

    /// A crash: every unsynced write is lost.
    pub fn crash(&mut self) {
        self.crash_keeping(0);
    }

    /// A crash: the sync in flight never completes, and of the unsynced
    /// entries only the first `survivors` remain (written pages that
    /// reached the disk on their own).
    pub fn crash_keeping(&mut self, survivors: usize) {
        self.sync_in_flight = None;
        let keep = self
            .synced_count
            .saturating_add(survivors)
            .min(self.entries.len());
        self.entries.truncate(keep);
        self.synced_count = keep;
        self.forget_configs_from(self.last_index() + 1);
    }

    /// (index, term) of every stored entry from `from` on.
    pub fn terms_from(&self, from: LogIndex) -> impl Iterator<Item = (LogIndex, Term)> + '_ {
        let skip = from.saturating_sub(self.log_start.first_index) as usize;
        self.entries.iter().skip(skip).map(|e| (e.index, e.term))
    }

    /// Entries written and not yet durable.
    pub fn unsynced_count(&self) -> usize {
        self.entries.len() - self.synced_count
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
            producers: Default::default(),
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
