//! The log: an ordered list of segments plus the log-start and hard-state
//! files, with append, group commit, zero-copy reads, truncation, retention
//! and recovery.
//!
//! Durability contract: `sync_request()` captures every byte appended so far
//! (and every file created or removed, through a directory fsync);
//! `SyncRequest::run()` (any thread) msyncs them; `mark_synced()` then
//! reports the highest durable index. Each request covers everything not yet
//! known durable, so several may be in flight and complete in any order. A `SyncDone` captured before a
//! `truncate_suffix` or `reset` does not advance the durable index (its
//! segment watermarks still count), so a truncation is durable before any
//! entry appended after it is reported durable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use memmap2::MmapRaw;

use super::frame::{self, FRAME_HEADER_BYTES};
use super::meta::{self, DirLock, TEMP_SUFFIX};
use super::repair::{self, DamagedRange, RepairMarker};
use super::segment::{
    self, create_segment, highest_valid_index, index_file_entry_count, open_segment, parse_name,
    read_index_file, write_index_file, ScanStop, SegIndex, Segment, SEGMENT_HEADER_BYTES,
    SEGMENT_SUFFIX,
};
use super::{LogConfig, StorageError, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};
use crate::types::{Entry, HardState, LogIndex, LogStart, Term};

/// Upper bound on the capacity reserved up front for one read's result.
const READ_ENTRIES_RESERVE_MAX: usize = 4096;

/// What `Log::open` found on disk.
pub struct Opened {
    pub log: Log,
    /// `None` on a fresh data directory.
    pub hard_state: Option<HardState>,
    /// `None` until `reset` or `advance_start` writes one; the log then starts
    /// at index 1 with previous term 0.
    pub log_start: Option<LogStart>,
    /// The repair marker after recovery (never with a pending `cut_from`,
    /// except from `open_read_only`, which cuts in memory only): while
    /// `Some`, the node must not vote or stand for election until its log
    /// again reaches `until_index` from a leader. Cleared by
    /// `Log::clear_repair`.
    pub repair: Option<RepairMarker>,
    /// What this open found damaged and cut (storage-format.md 6.2a), in log
    /// order. Empty on a healthy open (a torn unsynced tail is not damage).
    pub damage: Vec<DamagedRange>,
}

/// Which oldest segments may be dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep at most this many bytes of segment files (oldest dropped first).
    pub retention_bytes: Option<u64>,
    /// Drop sealed segments last written longer ago than this.
    pub retention_ms: Option<u64>,
}

/// A group commit captured by `Log::sync_request`: run it on any thread.
pub struct SyncRequest {
    ranges: Vec<SyncRange>,
    dir: Option<PathBuf>,
    done: SyncDone,
}

struct SyncRange {
    map: Arc<MmapRaw>,
    path: PathBuf,
    offset: usize,
    len: usize,
}

/// The result of a completed `SyncRequest`, to hand back to `Log::mark_synced`.
#[derive(Debug)]
pub struct SyncDone {
    index: LogIndex,
    epoch: u64,
    marks: Vec<(u64, usize)>,
    dir_changes: u64,
}

impl SyncDone {
    /// The last index the request covered (durable unless truncated since).
    pub fn index(&self) -> LogIndex {
        self.index
    }
}

impl SyncRequest {
    /// Makes everything the request captured durable: msync (fdatasync on
    /// Linux) of each dirty range, then an fsync of the log directory if
    /// segment files were created or removed.
    pub fn run(self) -> Result<SyncDone, StorageError> {
        for range in &self.ranges {
            range
                .map
                .flush_range(range.offset, range.len)
                .map_err(|e| StorageError::io(&range.path, e))?;
        }
        if let Some(dir) = &self.dir {
            meta::sync_dir(dir)?;
        }
        Ok(self.done)
    }

    /// The last index this request covers.
    pub fn index(&self) -> LogIndex {
        self.done.index
    }
}

/// The Raft log of one node. See the module docs for the durability contract.
pub struct Log {
    dir: PathBuf,
    log_dir: PathBuf,
    config: LogConfig,
    read_only: bool,
    _lock: DirLock,
    /// Sorted by first index; the last one takes appends. Segment `i` holds
    /// entries `segments[i].first_index ..= segments[i + 1].first_index - 1`.
    segments: Vec<Segment>,
    /// Invariant: `first_index <= last_index + 1`.
    first_index: LogIndex,
    /// Term of entry `first_index - 1`.
    prev_term: Term,
    last_index: LogIndex,
    last_term: Term,
    log_start: Option<LogStart>,
    hard_state_generation: u64,
    /// Highest index known durable; never above `last_index`.
    durable_index: LogIndex,
    /// Bumped by every truncation or reset; stale `SyncDone`s are ignored.
    epoch: u64,
    /// Count of segment files created or removed (each needs a directory
    /// fsync before entries depending on it count as durable).
    dir_changes: u64,
    /// `dir_changes` as covered by the latest completed directory fsync.
    dir_changes_durable: u64,
    next_segment_id: u64,
    /// The repair marker as on disk (`None`: no `REPAIR` file).
    repair: Option<RepairMarker>,
    /// The next segment's file, prepared ahead off the lock (see
    /// [`Log::spare_job`]); a roll without one creates the file itself.
    spare: Option<segment::SpareSegment>,
    /// A [`SpareJob`] was handed out and not yet installed.
    spare_requested: bool,
}

/// Prepares the log's next segment file: run [`SpareJob::run`] on a
/// blocking thread without holding the log, then give the result to
/// [`Log::install_spare`].
#[derive(Debug)]
pub struct SpareJob {
    log_dir: PathBuf,
    segment_bytes: u64,
    preallocate: bool,
}

impl SpareJob {
    /// Allocates and fsyncs a whole segment file (blocking).
    pub fn run(self) -> Result<segment::SpareSegment, StorageError> {
        segment::create_spare_segment(&self.log_dir, self.segment_bytes, self.preallocate)
    }
}

impl Log {
    /// Opens (creating on first use) the data directory `dir` for exclusive
    /// use, recovering the log as storage-format.md describes.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Opened, StorageError> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&config.segment_bytes) {
            return Err(StorageError::BadConfig {
                reason: "segment_bytes must be within SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX",
            });
        }
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        let lock = DirLock::acquire(&dir, true)?;
        let log_dir = meta::log_dir(&dir);
        std::fs::create_dir_all(&log_dir).map_err(|e| StorageError::io(&log_dir, e))?;
        Self::open_locked(dir, log_dir, config, lock, false)
    }

    /// Opens `dir` read-only for offline tools, under a shared lock (refused
    /// while a server holds the directory). Recovery decisions (cutting a torn
    /// tail) are applied in memory only; nothing on disk changes.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Opened, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        let lock = DirLock::acquire(&dir, false)?;
        let log_dir = meta::log_dir(&dir);
        Self::open_locked(dir, log_dir, LogConfig::default(), lock, true)
    }

    fn open_locked(
        dir: PathBuf,
        log_dir: PathBuf,
        config: LogConfig,
        lock: DirLock,
        read_only: bool,
    ) -> Result<Opened, StorageError> {
        let copies = meta::read_hard_state_copies(&dir)?;
        // Files present but no valid copy: the votes are lost. Not fatal: the
        // node comes back without them and the repair marker keeps it from
        // voting (storage-format.md 6.2a).
        let hard_state_lost = copies.any_file_present && copies.newest.is_none();
        if hard_state_lost {
            for problem in &copies.problems {
                tracing::error!(%problem, "hard-state copy unusable");
            }
            tracing::error!(
                dir = %dir.display(),
                "no hard-state copy can be trusted; the node must not vote until repaired"
            );
        } else {
            for problem in &copies.problems {
                tracing::warn!(%problem, "one hard-state copy is bad; using the other");
            }
        }
        let hard_state = copies.newest.map(|(state, _)| state);
        let log_start = meta::read_log_start(&dir)?;
        let mut marker_unreadable = false;
        let repair = match repair::read_repair(&dir)? {
            None => None,
            Some(Ok(marker)) => Some(marker),
            Some(Err(problem)) => {
                // Written atomically, so only bit rot gets here. Assume the
                // worst that is still recoverable (see storage-format.md 4a).
                tracing::error!(%problem, "the repair marker is unreadable; assuming lost votes");
                marker_unreadable = true;
                Some(RepairMarker {
                    until_index: 0,
                    hard_state_lost: true,
                    cut_from: None,
                })
            }
        };
        let mut log = Log {
            dir,
            log_dir,
            config,
            read_only,
            _lock: lock,
            segments: Vec::new(),
            first_index: log_start.as_ref().map_or(1, |s| s.first_index),
            prev_term: log_start.as_ref().map_or(0, |s| s.prev_term),
            last_index: 0,
            last_term: 0,
            log_start: log_start.clone(),
            hard_state_generation: copies.newest.map_or(0, |(_, g)| g),
            durable_index: 0,
            epoch: 0,
            dir_changes: 0,
            dir_changes_durable: 0,
            next_segment_id: 0,
            repair,
            spare: None,
            spare_requested: false,
        };
        if marker_unreadable {
            if let Some(marker) = log.repair {
                log.store_marker(marker)?;
            }
        }
        let damage = log.recover(hard_state_lost || marker_unreadable)?;
        Ok(Opened {
            repair: log.repair,
            log,
            hard_state,
            log_start,
            damage,
        })
    }

    /// Durably replaces the repair marker (in memory only when read-only).
    fn store_marker(&mut self, marker: RepairMarker) -> Result<(), StorageError> {
        if !self.read_only {
            repair::store_repair(&self.dir, &marker)?;
        }
        self.repair = Some(marker);
        Ok(())
    }

    /// Lists and validates segments, finds damage and torn tails, writes the
    /// repair marker and then cuts (storage-format.md 6.2). Returns the
    /// damaged ranges. `force_marker`: write a marker even without damage
    /// (the hard state or the old marker was lost).
    fn recover(&mut self, force_marker: bool) -> Result<Vec<DamagedRange>, StorageError> {
        let mut names = Vec::new();
        let listing = match std::fs::read_dir(&self.log_dir) {
            Ok(listing) => Some(listing),
            Err(e) if self.read_only && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StorageError::io(&self.log_dir, e)),
        };
        for item in listing.into_iter().flatten() {
            let item = item.map_err(|e| StorageError::io(&self.log_dir, e))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TEMP_SUFFIX) {
                // A file creation that did not finish: never part of the log.
                if !self.read_only {
                    let path = item.path();
                    std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
                }
            } else if let Some(first) = parse_name(name, SEGMENT_SUFFIX) {
                names.push(first);
            }
            // Anything else (index files, unknown files) is not listed here.
        }
        names.sort_unstable();
        let mut slots = Vec::with_capacity(names.len());
        for first in names {
            let path = self.log_dir.join(segment::segment_file_name(first));
            if first == 0 || first > super::LOG_INDEX_MAX {
                // Not a segment this engine could have written: refuse
                // rather than let it claim billions of lost entries.
                return Err(StorageError::corrupt(
                    &path,
                    16,
                    format!(
                        "first index {first} is outside 1..={}",
                        super::LOG_INDEX_MAX
                    ),
                ));
            }
            let id = self.new_segment_id();
            let segment = match open_segment(path.clone(), first, !self.read_only, id) {
                Ok(segment) => Ok(segment),
                // A damaged header: the segment's entries are damage.
                Err(e @ (StorageError::Corrupt { .. } | StorageError::BadMagic { .. })) => Err(e),
                // Unsupported version (a newer build), I/O: fatal.
                Err(e) => return Err(e),
            };
            slots.push(Slot {
                first,
                path,
                segment,
            });
        }
        // Segments wholly below the log start (left by a crash during
        // advance_start) are no longer part of the log.
        while slots.len() >= 2 && slots[1].first <= self.first_index {
            let slot = slots.remove(0);
            self.remove_files(slot.first, &slot.path)?;
        }

        // Walk: find the first damaged index (`cut`), a torn tail, and the
        // highest index the log is known to have held.
        let mut findings: Vec<Finding> = Vec::new();
        let mut cut: Option<LogIndex> = None;
        let mut highest = self.first_index - 1;
        let pending_cut = self.repair.and_then(|m| m.cut_from);
        if let Some(c) = pending_cut.filter(|c| *c >= self.first_index) {
            cut = Some(c);
            findings.push(Finding {
                first_index: c,
                path: self.dir.join(repair::REPAIR_FILE_NAME),
                offset: 0,
                reason: "a read while running found this entry damaged (cut recorded in the repair marker)".to_string(),
            });
        }
        if let Some(first) = slots.first().filter(|s| s.first > self.first_index) {
            findings.push(Finding {
                first_index: self.first_index,
                path: first.path.clone(),
                offset: 0,
                reason: format!(
                    "entries {}..{} are missing: the log-start file says the log begins at {} but the first segment begins at {}",
                    self.first_index,
                    first.first - 1,
                    self.first_index,
                    first.first
                ),
            });
            cut = Some(self.first_index); // the lowest possible
        }
        // The tail set: the last segment back to (and including) the last one
        // whose header records synced frames. Everything before it was synced
        // before it and is trusted without a scan.
        let tail_from = (0..slots.len())
            .rev()
            .find(|pos| {
                slots[*pos]
                    .segment
                    .as_ref()
                    .is_ok_and(|s| s.watermark_on_disk > SEGMENT_HEADER_BYTES)
            })
            .unwrap_or(0);
        let mut scans: Vec<Option<segment::Scan>> = (0..slots.len()).map(|_| None).collect();
        let mut torn: Option<usize> = None;
        for pos in 0..slots.len() {
            let limit = slots.get(pos + 1).map(|next| next.first - 1);
            if let Some(limit) = limit {
                // A later segment's name proves the log reached its first index - 1.
                highest = highest.max(limit);
            }
            let slot = &slots[pos];
            if cut.is_some_and(|c| slot.first >= c) {
                continue;
            }
            let segment = match &slot.segment {
                Ok(segment) => segment,
                Err(error) => {
                    findings.push(Finding::of_error(slot.first, &slot.path, error));
                    cut = Some(cut.map_or(slot.first, |c| c.min(slot.first)));
                    continue;
                }
            };
            if pos < tail_from {
                // Trusted. Scan only to check a pending cut inside it, a file
                // shorter than it was created (truncated), or a gap (the
                // next segment is missing): revealed by a sound index file
                // with too few entries, or, without an index file of the
                // expected count, by frame headers that stop before `limit`.
                let scan_to = match cut {
                    Some(c) if limit.is_some_and(|l| c - 1 <= l) => Some(c - 1),
                    _ => {
                        let count =
                            index_file_entry_count(&self.index_path(slot.first), slot.first);
                        let shortened = (segment.capacity() as u64) < segment.created_bytes;
                        limit.filter(|l| {
                            // Entries the segment must hold: `first..=l`.
                            let expected = l.saturating_add(1).saturating_sub(slot.first);
                            shortened
                                || match count {
                                    Some(n) if n == expected => false,
                                    Some(n) if n < expected => true,
                                    _ => !segment::frames_reach(segment.view(), slot.first, *l),
                                }
                        })
                    }
                };
                if let Some(scan_to) = scan_to {
                    let scan = segment.scan(SEGMENT_HEADER_BYTES, slot.first, Some(scan_to));
                    if let Some((offset, reason)) = scan_problem(&scan, slot.first, limit) {
                        let bad = slot.first + scan.offsets.len() as u64;
                        if let Some(h) = highest_valid_index(segment.view(), offset + 1, bad, limit)
                        {
                            highest = highest.max(h);
                        }
                        findings.push(Finding {
                            first_index: bad,
                            path: slot.path.clone(),
                            offset: offset as u64,
                            reason,
                        });
                        cut = Some(cut.map_or(bad, |c| c.min(bad)));
                    }
                    scans[pos] = Some(scan);
                }
                continue;
            }
            let scan = segment.scan(SEGMENT_HEADER_BYTES, slot.first, limit);
            let count = scan.offsets.len() as u64;
            if count > 0 {
                highest = highest.max(slot.first + count - 1);
            }
            let is_last = limit.is_none();
            let watermark = segment.watermark_on_disk;
            let problem = match &scan.stop {
                ScanStop::EndMark if is_last && scan.end >= watermark => None,
                ScanStop::EndMark if is_last => Some((
                    scan.end,
                    format!("synced frames up to byte {watermark} are missing"),
                )),
                _ => scan_problem(&scan, slot.first, limit),
            };
            if let Some((offset, reason)) = problem {
                let bad = slot.first + count;
                let found_after = highest_valid_index(segment.view(), offset + 1, bad, limit);
                let later_data = slots[pos + 1..].iter().any(Slot::has_data);
                if offset < watermark || found_after.is_some() || later_data {
                    // Synced bytes are bad, or valid data follows the bad
                    // spot: damage, not a torn write.
                    if let Some(h) = found_after {
                        highest = highest.max(h);
                    }
                    findings.push(Finding {
                        first_index: bad,
                        path: slot.path.clone(),
                        offset: offset as u64,
                        reason,
                    });
                    cut = Some(cut.map_or(bad, |c| c.min(bad)));
                } else {
                    // A torn, unsynced tail: the log ends here, silently.
                    torn = Some(pos);
                    scans[pos] = Some(scan);
                    break;
                }
            }
            scans[pos] = Some(scan);
        }

        if let Some(pos) = torn {
            // Nothing valid follows a torn tail: drop the later segments.
            while slots.len() > pos + 1 {
                if let Some(slot) = slots.pop() {
                    self.remove_files(slot.first, &slot.path)?;
                    scans.pop();
                }
            }
        }
        let mut cut_done = false;
        if let Some(mut c) = cut {
            // What the last segment still holds counts too (best effort).
            if let Some(last) = slots.last() {
                if let Some(h) = last.highest_index() {
                    highest = highest.max(h);
                }
            }
            let previous = self.repair;
            let until_index = previous.map_or(0, |m| m.until_index).max(highest);
            let hard_state_lost = force_marker || previous.is_some_and(|m| m.hard_state_lost);
            // The marker first, durably: a crash during the cut leaves it,
            // and the next open cuts again.
            self.store_marker(RepairMarker {
                until_index,
                hard_state_lost,
                cut_from: Some(c),
            })?;
            loop {
                while slots.last().is_some_and(|s| s.first >= c) {
                    if let Some(slot) = slots.pop() {
                        self.remove_files(slot.first, &slot.path)?;
                        scans.pop();
                    }
                }
                if c <= self.first_index {
                    while let Some(slot) = slots.pop() {
                        self.remove_files(slot.first, &slot.path)?;
                        scans.pop();
                    }
                }
                let Some(pos) = slots.len().checked_sub(1) else {
                    break;
                };
                let slot = &slots[pos];
                let segment = match &slot.segment {
                    Ok(segment) => segment,
                    Err(error) => {
                        // Not reached (a bad header is a finding at its first
                        // index), but never keep a segment that failed.
                        findings.push(Finding::of_error(slot.first, &slot.path, error));
                        c = slot.first;
                        continue;
                    }
                };
                let mut scan = match scans[pos].take() {
                    Some(scan) => scan,
                    None => segment.scan(SEGMENT_HEADER_BYTES, slot.first, Some(c - 1)),
                };
                let held = slot.first + scan.offsets.len() as u64;
                if held >= c {
                    let keep = (c - slot.first) as usize;
                    if let Some(end) = scan.offsets.get(keep) {
                        scan.end = *end as usize;
                    }
                    scan.offsets.truncate(keep);
                    scans[pos] = Some(scan);
                    break;
                }
                if pos >= tail_from {
                    // The walk scanned it and found its (natural or torn)
                    // end before `c`: the pending cut lies past the log.
                    findings.retain(|f| f.first_index < held);
                    scans[pos] = Some(scan);
                    break;
                }
                // A trusted segment ends early: more damage, cut there.
                let (offset, reason) = scan_problem(&scan, slot.first, Some(c - 1))
                    .unwrap_or((scan.end, "segment ends early".to_string()));
                findings.push(Finding {
                    first_index: held,
                    path: slot.path.clone(),
                    offset: offset as u64,
                    reason,
                });
                c = held;
                scans[pos] = Some(scan);
                self.store_marker(RepairMarker {
                    until_index,
                    hard_state_lost,
                    cut_from: Some(c),
                })?;
            }
            cut_done = true;
        }

        // Install the remaining segments.
        let count = slots.len();
        let firsts: Vec<LogIndex> = slots.iter().map(|s| s.first).collect();
        for (pos, (slot, scan)) in slots.into_iter().zip(scans).enumerate() {
            let mut segment = slot.segment?;
            let is_last = pos + 1 == count;
            let limit = firsts.get(pos + 1).map(|next| next - 1);
            if pos >= tail_from || is_last {
                let scan = match scan {
                    Some(scan) => scan,
                    None => segment.scan(SEGMENT_HEADER_BYTES, segment.first_index, limit),
                };
                if !self.read_only {
                    if is_last {
                        // Where the log ends: no stale frame may ever be read
                        // as a continuation.
                        segment.zero_tail(scan.end)?;
                    }
                    // A clean restart may leave written pages only in the
                    // page cache: make them durable so they count as durable.
                    segment
                        .map
                        .flush_range(0, scan.end)
                        .map_err(|e| StorageError::io(&segment.path, e))?;
                }
                segment.requested_end = scan.end;
                segment.durable_end = scan.end;
                let _ = segment.index.set(SegIndex {
                    offsets: scan.offsets,
                    end: scan.end,
                    crc_on_read: false,
                });
            } else {
                // Trusted (unscanned) segments need nothing from sync.
                segment.requested_end = usize::MAX;
                segment.durable_end = usize::MAX;
                segment.watermark_written = usize::MAX;
            }
            self.segments.push(segment);
        }
        if cut_done && !self.read_only {
            meta::sync_dir(&self.log_dir)?;
        }
        self.last_index = self.first_index - 1;
        self.last_term = self.prev_term;
        if let Some(last) = self.segments.last() {
            let count = last.index.get().map_or(0, |ix| ix.offsets.len()) as u64;
            let last_index = last.first_index + count - 1;
            if last_index + 1 < self.first_index {
                // Wholly below the log start too.
                if let Some(segment) = self.segments.pop() {
                    self.remove_segment_files(&segment)?;
                }
            } else if last_index >= self.first_index {
                self.last_index = last_index;
                let (_, _, header) = self.locate(last_index)?;
                self.last_term = header.term;
            }
        }
        self.durable_index = self.last_index;

        // The marker's final state: no pending cut (done, or moot).
        let previous = self.repair;
        if cut_done || force_marker || previous.is_some_and(|m| m.cut_from.is_some()) {
            let marker = RepairMarker {
                until_index: previous.map_or(0, |m| m.until_index).max(self.last_index),
                hard_state_lost: force_marker || previous.is_some_and(|m| m.hard_state_lost),
                cut_from: None,
            };
            if Some(marker) != previous {
                self.store_marker(marker)?;
            }
        }
        let until_index = self.repair.map_or(self.last_index, |m| m.until_index);
        let damage: Vec<DamagedRange> = findings
            .into_iter()
            .map(|f| DamagedRange {
                first_index: f.first_index,
                last_index: until_index.max(f.first_index),
                path: f.path,
                offset: f.offset,
                reason: f.reason,
            })
            .collect();
        for range in &damage {
            tracing::error!(
                path = %range.path.display(),
                offset = range.offset,
                first_index = range.first_index,
                last_index = range.last_index,
                reason = %range.reason,
                read_only = self.read_only,
                "damaged log range; cut, to be repaired from the leader"
            );
        }
        Ok(damage)
    }

    /// A job preparing the next segment file, when none is ready or being
    /// prepared (`None` for a read-only log). Hand its result to
    /// [`Log::install_spare`].
    pub fn spare_job(&mut self) -> Option<SpareJob> {
        if self.read_only || self.spare.is_some() || self.spare_requested {
            return None;
        }
        self.spare_requested = true;
        Some(SpareJob {
            log_dir: self.log_dir.clone(),
            segment_bytes: self.config.segment_bytes,
            preallocate: self.config.preallocate,
        })
    }

    /// Takes the result of a [`SpareJob`]. A failure is only logged: the
    /// next roll then creates its file itself, as without a spare, and
    /// reports the error if it recurs.
    pub fn install_spare(&mut self, spare: Result<segment::SpareSegment, StorageError>) {
        self.spare_requested = false;
        match spare {
            Ok(spare) if spare.segment_bytes == self.config.segment_bytes => {
                self.spare = Some(spare);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "could not prepare the next segment file ahead; the next roll creates it");
            }
        }
    }

    fn new_segment_id(&mut self) -> u64 {
        self.next_segment_id += 1;
        self.next_segment_id
    }

    fn index_path(&self, first_index: LogIndex) -> PathBuf {
        self.log_dir.join(segment::index_file_name(first_index))
    }

    /// Unlinks a segment and its index file (readers' mappings stay valid).
    fn remove_segment_files(&mut self, segment: &Segment) -> Result<(), StorageError> {
        let path = segment.path.clone();
        self.remove_files(segment.first_index, &path)
    }

    /// Unlinks the segment file `path` (first index `first_index`) and its
    /// index file; nothing on disk changes when read-only.
    fn remove_files(&mut self, first_index: LogIndex, path: &Path) -> Result<(), StorageError> {
        if self.read_only {
            return Ok(());
        }
        std::fs::remove_file(path).map_err(|e| StorageError::io(path, e))?;
        let index_path = self.index_path(first_index);
        match std::fs::remove_file(&index_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&index_path, e)),
        }
        self.dir_changes += 1;
        Ok(())
    }

    pub fn first_index(&self) -> LogIndex {
        self.first_index
    }

    pub fn last_index(&self) -> LogIndex {
        self.last_index
    }

    pub fn last_term(&self) -> Term {
        self.last_term
    }

    /// Highest index reported durable by a completed sync (or recovered at open).
    pub fn durable_index(&self) -> LogIndex {
        self.durable_index
    }

    /// The data directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stored log start, if one was ever written.
    pub fn log_start(&self) -> Option<&LogStart> {
        self.log_start.as_ref()
    }

    /// The repair marker currently on disk, if any.
    pub fn repair(&self) -> Option<RepairMarker> {
        self.repair
    }

    /// Records damage found by a read while running (`entries`/`frames`
    /// returned `Corrupt` for `first_bad_index`): durably writes or extends
    /// the repair marker (`until_index` = the larger of the old one and
    /// `last_index`; `cut_from` = the lower of the old one and
    /// `first_bad_index`). It does not change the log: the caller restarts
    /// the node, and the next open cuts the log just before
    /// `first_bad_index`. Returns the marker now on disk.
    pub fn record_damage(
        &mut self,
        first_bad_index: LogIndex,
        reason: &str,
    ) -> Result<RepairMarker, StorageError> {
        self.check_writable()?;
        if first_bad_index < self.first_index || first_bad_index > self.last_index {
            return Err(StorageError::OutOfRange {
                index: first_bad_index,
                first_index: self.first_index,
                last_index: self.last_index,
            });
        }
        let previous = self.repair;
        let marker = RepairMarker {
            until_index: previous.map_or(0, |m| m.until_index).max(self.last_index),
            hard_state_lost: previous.is_some_and(|m| m.hard_state_lost),
            cut_from: Some(
                previous
                    .and_then(|m| m.cut_from)
                    .map_or(first_bad_index, |c| c.min(first_bad_index)),
            ),
        };
        tracing::error!(
            first_bad_index,
            until_index = marker.until_index,
            reason,
            "damaged entry found by a read; the next open cuts the log before it"
        );
        self.store_marker(marker)?;
        Ok(marker)
    }

    /// Durably removes the repair marker (the runtime calls it once the core
    /// says repair is complete). Refused with `RepairCutPending` while a
    /// `record_damage` cut has not been applied by a reopen: the damaged
    /// entries are still in the log.
    pub fn clear_repair(&mut self) -> Result<(), StorageError> {
        self.check_writable()?;
        if let Some(cut_from) = self.repair.and_then(|m| m.cut_from) {
            return Err(StorageError::RepairCutPending { cut_from });
        }
        repair::remove_repair(&self.dir)?;
        self.repair = None;
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::PermissionDenied {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Appends `entries`, which must continue the log at `last_index + 1`.
    /// Returns once the frames are in the mapping (the page cache). On an
    /// error after some frames were written, `last_index()` says how far the
    /// append got.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_writable()?;
        for (expected, entry) in (self.last_index + 1..).zip(entries) {
            if entry.index != expected || entry.index > super::LOG_INDEX_MAX {
                return Err(StorageError::NotContiguous {
                    expected,
                    got: entry.index,
                });
            }
            // Only the frame format bounds an entry: one larger than the
            // configured segment gets a segment of its own (`roll`), so a
            // follower stores whatever its leader accepted, whatever its own
            // segment size (storage-format.md 2.2).
            let frame_bytes = frame::frame_bytes(entry) as u64;
            if frame_bytes > frame::FRAME_BYTES_MAX as u64 {
                return Err(StorageError::EntryTooLarge {
                    index: entry.index,
                    frame_bytes,
                    frame_bytes_max: frame::FRAME_BYTES_MAX as u64,
                });
            }
        }
        for entry in entries {
            debug_assert!(
                entry.term >= self.last_term,
                "terms in a log never decrease"
            );
            let frame_bytes = frame::frame_bytes(entry);
            let fits = self.segments.last().is_some_and(|segment| {
                segment
                    .index
                    .get()
                    .is_some_and(|ix| ix.end + frame_bytes <= segment.capacity())
            });
            if !fits {
                self.roll(entry.index, frame_bytes)?;
            }
            let Some(segment) = self.segments.last_mut() else {
                return Err(StorageError::corrupt(
                    &self.log_dir,
                    0,
                    "no active segment after roll",
                ));
            };
            let start = segment
                .index
                .get()
                .map_or(SEGMENT_HEADER_BYTES, |ix| ix.end);
            frame::write_frame(entry, segment.bytes_mut(start, start + frame_bytes));
            if let Some(ix) = segment.index.get_mut() {
                debug_assert_eq!(segment.first_index + ix.offsets.len() as u64, entry.index);
                ix.offsets.push(start as u32);
                ix.end = start + frame_bytes;
            }
            self.last_index = entry.index;
            self.last_term = entry.term;
        }
        // Once per append, on the segment that takes the next one (a
        // segment rolled away from takes no more frames).
        if let Some(segment) = self.segments.last_mut() {
            let end = segment
                .index
                .get()
                .map_or(SEGMENT_HEADER_BYTES, |ix| ix.end);
            segment.zero_ahead(end);
        }
        Ok(())
    }

    /// Seals the active segment (writes its index file) and starts a new one
    /// whose first entry is `first_index`, with a frame of `frame_bytes`:
    /// the configured size, or just enough for that frame when it is larger
    /// (storage-format.md 2.2).
    fn roll(&mut self, first_index: LogIndex, frame_bytes: usize) -> Result<(), StorageError> {
        let segment_bytes = segment_bytes_for(self.config.segment_bytes, frame_bytes);
        let replaces_empty = self
            .segments
            .last()
            .is_some_and(|s| s.first_index == first_index);
        if replaces_empty {
            // The active segment holds no entry yet (a truncation or reset
            // started it) and is too small for this one: the new file takes
            // its name by rename, atomically, so there is never a moment
            // with no segment named `first_index` to override stale frames.
            self.segments.pop();
        } else {
            self.seal_last();
        }
        let id = self.new_segment_id();
        let spare = match self.spare.take() {
            // A spare of the configured size cannot hold an oversized
            // frame: keep it for the next ordinary roll.
            Some(spare) if spare.segment_bytes < segment_bytes => {
                self.spare = Some(spare);
                None
            }
            spare => spare,
        };
        let segment = match spare {
            // Only a header write and a small sync left to do here.
            Some(spare) => segment::segment_from_spare(spare, &self.log_dir, first_index, id)?,
            None => create_segment(
                &self.log_dir,
                first_index,
                segment_bytes,
                self.config.preallocate,
                id,
            )?,
        };
        self.segments.push(segment);
        self.dir_changes += 1;
        Ok(())
    }

    /// Writes the index file of the last segment; a failure only costs a
    /// rebuild later, so it is logged, not returned.
    fn seal_last(&mut self) {
        let Some(segment) = self.segments.last_mut() else {
            return;
        };
        segment.modified = SystemTime::now();
        let Some(ix) = segment.index.get() else {
            return;
        };
        let path = self
            .log_dir
            .join(segment::index_file_name(segment.first_index));
        if let Err(error) = write_index_file(&path, segment.first_index, &ix.offsets) {
            tracing::warn!(%error, "could not write an index file; it will be rebuilt when needed");
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Captures a group commit covering everything appended so far. Run it
    /// with `SyncRequest::run` (on a blocking thread), then `mark_synced`.
    pub fn sync_request(&mut self) -> SyncRequest {
        let mut ranges = Vec::new();
        let mut marks = Vec::new();
        let segment_count = self.segments.len();
        for (pos, segment) in self.segments.iter_mut().enumerate().rev() {
            let Some(end) = segment.index.get().map(|ix| ix.end) else {
                break;
            };
            let sealed = pos + 1 < segment_count;
            if segment.requested_end == usize::MAX {
                break;
            }
            // From what completed syncs made durable, not from what earlier
            // requests captured: requests may complete in any order.
            let mut flush_from = segment.durable_end.min(end);
            if segment.durable_end != segment.watermark_written && !self.read_only {
                // Lags one sync behind by design: it only claims bytes an
                // earlier, completed sync made durable.
                segment.write_watermark(segment.durable_end);
                flush_from = 0;
            }
            if flush_from < end {
                // One range per segment: each msync is a device flush, so the
                // header slot, the new frames and the zeros written ahead of
                // them (`Segment::zero_ahead`) share one. msync writes only
                // dirty pages, so the zeros cost once.
                let flush_to = end.max(segment.zeroed_end);
                ranges.push(SyncRange {
                    map: Arc::clone(&segment.map),
                    path: segment.path.clone(),
                    offset: flush_from,
                    len: flush_to - flush_from,
                });
            }
            segment.requested_end = end;
            marks.push((segment.id, end));
            if sealed && segment.durable_end == end && segment.watermark_written == end {
                // Fully durable and its header says so: nothing left to do.
                segment.requested_end = usize::MAX;
                segment.durable_end = usize::MAX;
                segment.watermark_written = usize::MAX;
                break;
            }
        }
        let dir = (self.dir_changes > self.dir_changes_durable).then(|| self.log_dir.clone());
        SyncRequest {
            ranges,
            dir,
            done: SyncDone {
                index: self.last_index,
                epoch: self.epoch,
                marks,
                dir_changes: self.dir_changes,
            },
        }
    }

    /// Records a completed sync; returns the durable index.
    pub fn mark_synced(&mut self, done: SyncDone) -> LogIndex {
        for (id, end) in done.marks {
            if let Some(segment) = self.segments.iter_mut().rev().find(|s| s.id == id) {
                if segment.durable_end != usize::MAX {
                    // A truncation since the request may have cut this segment.
                    let data_end = segment.index.get().map_or(end, |ix| ix.end);
                    segment.durable_end = segment.durable_end.max(end.min(data_end));
                }
            }
        }
        self.dir_changes_durable = self.dir_changes_durable.max(done.dir_changes);
        if done.epoch == self.epoch {
            self.durable_index = self.durable_index.max(done.index.min(self.last_index));
        }
        debug_assert!(self.durable_index <= self.last_index);
        self.durable_index
    }

    /// Syncs on the calling thread; returns the durable index.
    pub fn sync(&mut self) -> Result<LogIndex, StorageError> {
        let request = self.sync_request();
        let done = request.run()?;
        Ok(self.mark_synced(done))
    }

    /// Position in `segments` of the segment holding `index` (which must be
    /// at or above the first segment's first index).
    fn segment_position(&self, index: LogIndex) -> Option<usize> {
        self.segments
            .partition_point(|s| s.first_index <= index)
            .checked_sub(1)
    }

    /// Last entry index segment `pos` holds.
    fn segment_last_index(&self, pos: usize) -> LogIndex {
        match self.segments.get(pos + 1) {
            Some(next) => next.first_index - 1,
            None => self.last_index,
        }
    }

    /// The index of segment `pos`, loading (or rebuilding) it on first use.
    fn segment_index(&self, pos: usize) -> Result<&SegIndex, StorageError> {
        let segment = &self.segments[pos];
        if let Some(ix) = segment.index.get() {
            return Ok(ix);
        }
        let entry_count = self.segment_last_index(pos) + 1 - segment.first_index;
        let index_path = self.index_path(segment.first_index);
        let ix = build_segment_index(segment, entry_count, &index_path, self.read_only)?;
        let _ = segment.index.set(ix);
        segment.index.get().ok_or(StorageError::corrupt(
            &segment.path,
            0,
            "segment index vanished",
        ))
    }

    /// A job loading or rebuilding the index of the first sealed segment
    /// holding entries `low..=high` that has none yet (a rebuild scans the
    /// whole segment). Run it without holding the log, then hand the result
    /// to [`Log::install_index`]; without one, the next read does it itself.
    pub fn index_job(&self, low: LogIndex, high: LogIndex) -> Option<IndexJob> {
        let high = high.min(self.last_index);
        if low > high {
            return None;
        }
        let first = self.segment_position(low.max(self.first_index))?;
        let last = self.segment_position(high)?;
        // The last segment takes appends and always has its index.
        let sealed_end = last.min(self.segments.len().saturating_sub(2));
        (first..=sealed_end).find_map(|pos| {
            let segment = self.segments.get(pos)?;
            if segment.index.get().is_some() || pos + 1 >= self.segments.len() {
                return None;
            }
            Some(IndexJob {
                // A sealed segment's mapping is never written again (a
                // truncation into it replaces the file and the mapping), so
                // a second view of it may be read without the lock.
                shadow: Segment {
                    id: segment.id,
                    first_index: segment.first_index,
                    path: segment.path.clone(),
                    map: segment.map.clone(),
                    writable: false,
                    watermark_on_disk: segment.watermark_on_disk,
                    created_bytes: segment.created_bytes,
                    index: OnceLock::new(),
                    requested_end: segment.requested_end,
                    durable_end: segment.durable_end,
                    watermark_written: segment.watermark_written,
                    zeroed_end: segment.zeroed_end,
                    modified: segment.modified,
                },
                entry_count: self.segment_last_index(pos) + 1 - segment.first_index,
                index_path: self.index_path(segment.first_index),
                read_only: self.read_only,
            })
        })
    }

    /// Takes a built index if its segment is still the one it was built
    /// for and has none; anything else is dropped (the next read rebuilds).
    pub fn install_index(&self, built: IndexBuilt) {
        let Ok(ix) = built.result else {
            return; // the read under the lock reports the damage
        };
        let Some(pos) = self.segments.iter().position(|s| s.id == built.segment_id) else {
            return;
        };
        let unchanged = pos + 1 < self.segments.len()
            && self.segment_last_index(pos) + 1 - self.segments[pos].first_index
                == built.entry_count;
        if unchanged {
            let _ = self.segments[pos].index.set(ix);
        }
    }

    fn check_range(&self, index: LogIndex) -> Result<(), StorageError> {
        if index < self.first_index || index > self.last_index {
            return Err(StorageError::OutOfRange {
                index,
                first_index: self.first_index,
                last_index: self.last_index,
            });
        }
        Ok(())
    }

    /// Locates entry `index`: (segment position, frame offset, checked header).
    fn locate(&self, index: LogIndex) -> Result<(usize, usize, frame::FrameHeader), StorageError> {
        self.check_range(index)?;
        let pos = self
            .segment_position(index)
            .ok_or(StorageError::OutOfRange {
                index,
                first_index: self.first_index,
                last_index: self.last_index,
            })?;
        let segment = &self.segments[pos];
        let ix = self.segment_index(pos)?;
        let offset = ix
            .offsets
            .get((index - segment.first_index) as usize)
            .copied()
            .ok_or(StorageError::corrupt(
                &segment.path,
                0,
                format!("index has no entry {index}"),
            ))? as usize;
        let header = self.checked_header(pos, offset, index, ix.crc_on_read)?;
        Ok((pos, offset, header))
    }

    fn checked_header(
        &self,
        pos: usize,
        offset: usize,
        index: LogIndex,
        check_crc: bool,
    ) -> Result<frame::FrameHeader, StorageError> {
        let segment = &self.segments[pos];
        let header = frame::decode_header(segment.view(), offset, check_crc)
            .map_err(|e| StorageError::corrupt(&segment.path, offset as u64, e.to_string()))?;
        if header.index != index {
            return Err(StorageError::corrupt(
                &segment.path,
                offset as u64,
                format!("frame holds index {}, expected {index}", header.index),
            ));
        }
        Ok(header)
    }

    /// The term of entry `index`; `first_index - 1` gives the log start's
    /// previous term. `None` outside the log.
    pub fn term_at(&self, index: LogIndex) -> Result<Option<Term>, StorageError> {
        if index + 1 == self.first_index {
            return Ok(Some(self.prev_term));
        }
        if index < self.first_index || index > self.last_index {
            return Ok(None);
        }
        if index == self.last_index {
            return Ok(Some(self.last_term));
        }
        let (pos, offset, header) = self.locate(index)?;
        debug_assert_eq!(
            frame::peek_term(self.segments[pos].view(), offset),
            header.term
        );
        Ok(Some(header.term))
    }

    /// Entries `low..=high_inclusive` (`high` is clamped to `last_index`;
    /// empty if `low` is past it; `OutOfRange` if `low < first_index`),
    /// stopping before the total frame bytes exceed `bytes_max` but always
    /// returning at least one entry. Payloads are zero-copy slices of the
    /// mapping and stay valid (and unchanged) while held, even across
    /// truncation and retention.
    pub fn entries(
        &self,
        low: LogIndex,
        high_inclusive: LogIndex,
        bytes_max: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let high_inclusive = high_inclusive.min(self.last_index);
        if low > high_inclusive {
            return Ok(Vec::new());
        }
        self.check_range(low)?;
        let mut out =
            Vec::with_capacity(((high_inclusive - low + 1) as usize).min(READ_ENTRIES_RESERVE_MAX));
        let mut bytes_total = 0usize;
        let mut index = low;
        while index <= high_inclusive {
            let (pos, first_offset, _) = self.locate(index)?;
            let segment = &self.segments[pos];
            let ix = self.segment_index(pos)?;
            let segment_last = self.segment_last_index(pos).min(high_inclusive);
            let end_offset = ix
                .offsets
                .get((segment_last + 1 - segment.first_index) as usize)
                .map_or(ix.end, |o| *o as usize);
            let region = segment.bytes(first_offset, end_offset);
            let view = segment.view();
            while index <= segment_last {
                let offset = ix
                    .offsets
                    .get((index - segment.first_index) as usize)
                    .copied()
                    .unwrap_or(0) as usize;
                let header = match frame::decode_header(view, offset, ix.crc_on_read) {
                    Ok(header) if header.index == index => header,
                    _ => {
                        return Err(self
                            .checked_header(pos, offset, index, true)
                            .err()
                            .unwrap_or(StorageError::corrupt(
                                &segment.path,
                                offset as u64,
                                "frame does not decode",
                            )))
                    }
                };
                bytes_total += header.frame_bytes;
                if bytes_total > bytes_max && !out.is_empty() {
                    return Ok(out);
                }
                let payload_start = offset + FRAME_HEADER_BYTES - first_offset;
                let payload_end = offset + header.frame_bytes - first_offset;
                if payload_end > region.len() {
                    return Err(StorageError::corrupt(
                        &segment.path,
                        offset as u64,
                        "frame runs past the segment's data",
                    ));
                }
                out.push(Entry {
                    index,
                    term: header.term,
                    kind: header.kind,
                    producer: header.producer,
                    payload: region.slice(payload_start..payload_end),
                });
                index += 1;
            }
        }
        Ok(out)
    }

    /// The stored frames of entries `low..=`(at most `high_inclusive`), as one
    /// zero-copy `Bytes` in the exact layout of the frame codec, plus the last
    /// index included. Stops at a segment boundary or before exceeding
    /// `bytes_max` (but includes at least one frame).
    pub fn frames(
        &self,
        low: LogIndex,
        high_inclusive: LogIndex,
        bytes_max: usize,
    ) -> Result<(Bytes, LogIndex), StorageError> {
        self.check_range(low)?;
        let high_inclusive = high_inclusive.clamp(low, self.last_index);
        let (pos, first_offset, header) = self.locate(low)?;
        let segment = &self.segments[pos];
        let ix = self.segment_index(pos)?;
        let segment_last = self.segment_last_index(pos).min(high_inclusive);
        let mut end = first_offset + header.frame_bytes;
        let mut last = low;
        while last < segment_last {
            let next = last + 1;
            let offset = ix
                .offsets
                .get((next - segment.first_index) as usize)
                .copied()
                .unwrap_or(0) as usize;
            let header = self.checked_header(pos, offset, next, ix.crc_on_read)?;
            if offset + header.frame_bytes - first_offset > bytes_max {
                break;
            }
            end = offset + header.frame_bytes;
            last = next;
        }
        Ok((segment.bytes(first_offset, end), last))
    }

    /// Removes entries `from_index..` (Raft conflict repair). Bytes already
    /// handed to readers stay valid: the kept part of the segment is sealed
    /// and a fresh segment named `from_index` takes later appends (its
    /// existence is what overrides the stale frames on disk). The change is
    /// durable once the next sync (which fsyncs the directory) completes; no
    /// later append is reported durable before that.
    pub fn truncate_suffix(&mut self, from_index: LogIndex) -> Result<(), StorageError> {
        self.check_writable()?;
        if from_index == self.last_index + 1 {
            return Ok(());
        }
        self.check_range(from_index)?;
        let new_last_term = self
            .term_at(from_index - 1)?
            .ok_or(StorageError::OutOfRange {
                index: from_index - 1,
                first_index: self.first_index,
                last_index: self.last_index,
            })?;
        // Later segments go first, so a crash leaves a prefix of the old log.
        while self
            .segments
            .last()
            .is_some_and(|s| s.first_index > from_index)
        {
            if let Some(segment) = self.segments.pop() {
                self.remove_segment_files(&segment)?;
            }
        }
        // A segment starting exactly at `from_index` is replaced by rename.
        if self
            .segments
            .last()
            .is_some_and(|s| s.first_index == from_index)
        {
            self.segments.pop();
            let index_path = self.index_path(from_index);
            if let Err(e) = std::fs::remove_file(&index_path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(StorageError::io(&index_path, e));
                }
            }
        }
        if let Some(pos) = self.segments.len().checked_sub(1) {
            // Make sure the kept segment's index is loaded, then cut it.
            self.segment_index(pos)?;
            let segment = &mut self.segments[pos];
            let keep = (from_index - segment.first_index) as usize;
            if let Some(ix) = segment.index.get_mut() {
                if keep < ix.offsets.len() {
                    let cut_at = ix.offsets[keep] as usize;
                    ix.offsets.truncate(keep);
                    ix.end = cut_at;
                }
                if segment.requested_end != usize::MAX {
                    segment.requested_end = segment.requested_end.min(ix.end);
                    segment.durable_end = segment.durable_end.min(ix.end);
                }
            }
            self.seal_last();
        }
        let id = self.new_segment_id();
        let segment = create_segment(
            &self.log_dir,
            from_index,
            self.config.segment_bytes,
            self.config.preallocate,
            id,
        )?;
        self.segments.push(segment);
        self.dir_changes += 1;
        self.last_index = from_index - 1;
        self.last_term = new_last_term;
        self.durable_index = self.durable_index.min(self.last_index);
        self.epoch += 1;
        Ok(())
    }

    /// Moves the log start forward to `new_start.first_index` (at most
    /// `last_index + 1`): writes the log-start file (the caller supplies the
    /// previous term, checked against the log, and the membership in force
    /// at that point), then drops every segment wholly below the new start.
    pub fn advance_start(&mut self, new_start: LogStart) -> Result<(), StorageError> {
        self.check_writable()?;
        let first = new_start.first_index;
        if first < self.first_index || first > self.last_index + 1 {
            return Err(StorageError::OutOfRange {
                index: first,
                first_index: self.first_index,
                last_index: self.last_index,
            });
        }
        if let Some(term) = self.term_at(first - 1)? {
            if term != new_start.prev_term {
                return Err(StorageError::LogStartMismatch {
                    index: first - 1,
                    stored_term: term,
                    given_term: new_start.prev_term,
                });
            }
        }
        meta::store_log_start(&self.dir, &new_start)?;
        while self.segments.len() >= 2 && self.segments[1].first_index <= first {
            let segment = self.segments.remove(0);
            self.remove_segment_files(&segment)?;
        }
        self.first_index = first;
        self.prev_term = new_start.prev_term;
        self.log_start = Some(new_start);
        Ok(())
    }

    /// The first index of the oldest segment to keep under `policy`, if
    /// retention may drop any segment: only sealed segments whose every entry
    /// is at or below `floor_index` are candidates. Pass the result (with
    /// its previous term and membership) to `advance_start`.
    pub fn retention_first_index(
        &self,
        policy: &RetentionPolicy,
        floor_index: LogIndex,
        now: SystemTime,
    ) -> Option<LogIndex> {
        let mut bytes_total: u64 = self.segments.iter().map(|s| s.capacity() as u64).sum();
        let mut keep_from = None;
        for pos in 0..self.segments.len().saturating_sub(1) {
            let segment = &self.segments[pos];
            let next_first = self.segments[pos + 1].first_index;
            if next_first - 1 > floor_index {
                break;
            }
            let over_bytes = policy.retention_bytes.is_some_and(|max| bytes_total > max);
            let too_old = policy.retention_ms.is_some_and(|max_ms| {
                now.duration_since(segment.modified)
                    .is_ok_and(|age| age.as_millis() > u128::from(max_ms))
            });
            if !(over_bytes || too_old) {
                break;
            }
            bytes_total -= segment.capacity() as u64;
            keep_from = Some(next_first);
        }
        keep_from.filter(|first| *first > self.first_index)
    }

    /// Drops the whole log and starts an empty one at `log_start.first_index`
    /// (a follower reset to its leader's log start). Durable on return.
    pub fn reset(&mut self, log_start: LogStart) -> Result<(), StorageError> {
        self.check_writable()?;
        if log_start.first_index == 0 || log_start.first_index > super::LOG_INDEX_MAX {
            return Err(StorageError::OutOfRange {
                index: log_start.first_index,
                first_index: 1,
                last_index: super::LOG_INDEX_MAX,
            });
        }
        while let Some(segment) = self.segments.pop() {
            self.remove_segment_files(&segment)?;
        }
        meta::sync_dir(&self.log_dir)?;
        meta::store_log_start(&self.dir, &log_start)?;
        self.first_index = log_start.first_index;
        self.prev_term = log_start.prev_term;
        self.last_index = log_start.first_index - 1;
        self.last_term = log_start.prev_term;
        self.durable_index = self.last_index;
        self.log_start = Some(log_start);
        self.epoch += 1;
        self.dir_changes_durable = self.dir_changes;
        Ok(())
    }

    /// Replaces both hard-state copies atomically, one after the other.
    /// Durable on return.
    pub fn store_hard_state(&mut self, state: &HardState) -> Result<(), StorageError> {
        self.check_writable()?;
        self.hard_state_generation = self.hard_state_generation.saturating_add(1);
        meta::store_hard_state(&self.dir, state, self.hard_state_generation)
    }
}

/// The size of a new segment whose first frame is `frame_bytes` long: the
/// configured size, or the header plus that frame when it does not fit.
/// Cannot exceed `SEGMENT_BYTES_MAX`: a frame is at most `FRAME_BYTES_MAX`
/// (checked by `append`), far below it.
fn segment_bytes_for(configured: u64, frame_bytes: usize) -> u64 {
    let needed = (SEGMENT_HEADER_BYTES as u64).saturating_add(frame_bytes as u64);
    configured.max(needed).min(SEGMENT_BYTES_MAX)
}

const _: () = assert!(
    (SEGMENT_HEADER_BYTES + frame::FRAME_BYTES_MAX) as u64 <= SEGMENT_BYTES_MAX,
    "an oversized segment for the largest frame must be a valid segment"
);

/// A segment file found at open: its header checked or not.
struct Slot {
    first: LogIndex,
    path: PathBuf,
    segment: Result<Segment, StorageError>,
}

impl Slot {
    /// Whether the file holds anything a torn write cannot explain: a bad
    /// header (created durably, so damage), a synced watermark, or a valid
    /// first frame.
    fn has_data(&self) -> bool {
        match &self.segment {
            Err(_) => true,
            Ok(segment) => {
                segment.watermark_on_disk > SEGMENT_HEADER_BYTES
                    || frame::decode_header(segment.view(), SEGMENT_HEADER_BYTES, true)
                        .is_ok_and(|h| h.index == segment.first_index)
            }
        }
    }

    /// The highest index of a valid frame anywhere in the file (best effort;
    /// also for a segment whose header is bad).
    fn highest_index(&self) -> Option<LogIndex> {
        match &self.segment {
            Ok(segment) => highest_valid_index(segment.view(), 0, self.first, None),
            Err(_) => {
                let file = std::fs::File::open(&self.path).ok()?;
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(file, SEGMENT_BYTES_MAX),
                    &mut bytes,
                )
                .ok()?;
                highest_valid_index(&bytes, 0, self.first, None)
            }
        }
    }
}

/// Damage found at open, before its last index is known.
struct Finding {
    first_index: LogIndex,
    path: PathBuf,
    offset: u64,
    reason: String,
}

impl Finding {
    fn of_error(first_index: LogIndex, path: &Path, error: &StorageError) -> Finding {
        let offset = match error {
            StorageError::Corrupt { offset, .. } => *offset,
            _ => 0,
        };
        Finding {
            first_index,
            path: path.to_path_buf(),
            offset,
            reason: format!("segment header is invalid: {error}"),
        }
    }
}

/// Why a scan of the segment `first` (holding entries up to `limit`, or to
/// its end of data when `None`) stopped short: (byte offset, reason).
fn scan_problem(
    scan: &segment::Scan,
    first: LogIndex,
    limit: Option<LogIndex>,
) -> Option<(usize, String)> {
    match (&scan.stop, limit) {
        (ScanStop::Limit, _) | (ScanStop::EndMark, None) => None,
        (ScanStop::EndMark, Some(limit)) => Some((
            scan.end,
            format!(
                "entries {}..{} are missing: the segment's frames end before the next segment begins",
                first + scan.offsets.len() as u64,
                limit
            ),
        )),
        (ScanStop::Bad { offset, error }, _) => Some((*offset, error.to_string())),
    }
}

/// Builds a segment index outside the log lock (see [`Log::index_job`]).
pub struct IndexJob {
    shadow: Segment,
    entry_count: u64,
    index_path: PathBuf,
    read_only: bool,
}

/// What an [`IndexJob`] built, for [`Log::install_index`].
#[derive(Debug)]
pub struct IndexBuilt {
    segment_id: u64,
    entry_count: u64,
    result: Result<SegIndex, StorageError>,
}

impl std::fmt::Debug for IndexJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexJob")
            .field("segment", &self.shadow.path)
            .field("entry_count", &self.entry_count)
            .finish()
    }
}

impl IndexJob {
    /// Loads the segment's index file or rebuilds it by scanning the
    /// segment (blocking).
    pub fn run(self) -> IndexBuilt {
        let result = build_segment_index(
            &self.shadow,
            self.entry_count,
            &self.index_path,
            self.read_only,
        );
        IndexBuilt {
            segment_id: self.shadow.id,
            entry_count: self.entry_count,
            result,
        }
    }
}

/// The index of `segment`, which holds `entry_count` entries: its index
/// file when that is whole and agrees with the segment, else a scan of the
/// segment (rewriting the index file unless `read_only`).
fn build_segment_index(
    segment: &Segment,
    entry_count: u64,
    index_path: &Path,
    read_only: bool,
) -> Result<SegIndex, StorageError> {
    let loaded = read_index_file(
        index_path,
        segment.first_index,
        entry_count,
        segment.capacity(),
    )
    .ok()
    .and_then(|offsets| {
        let end = match offsets.last() {
            None => SEGMENT_HEADER_BYTES,
            Some(last) => {
                let header = frame::decode_header(segment.view(), *last as usize, true).ok()?;
                if header.index != segment.first_index + entry_count - 1 {
                    return None;
                }
                *last as usize + header.frame_bytes
            }
        };
        Some(SegIndex {
            offsets,
            end,
            crc_on_read: true,
        })
    });
    let ix = match loaded {
        Some(ix) => ix,
        None => {
            let last = segment.first_index + entry_count - 1;
            let scan = segment.scan(SEGMENT_HEADER_BYTES, segment.first_index, Some(last));
            match scan.stop {
                ScanStop::Limit => {}
                ScanStop::EndMark => {
                    return Err(StorageError::corrupt(
                        &segment.path,
                        scan.end as u64,
                        format!(
                            "segment ends before index {}",
                            segment.first_index + scan.offsets.len() as u64
                        ),
                    ))
                }
                ScanStop::Bad { offset, error } => {
                    return Err(StorageError::corrupt(
                        &segment.path,
                        offset as u64,
                        error.to_string(),
                    ))
                }
            }
            if !read_only {
                if let Err(error) = write_index_file(index_path, segment.first_index, &scan.offsets)
                {
                    tracing::warn!(%error, "could not rewrite an index file");
                }
            }
            SegIndex {
                offsets: scan.offsets,
                end: scan.end,
                crc_on_read: false,
            }
        }
    };
    Ok(ix)
}
