//! verify: an offline check of a whole data directory for `raftlog verify`:
//! every frame's checksum, index continuity within and across segments, the
//! index files, the hard-state copies and the log-start file. It reads only
//! and takes the shared lock, so it refuses a directory a server is using.
//!
//! A torn tail that recovery would cut (unsynced frames at the end of the
//! log with nothing valid after them, see storage-format.md "Recovery") is a
//! note, not a problem: it is the normal state after a crash. Damage (what
//! open would record and cut) is a problem whose text names the damaged
//! index range: `damaged entries FIRST..LAST: reason`. A pending repair
//! marker is reported in `repair`; on its own it is not a problem.

use std::fmt;
use std::path::{Path, PathBuf};

use super::meta::{self, DirLock, LOG_DIR_NAME};
use super::repair::{self, RepairMarker};
use super::segment::{
    highest_valid_index, index_file_name, open_segment, parse_name, read_index_file,
    segment_file_name, IndexFileProblem, ScanStop, SEGMENT_HEADER_BYTES, SEGMENT_SUFFIX,
};
use super::{frame, StorageError};
use crate::types::LogIndex;

/// One finding: which file, which byte offset, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub offset: u64,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.offset, self.what)
    }
}

/// What `verify_data_dir` found. Clean when `problems` is empty.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    pub problems: Vec<Problem>,
    /// Findings that are not damage (a torn unsynced tail open would cut).
    pub notes: Vec<Problem>,
    pub segments_checked: usize,
    pub entries_checked: u64,
    /// Range of the entries found intact, when there are any.
    pub first_index: Option<LogIndex>,
    pub last_index: Option<LogIndex>,
    /// The repair marker, when one is pending (the node is repairing).
    pub repair: Option<RepairMarker>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

fn problem_of(error: &StorageError, fallback: &Path) -> Problem {
    let (path, offset) = match error {
        StorageError::Corrupt { path, offset, .. } => (path.clone(), *offset),
        StorageError::BadMagic { path } => (path.clone(), 0),
        StorageError::UnsupportedVersion { path, .. } => (path.clone(), 8),
        StorageError::Io { path, .. } | StorageError::PermissionDenied { path } => {
            (path.clone(), 0)
        }
        _ => (fallback.to_path_buf(), 0),
    };
    Problem {
        path,
        offset,
        what: error.to_string(),
    }
}

/// Checks every file of the data directory `dir`. Errors only when the
/// directory cannot be examined at all (missing, locked by a server);
/// damage is reported in the `VerifyReport`.
pub fn verify_data_dir(dir: impl AsRef<Path>) -> Result<VerifyReport, StorageError> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(StorageError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        ));
    }
    let _lock = DirLock::acquire(dir, false)?;
    let mut report = VerifyReport::default();

    let copies = meta::read_hard_state_copies(dir)?;
    for error in &copies.problems {
        report.problems.push(problem_of(error, dir));
    }
    let log_start = match meta::read_log_start(dir) {
        Ok(start) => start,
        Err(error) => {
            report.problems.push(problem_of(&error, dir));
            None
        }
    };
    let log_first_index = log_start.as_ref().map_or(1, |s| s.first_index);
    match repair::read_repair(dir)? {
        None => {}
        Some(Ok(marker)) => report.repair = Some(marker),
        Some(Err(error)) => report.problems.push(problem_of(&error, dir)),
    }

    let log_dir = dir.join(LOG_DIR_NAME);
    let mut firsts = Vec::new();
    if let Ok(listing) = std::fs::read_dir(&log_dir) {
        for item in listing.flatten() {
            if let Some(first) = item
                .file_name()
                .to_str()
                .and_then(|n| parse_name(n, SEGMENT_SUFFIX))
            {
                firsts.push(first);
            }
        }
    }
    firsts.sort_unstable();
    // Segments wholly below the log start (a successor begins at or below
    // it) are leftovers open deletes unread, whatever their header: by
    // name, as open does (storage-format.md 6.2 step 3).
    while firsts.len() >= 2 && firsts[1] <= log_first_index {
        let first = firsts.remove(0);
        report.notes.push(Problem {
            path: log_dir.join(segment_file_name(first)),
            offset: 0,
            what: "segment lies wholly below the log start; open will delete it".to_string(),
        });
    }
    // The highest index the log is known to have held: later segment names,
    // and any valid frame of the last segment (the end of a damaged range).
    let mut highest = firsts
        .windows(2)
        .map(|w| w[1] - 1)
        .max()
        .unwrap_or(0)
        .max(report.repair.map_or(0, |m| m.until_index));
    if let Some(last) = firsts.last() {
        let path = log_dir.join(segment_file_name(*last));
        if let Ok(bytes) = std::fs::read(&path) {
            if let Some(h) = highest_valid_index(&bytes, 0, *last, None) {
                highest = highest.max(h);
            }
        }
    }
    let damaged = |first: LogIndex, what: &str| {
        format!("damaged entries {first}..{}: {what}", highest.max(first))
    };
    let mut segments = Vec::new();
    let mut bad_headers = Vec::new();
    for (id, first) in firsts.iter().enumerate() {
        let path = log_dir.join(segment_file_name(*first));
        match open_segment(path, *first, false, id as u64) {
            Ok(segment) => segments.push(segment),
            Err(error @ (StorageError::Corrupt { .. } | StorageError::BadMagic { .. })) => {
                bad_headers.push(*first);
                let mut problem = problem_of(&error, &log_dir);
                problem.what = damaged(*first, &format!("segment header is invalid: {error}"));
                report.problems.push(problem);
            }
            Err(error) => report.problems.push(problem_of(&error, &log_dir)),
        }
    }
    if let Some(first) = segments.first() {
        if first.first_index > log_first_index {
            report.problems.push(Problem {
                path: first.path.clone(),
                offset: 0,
                what: damaged(
                    log_first_index,
                    &format!(
                        "log-start says the log begins at {log_first_index} but the first segment begins at {}",
                        first.first_index
                    ),
                ),
            });
        }
    }
    // Same rule as recovery: the tail from the last segment with synced
    // frames on may end torn.
    let tail_from = (0..segments.len())
        .rev()
        .find(|pos| segments[*pos].watermark_on_disk > SEGMENT_HEADER_BYTES)
        .unwrap_or(0);
    for (pos, segment) in segments.iter().enumerate() {
        report.segments_checked += 1;
        let limit = segments.get(pos + 1).map(|next| next.first_index - 1);
        let scan = segment.scan(SEGMENT_HEADER_BYTES, segment.first_index, limit);
        let count = scan.offsets.len() as u64;
        report.entries_checked += count;
        if count > 0 {
            let seg_first = segment.first_index.max(log_first_index);
            let seg_last = segment.first_index + count - 1;
            if seg_last >= seg_first {
                report.first_index.get_or_insert(seg_first);
                report.last_index = Some(seg_last);
            }
        }
        let in_tail = pos >= tail_from;
        let (offset, what) = match &scan.stop {
            ScanStop::Limit => (None, String::new()),
            ScanStop::EndMark if limit.is_none() => (None, String::new()),
            ScanStop::EndMark => (
                Some(scan.end),
                format!(
                    "segment ends at index {} but the next segment starts at {}",
                    segment.first_index + count,
                    limit.unwrap_or(0) + 1
                ),
            ),
            ScanStop::Bad { offset, error } => (Some(*offset), error.to_string()),
        };
        if let Some(offset) = offset {
            let bad_index = segment.first_index + count;
            // Same rule as recovery: torn only when nothing valid follows.
            let later_data = segments[pos + 1..].iter().any(|s| {
                s.watermark_on_disk > SEGMENT_HEADER_BYTES
                    || frame::decode_header(s.view(), SEGMENT_HEADER_BYTES, true)
                        .is_ok_and(|h| h.index == s.first_index)
            }) || bad_headers.iter().any(|f| *f > segment.first_index);
            let valid_after =
                highest_valid_index(segment.view(), offset + 1, bad_index, limit).is_some();
            let torn =
                in_tail && offset >= segment.watermark_on_disk && !later_data && !valid_after;
            let finding = Problem {
                path: segment.path.clone(),
                offset: offset as u64,
                what: if torn {
                    what
                } else {
                    damaged(bad_index, &what)
                },
            };
            if torn {
                report.notes.push(Problem {
                    what: format!("torn unsynced tail, open will cut it: {}", finding.what),
                    ..finding
                });
            } else {
                report.problems.push(finding);
            }
        }
        if limit.is_some() {
            let index_path = log_dir.join(index_file_name(segment.first_index));
            let expected = limit.unwrap_or(0) + 1 - segment.first_index;
            match read_index_file(
                &index_path,
                segment.first_index,
                expected,
                segment.capacity(),
            ) {
                Ok(offsets) if offsets == scan.offsets => {}
                Ok(_) => report.problems.push(Problem {
                    path: index_path,
                    offset: 0,
                    what: "index file offsets do not match the segment's frames".to_string(),
                }),
                Err(IndexFileProblem::Missing) => {}
                Err(IndexFileProblem::Unreadable) => report.problems.push(Problem {
                    path: index_path,
                    offset: 0,
                    what: "index file is unreadable".to_string(),
                }),
                // Index files are not fsynced; a torn one after a crash is normal.
                Err(IndexFileProblem::Invalid { offset, reason }) => report.notes.push(Problem {
                    path: index_path,
                    offset,
                    what: format!("index file is invalid ({reason}); open rebuilds it"),
                }),
            }
        }
    }
    // A cut a running node recorded (`record_damage`): the next open cuts
    // the log before it, as damage, when the log holds that entry (open
    // drops a pending cut below the log start or past the log's end).
    if let Some(cut) = report.repair.and_then(|marker| marker.cut_from) {
        if cut >= log_first_index && report.last_index.is_some_and(|last| cut <= last) {
            report.problems.push(Problem {
                path: dir.join(repair::REPAIR_FILE_NAME),
                offset: 24,
                what: damaged(
                    cut,
                    "a read while the node ran found this entry damaged; the next open cuts the log before it (cut pending in the repair marker)",
                ),
            });
        }
    }
    Ok(report)
}
