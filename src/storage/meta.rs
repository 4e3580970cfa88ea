//! The small files of a data directory: the lock, the hard state (two
//! copies) and the log-start file, each replaced atomically (write a temp
//! file, fsync it, rename it over the old one, fsync the directory), so a
//! crash at any step leaves the old or the new value, never a torn one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::{u32_at, u64_at, StorageError};
use crate::types::{HardState, LogStart, Membership};

pub const LOCK_FILE_NAME: &str = "LOCK";
pub const LOG_DIR_NAME: &str = "log";
pub const LOG_START_FILE_NAME: &str = "log-start";
/// Two copies, written one after the other, so one bad copy is survivable.
pub const HARD_STATE_FILE_NAMES: [&str; 2] = ["hard-state.0", "hard-state.1"];
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

const HARD_STATE_MAGIC: &[u8; 8] = b"RLOGHST\0";
const LOG_START_MAGIC: &[u8; 8] = b"RLOGLST\0";
pub(crate) const META_VERSION: u32 = 1;
const HARD_STATE_BYTES: usize = 44;
const LOG_START_HEADER_BYTES: usize = 32;
/// The log-start file with the producer table (version 2, storage-format.md
/// section 5); version 1, without it, is still read and is what a log start
/// without producers is written as, so such a data dir stays readable by
/// older builds.
const LOG_START_VERSION_PRODUCERS: u32 = 2;
/// Largest producer table a log-start file carries (the server keeps its
/// snapshots below this).
pub const LOG_START_PRODUCERS_BYTES_MAX: usize = 8 * 1024 * 1024;
/// A membership of MEMBERS_MAX members with maximal addresses stays below
/// 4 MiB; the producer table comes on top.
const LOG_START_BYTES_MAX: u64 = 4 * 1024 * 1024 + LOG_START_PRODUCERS_BYTES_MAX as u64 + 4;
const FLAG_VOTED: u32 = 1;

/// Tries to take a data directory's lock, `LOCK_RETRY_INTERVAL` apart
/// (half a second in all) before reporting it in use.
const LOCK_ATTEMPTS: u32 = 25;
const LOCK_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// An exclusive (writer) or shared (offline reader) `flock` on `DATA_DIR/LOCK`,
/// released when dropped (the kernel releases it if the process dies).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path, exclusive: bool) -> Result<DirLock, StorageError> {
        let path = dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(exclusive)
            .create(exclusive)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        let mode = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // A lock held for a moment is waited out: a process that is
        // exiting, or a child forked by the holder between its fork and its
        // exec (it holds a copy of every descriptor until then).
        let mut attempts = 0;
        loop {
            // SAFETY: flock only reads the descriptor, which `file` keeps open.
            let rc = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(DirLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(StorageError::io(&path, err));
            }
            if attempts >= LOCK_ATTEMPTS {
                return Err(StorageError::DataDirLocked {
                    path: dir.to_path_buf(),
                });
            }
            attempts += 1;
            std::thread::sleep(LOCK_RETRY_INTERVAL);
        }
    }
}

/// fsyncs a directory so that renames, creations and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

/// Replaces `dir/name` with `bytes`: write `name.tmp`, fsync, rename, fsync dir.
pub(crate) fn replace_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let final_path = dir.join(name);
    let temp_path = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let mut file = File::create(&temp_path).map_err(|e| StorageError::io(&temp_path, e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| StorageError::io(&temp_path, e))?;
    drop(file);
    std::fs::rename(&temp_path, &final_path).map_err(|e| StorageError::io(&final_path, e))?;
    sync_dir(dir)
}

/// Reads a whole small file, refusing one larger than `bytes_max`.
/// `Ok(None)` if it does not exist.
pub(crate) fn read_small_file(
    path: &Path,
    bytes_max: u64,
) -> Result<Option<Vec<u8>>, StorageError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(path, e)),
    };
    let mut bytes = Vec::new();
    file.take(bytes_max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| StorageError::io(path, e))?;
    if bytes.len() as u64 > bytes_max {
        return Err(StorageError::corrupt(
            path,
            bytes_max,
            "file is larger than its format allows",
        ));
    }
    Ok(Some(bytes))
}

/// Checks magic, version and the trailing CRC of a small file.
pub(crate) fn check_envelope(
    path: &Path,
    bytes: &[u8],
    magic: &[u8; 8],
    len_min: usize,
) -> Result<(), StorageError> {
    check_envelope_version(path, bytes, magic, len_min, META_VERSION)
}

fn check_envelope_version(
    path: &Path,
    bytes: &[u8],
    magic: &[u8; 8],
    len_min: usize,
    version: u32,
) -> Result<(), StorageError> {
    super::check_magic_and_version(path, bytes, len_min, magic, version)?;
    let crc_at = bytes.len() - 4;
    let stored = u32_at(bytes, crc_at);
    let computed = crc32fast::hash(bytes.get(..crc_at).unwrap_or_default());
    if stored != computed {
        return Err(StorageError::corrupt(
            path,
            crc_at as u64,
            format!("checksum {stored:#010x} does not match computed {computed:#010x}"),
        ));
    }
    Ok(())
}

/// One hard-state copy. `generation` orders copies: the higher one is newer.
pub(crate) fn encode_hard_state(state: &HardState, generation: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HARD_STATE_BYTES);
    bytes.extend_from_slice(HARD_STATE_MAGIC);
    bytes.extend_from_slice(&META_VERSION.to_le_bytes());
    let flags = if state.voted_for.is_some() {
        FLAG_VOTED
    } else {
        0
    };
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(&generation.to_le_bytes());
    bytes.extend_from_slice(&state.term.to_le_bytes());
    bytes.extend_from_slice(&state.voted_for.unwrap_or(0).to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(bytes.len(), HARD_STATE_BYTES);
    bytes
}

/// Decodes one hard-state copy: (state, generation).
pub(crate) fn decode_hard_state(
    path: &Path,
    bytes: &[u8],
) -> Result<(HardState, u64), StorageError> {
    if bytes.len() != HARD_STATE_BYTES {
        return Err(StorageError::corrupt(
            path,
            bytes.len() as u64,
            "hard-state file has the wrong length",
        ));
    }
    check_envelope(path, bytes, HARD_STATE_MAGIC, HARD_STATE_BYTES)?;
    let flags = u32_at(bytes, 12);
    if flags & !FLAG_VOTED != 0 {
        return Err(StorageError::corrupt(path, 12, "unknown hard-state flags"));
    }
    let voted = u64_at(bytes, 32);
    let voted_for = if flags & FLAG_VOTED != 0 {
        if voted == 0 {
            return Err(StorageError::corrupt(path, 32, "vote for node id 0"));
        }
        Some(voted)
    } else if voted != 0 {
        // The field and its flag disagree: which one is right is unknown,
        // and reading "no vote" could let the node vote twice in the term.
        return Err(StorageError::corrupt(
            path,
            32,
            "voted_for is set but the voted flag is clear",
        ));
    } else {
        None
    };
    let term = u64_at(bytes, 24);
    if term > super::TERM_MAX {
        return Err(StorageError::corrupt(
            path,
            24,
            format!(
                "term {term} is beyond any term a node reaches (at most {})",
                super::TERM_MAX
            ),
        ));
    }
    Ok((HardState { term, voted_for }, u64_at(bytes, 16)))
}

/// What the two hard-state copies say, and what is wrong with each.
pub(crate) struct HardStateCopies {
    /// The newest valid copy: (state, generation).
    pub newest: Option<(HardState, u64)>,
    /// Problems per copy (a missing file is not a problem when both are missing).
    pub problems: Vec<StorageError>,
    pub any_file_present: bool,
}

pub(crate) fn read_hard_state_copies(dir: &Path) -> Result<HardStateCopies, StorageError> {
    let mut copies = HardStateCopies {
        newest: None,
        problems: Vec::new(),
        any_file_present: false,
    };
    let mut missing = Vec::new();
    let mut conflict = false;
    for name in HARD_STATE_FILE_NAMES {
        let path = dir.join(name);
        match read_small_file(&path, HARD_STATE_BYTES as u64)? {
            None => missing.push(path),
            Some(bytes) => {
                copies.any_file_present = true;
                match decode_hard_state(&path, &bytes) {
                    Ok((state, generation)) => match copies.newest {
                        Some((newest, g)) if g == generation && newest != state => {
                            // A store writes both copies with the same
                            // bytes, so one of these is not what was
                            // stored, and which vote was cast is unknown:
                            // the votes count as lost (storage-format.md 4).
                            conflict = true;
                            copies.problems.push(StorageError::corrupt(
                                path,
                                16,
                                format!(
                                    "both hard-state copies are valid with the same generation {generation} but differ (term {} vote {:?} against term {} vote {:?}); the votes count as lost",
                                    newest.term, newest.voted_for, state.term, state.voted_for
                                ),
                            ));
                        }
                        Some((_, g)) if generation <= g => {}
                        _ => copies.newest = Some((state, generation)),
                    },
                    Err(e) => copies.problems.push(e),
                }
            }
        }
    }
    if conflict {
        copies.newest = None;
    }
    if copies.any_file_present {
        for path in missing {
            copies
                .problems
                .push(StorageError::corrupt(path, 0, "hard-state copy is missing"));
        }
    }
    Ok(copies)
}

/// Writes both copies, one after the other, each atomically.
pub(crate) fn store_hard_state(
    dir: &Path,
    state: &HardState,
    generation: u64,
) -> Result<(), StorageError> {
    let bytes = encode_hard_state(state, generation);
    for name in HARD_STATE_FILE_NAMES {
        replace_atomically(dir, name, &bytes)?;
    }
    Ok(())
}

pub(crate) fn encode_log_start(start: &LogStart) -> Vec<u8> {
    let mut membership = BytesMut::new();
    start.membership.encode(&mut membership);
    let producers = &start.producers;
    debug_assert!(producers.len() <= LOG_START_PRODUCERS_BYTES_MAX);
    let version = if producers.is_empty() {
        META_VERSION
    } else {
        LOG_START_VERSION_PRODUCERS
    };
    let mut bytes =
        Vec::with_capacity(LOG_START_HEADER_BYTES + membership.len() + 4 + producers.len() + 4);
    bytes.extend_from_slice(LOG_START_MAGIC);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&(membership.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&start.first_index.to_le_bytes());
    bytes.extend_from_slice(&start.prev_term.to_le_bytes());
    bytes.extend_from_slice(&membership);
    if version == LOG_START_VERSION_PRODUCERS {
        bytes.extend_from_slice(&(producers.len() as u32).to_le_bytes());
        bytes.extend_from_slice(producers);
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

pub(crate) fn decode_log_start(path: &Path, bytes: &[u8]) -> Result<LogStart, StorageError> {
    // Version 2 adds the producer table; anything else is checked as version 1.
    let version = match u32_at(bytes, 8) {
        LOG_START_VERSION_PRODUCERS => LOG_START_VERSION_PRODUCERS,
        _ => META_VERSION,
    };
    check_envelope_version(
        path,
        bytes,
        LOG_START_MAGIC,
        LOG_START_HEADER_BYTES + 4,
        version,
    )?;
    let membership_len = u32_at(bytes, 12) as usize;
    let membership_end = LOG_START_HEADER_BYTES.saturating_add(membership_len);
    let producers = if version == LOG_START_VERSION_PRODUCERS {
        let producers_len = u32_at(bytes, membership_end) as usize;
        let producers_at = membership_end.saturating_add(4);
        let producers_end = producers_at.saturating_add(producers_len);
        if producers_len > LOG_START_PRODUCERS_BYTES_MAX
            || producers_end.saturating_add(4) != bytes.len()
        {
            return Err(StorageError::corrupt(
                path,
                membership_end as u64,
                "membership or producer table length does not match the file length",
            ));
        }
        bytes
            .get(producers_at..producers_end)
            .map(Bytes::copy_from_slice)
            .unwrap_or_default()
    } else {
        if membership_end.saturating_add(4) != bytes.len() {
            return Err(StorageError::corrupt(
                path,
                12,
                "membership length does not match the file length",
            ));
        }
        Bytes::new()
    };
    let membership_bytes = bytes
        .get(LOG_START_HEADER_BYTES..LOG_START_HEADER_BYTES + membership_len)
        .unwrap_or_default();
    let membership = Membership::decode(membership_bytes).map_err(|e| {
        StorageError::corrupt(
            path,
            LOG_START_HEADER_BYTES as u64,
            format!("bad membership: {e}"),
        )
    })?;
    let first_index = u64_at(bytes, 16);
    if first_index == 0 || first_index > super::LOG_INDEX_MAX {
        return Err(StorageError::corrupt(
            path,
            16,
            format!("first index {first_index} is out of range"),
        ));
    }
    let prev_term = u64_at(bytes, 24);
    if prev_term > super::TERM_MAX {
        return Err(StorageError::corrupt(
            path,
            24,
            format!(
                "previous term {prev_term} is beyond any term a node reaches (at most {})",
                super::TERM_MAX
            ),
        ));
    }
    Ok(LogStart {
        first_index,
        prev_term,
        membership,
        producers,
    })
}

pub(crate) fn read_log_start(dir: &Path) -> Result<Option<LogStart>, StorageError> {
    let path = dir.join(LOG_START_FILE_NAME);
    match read_small_file(&path, LOG_START_BYTES_MAX)? {
        None => Ok(None),
        Some(bytes) => decode_log_start(&path, &bytes).map(Some),
    }
}

pub(crate) fn store_log_start(dir: &Path, start: &LogStart) -> Result<(), StorageError> {
    replace_atomically(dir, LOG_START_FILE_NAME, &encode_log_start(start))
}

/// Path helper used by tests and tools.
pub(crate) fn log_dir(dir: &Path) -> PathBuf {
    dir.join(LOG_DIR_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(producers: &'static [u8]) -> LogStart {
        LogStart {
            first_index: 30,
            prev_term: 2,
            membership: Membership::with_voters([(1, "127.0.0.1:7001".to_string())]),
            producers: Bytes::from_static(producers),
        }
    }

    /// Issue 13: the producer table rides in the log-start file (version
    /// 2); a log start without one is written as version 1, as before.
    #[test]
    fn a_log_start_with_producers_round_trips_and_one_without_stays_version_1() {
        let path = Path::new("log-start");
        let with = start(b"\x01table");
        let bytes = encode_log_start(&with);
        assert_eq!(u32_at(&bytes, 8), LOG_START_VERSION_PRODUCERS);
        assert_eq!(decode_log_start(path, &bytes).unwrap(), with);
        let without = start(b"");
        let bytes = encode_log_start(&without);
        assert_eq!(u32_at(&bytes, 8), META_VERSION);
        assert_eq!(decode_log_start(path, &bytes).unwrap(), without);
        // A damaged length is refused, never read past the file.
        let mut bad = encode_log_start(&with);
        let at = bad.len() - 4 - 6 - 4;
        bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc_at = bad.len() - 4;
        let crc = crc32fast::hash(&bad[..crc_at]);
        bad[crc_at..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_log_start(path, &bad),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
