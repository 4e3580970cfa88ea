//! The repair marker `DATA_DIR/REPAIR` (storage-format.md section 4a) and the
//! damage reports `Log::open` returns.
//!
//! The marker says "this node lost entries up to `until_index` (or its
//! votes)": while it exists the node must not vote or stand for election
//! until its log again reaches `until_index` from a leader. It is replaced
//! atomically like the hard state and removed only by `Log::clear_repair`.

use std::path::{Path, PathBuf};

use super::meta::{self, read_small_file, replace_atomically};
use super::{u32_at, u64_at, StorageError};
use crate::types::LogIndex;

pub const REPAIR_FILE_NAME: &str = "REPAIR";
const REPAIR_MAGIC: &[u8; 8] = b"RLOGRPR\0";
const REPAIR_BYTES: usize = 36;
const FLAG_HARD_STATE_LOST: u32 = 1;
const FLAG_CUT_PENDING: u32 = 2;

/// A durable note that this node's log or votes cannot be vouched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairMarker {
    /// The log held entries up to (at least) this index before the damage:
    /// the node must not vote or stand for election until its log again
    /// reaches this index with entries from a leader.
    pub until_index: LogIndex,
    /// Both hard-state copies were unreadable: the node may have voted in any
    /// term up to the one it now believes current.
    pub hard_state_lost: bool,
    /// Damage found by a read while running (`Log::record_damage`): the next
    /// open cuts the log just before this index. `None` once done.
    pub cut_from: Option<LogIndex>,
}

/// A part of the log found damaged at open and cut away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRange {
    /// First index that was lost (the log now ends just before it).
    pub first_index: LogIndex,
    /// Highest index the log is known to have held; every entry
    /// `first_index..=last_index` is gone from this node. Equals the marker's
    /// `until_index` when this open wrote it.
    pub last_index: LogIndex,
    /// The file where the damage was found (a segment, or the marker file for
    /// a cut recorded while running).
    pub path: PathBuf,
    /// Byte offset in `path` of the first bad byte found (0 when the whole
    /// file is missing or unreadable).
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for DamagedRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: damaged entries {}..{}: {}",
            self.path.display(),
            self.offset,
            self.first_index,
            self.last_index,
            self.reason
        )
    }
}

pub(crate) fn encode_repair(marker: &RepairMarker) -> Vec<u8> {
    let mut flags = 0;
    if marker.hard_state_lost {
        flags |= FLAG_HARD_STATE_LOST;
    }
    if marker.cut_from.is_some() {
        flags |= FLAG_CUT_PENDING;
    }
    let mut bytes = Vec::with_capacity(REPAIR_BYTES);
    bytes.extend_from_slice(REPAIR_MAGIC);
    bytes.extend_from_slice(&meta::META_VERSION.to_le_bytes());
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(&marker.until_index.to_le_bytes());
    bytes.extend_from_slice(&marker.cut_from.unwrap_or(0).to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(bytes.len(), REPAIR_BYTES);
    bytes
}

pub(crate) fn decode_repair(path: &Path, bytes: &[u8]) -> Result<RepairMarker, StorageError> {
    if bytes.len() != REPAIR_BYTES {
        return Err(StorageError::corrupt(
            path,
            bytes.len() as u64,
            "repair marker has the wrong length",
        ));
    }
    meta::check_envelope(path, bytes, REPAIR_MAGIC, REPAIR_BYTES)?;
    let flags = u32_at(bytes, 12);
    if flags & !(FLAG_HARD_STATE_LOST | FLAG_CUT_PENDING) != 0 {
        return Err(StorageError::corrupt(
            path,
            12,
            "unknown repair marker flags",
        ));
    }
    // Indexes a log can hold, so that a marker never asks for one it
    // cannot reach (a node that waits forever to vote again).
    let until_index = u64_at(bytes, 16);
    let cut = u64_at(bytes, 24);
    for (at, index) in [(16, until_index), (24, cut)] {
        if index > super::LOG_INDEX_MAX {
            return Err(StorageError::corrupt(
                path,
                at,
                format!(
                    "index {index} is beyond any log (at most {})",
                    super::LOG_INDEX_MAX
                ),
            ));
        }
    }
    let cut_from = if flags & FLAG_CUT_PENDING != 0 {
        if cut == 0 {
            return Err(StorageError::corrupt(path, 24, "pending cut at index 0"));
        }
        Some(cut)
    } else {
        if cut != 0 {
            return Err(StorageError::corrupt(
                path,
                24,
                "cut index set without the pending flag",
            ));
        }
        None
    };
    Ok(RepairMarker {
        until_index,
        hard_state_lost: flags & FLAG_HARD_STATE_LOST != 0,
        cut_from,
    })
}

/// The marker on disk: `Ok(None)` when absent; `Err` only for I/O errors.
/// An unreadable marker is returned as `Ok(Some(Err(problem)))`.
pub(crate) fn read_repair(
    dir: &Path,
) -> Result<Option<Result<RepairMarker, StorageError>>, StorageError> {
    let path = dir.join(REPAIR_FILE_NAME);
    match read_small_file(&path, REPAIR_BYTES as u64) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => Ok(Some(decode_repair(&path, &bytes))),
        // Larger than the format allows: a bad marker, not an I/O failure.
        Err(e @ StorageError::Corrupt { .. }) => Ok(Some(Err(e))),
        Err(e) => Err(e),
    }
}

/// Writes the marker durably (temp file, fsync, rename, fsync directory).
pub(crate) fn store_repair(dir: &Path, marker: &RepairMarker) -> Result<(), StorageError> {
    replace_atomically(dir, REPAIR_FILE_NAME, &encode_repair(marker))
}

/// Removes the marker durably (unlink, fsync directory); absent is fine.
pub(crate) fn remove_repair(dir: &Path) -> Result<(), StorageError> {
    let path = dir.join(REPAIR_FILE_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io(&path, e)),
    }
    meta::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_marker_round_trips_and_rejects_bit_flips() {
        let path = Path::new("REPAIR");
        for marker in [
            RepairMarker {
                until_index: 77,
                hard_state_lost: false,
                cut_from: Some(40),
            },
            RepairMarker {
                until_index: 0,
                hard_state_lost: true,
                cut_from: None,
            },
        ] {
            let bytes = encode_repair(&marker);
            assert_eq!(bytes.len(), 36);
            assert_eq!(decode_repair(path, &bytes).ok(), Some(marker));
            for bit in 0..bytes.len() * 8 {
                let mut bad = bytes.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(decode_repair(path, &bad).is_err(), "bit {bit}");
            }
        }
    }
}
