//! storage: the node's durable state on disk — a segmented, memory-mapped,
//! checksummed Raft log plus the small hard-state and log-start files.
//!
//! The byte layout and the recovery procedure are specified in
//! `storage-format.md`; keep the two in step.
//!
//! Invariants kept here:
//! - Entry indexes are dense: the log holds exactly `first_index..=last_index`.
//! - Bytes of a segment below its published end are never written again by
//!   this process (appends go past the end; a truncation starts a new segment
//!   file instead of overwriting), so zero-copy `Bytes` handed to readers stay
//!   valid and unchanged for as long as readers hold them.
//! - An entry is reported durable only after an msync/fsync that covered it
//!   completed, and never across a truncation that removed it.
//! - A data directory is used by one process at a time (an exclusive `flock`
//!   on `DATA_DIR/LOCK`).
//!
//! How the runtime drives it:
//! - `Log::open(dir, LogConfig)` → `Opened { log, hard_state, log_start,
//!   repair, damage }`; on a fresh directory `hard_state` and `log_start` are
//!   `None`: bootstrap with `log.reset(LogStart::initial(membership))` (or
//!   wait for the leader). `damage` lists what open found damaged and cut;
//!   `repair` (the `REPAIR` marker) says the node must not vote or stand
//!   until its log again reaches `until_index` (and, with
//!   `hard_state_lost`, that its votes are gone: `hard_state` is then `None`
//!   although the directory is not fresh). Damage found by a read while
//!   running: `record_damage(index, reason)`, then restart; repair done:
//!   `clear_repair()`.
//! - `append(&entries)` on the reactor (page cache only), then
//!   `let request = log.sync_request()`, `request.run()` on a blocking thread,
//!   `log.mark_synced(done)` back on the reactor → the durable index to hand
//!   to the consensus core. `sync()` does all three in place.
//! - Reads: `entries(low, high, bytes_max)` (zero-copy payloads) or
//!   `frames(low, high, bytes_max)` (the stored frames, for replication;
//!   decode with `frame::decode_frames`). `term_at`, `first_index`,
//!   `last_index`, `last_term`.
//! - Conflicts: `truncate_suffix(from)`; retention:
//!   `retention_first_index(policy, floor, now)` then `advance_start(..)`;
//!   follower reset: `reset(log_start)`; votes: `store_hard_state(&hs)`.
//! - After any I/O error from a sync, drop the `Log` and reopen it: the page
//!   cache can no longer be trusted to match the disk.

pub mod dump;
pub mod frame;
mod log;
mod meta;
mod repair;
mod segment;
pub mod verify;

use std::path::PathBuf;

pub use log::{
    IndexBuilt, IndexJob, Log, Opened, RetentionPolicy, SpareJob, SyncDone, SyncRequest,
};
pub use meta::{
    HARD_STATE_FILE_NAMES, LOCK_FILE_NAME, LOG_DIR_NAME, LOG_START_FILE_NAME,
    LOG_START_PRODUCERS_BYTES_MAX,
};
pub use repair::{DamagedRange, RepairMarker, REPAIR_FILE_NAME};
/// Helpers for tools that write or inspect segments directly (benches, tests).
pub use segment::{
    encode_segment_header, segment_file_name, SpareSegment, SEGMENT_HEADER_BYTES,
    SPARE_SEGMENT_FILE_NAME,
};

use crate::types::LogIndex;

/// Default size of one segment file: large enough that rolling (one fsync,
/// one file creation) is rare, small enough that retention is fine-grained.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// A segment must hold its header and a few frames.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Offsets inside a segment are stored as u32 in the index files.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;

/// The bounds on indexes and terms the engine accepts on disk (the same
/// the consensus core accepts from peers).
pub use crate::types::{LOG_INDEX_MAX, TERM_MAX};

/// How the log lays out its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Size of each segment file, fixed when the segment is created.
    pub segment_bytes: u64,
    /// Reserve the blocks of a new segment up front (`posix_fallocate`), so
    /// appends never run out of space mid-segment and syncs need not allocate.
    /// When false (or unsupported by the filesystem) segments are sparse.
    pub preallocate: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            preallocate: true,
        }
    }
}

/// Every way the storage engine can fail. Paths and offsets say where.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk full while writing {path}")]
    DiskFull { path: PathBuf },
    #[error("permission denied on {path}")]
    PermissionDenied { path: PathBuf },
    #[error("corrupt data in {path} at byte offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path} has format version {version}, this build reads only version {supported}")]
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
        supported: u32,
    },
    #[error("{path} does not start with the expected magic number")]
    BadMagic { path: PathBuf },
    #[error("entries must continue the log: expected index {expected}, got {got}")]
    NotContiguous { expected: LogIndex, got: LogIndex },
    #[error("index {index} is outside the log {first_index}..={last_index}")]
    OutOfRange {
        index: LogIndex,
        first_index: LogIndex,
        last_index: LogIndex,
    },
    #[error("entry {index} needs a frame of {frame_bytes} bytes, more than the format's {frame_bytes_max}")]
    EntryTooLarge {
        index: LogIndex,
        frame_bytes: u64,
        frame_bytes_max: u64,
    },
    #[error("invalid storage configuration: {reason}")]
    BadConfig { reason: &'static str },
    #[error("log start at entry {index} has term {given_term} but the log holds term {stored_term} there")]
    LogStartMismatch {
        index: LogIndex,
        stored_term: u64,
        given_term: u64,
    },
    #[error("data directory {path} is in use by another process")]
    DataDirLocked { path: PathBuf },
    #[error("both hard-state copies in {dir} are unreadable")]
    HardStateLost { dir: PathBuf },
    #[error("the repair marker still asks the next open to cut the log at index {cut_from}; reopen before clearing it")]
    RepairCutPending { cut_from: LogIndex },
}

impl StorageError {
    /// Classifies an I/O error on `path` into the typed variants.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StorageError {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StorageError::DiskFull { path },
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
                StorageError::PermissionDenied { path }
            }
            _ => StorageError::Io { path, source },
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> StorageError {
        StorageError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Little-endian integers at a byte offset of a file's bytes; missing bytes
/// read as zero (callers check lengths first, this only keeps reads panic-free).
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        word.copy_from_slice(src);
    }
    u32::from_le_bytes(word)
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        word.copy_from_slice(src);
    }
    u64::from_le_bytes(word)
}

/// Checks the start every raftlog file shares: at least `len_min` bytes,
/// then an 8-byte magic and a u32 format version (storage-format.md).
pub(crate) fn check_magic_and_version(
    path: &std::path::Path,
    bytes: &[u8],
    len_min: usize,
    magic: &[u8; 8],
    version_supported: u32,
) -> Result<(), StorageError> {
    if bytes.len() < len_min {
        return Err(StorageError::corrupt(
            path,
            bytes.len() as u64,
            "file is shorter than its header",
        ));
    }
    if bytes.get(0..8) != Some(&magic[..]) {
        return Err(StorageError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    let version = u32_at(bytes, 8);
    if version != version_supported {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
            supported: version_supported,
        });
    }
    Ok(())
}
