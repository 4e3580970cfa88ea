//! One segment file: a 64-byte header, then frames back to back, then zeros.
//!
//! A segment is mapped once (`MmapRaw`, so no Rust reference to the whole
//! file is ever held across a write). Writes go only to bytes past the
//! published end of the active segment and to the watermark slot in the
//! header; readers get `Bytes` over published frames only, so no reader ever
//! observes a byte change (see `MapSlice`).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

use super::frame::{self, FrameError, FrameHeader};
use super::meta::TEMP_SUFFIX;
use super::{u32_at, u64_at, StorageError};
use crate::types::LogIndex;

pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"RLOGSEG\0";
pub(crate) const INDEX_MAGIC: &[u8; 8] = b"RLOGIDX\0";
pub(crate) const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 64;
const HEADER_CRC_AT: usize = 44;
const WATERMARK_AT: usize = 48;
const WATERMARK_CRC_AT: usize = 56;
const INDEX_HEADER_BYTES: usize = 32;
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
pub(crate) const INDEX_SUFFIX: &str = ".idx";
/// Digits of the zero-padded first index in a segment's name (u64::MAX has 20).
pub(crate) const NAME_DIGITS: usize = 20;
/// [`Segment::zero_ahead`] keeps at least `ZERO_AHEAD_MIN_BYTES` past the
/// frames written, extending by `ZERO_AHEAD_STEP_BYTES` at a time.
pub(crate) const ZERO_AHEAD_MIN_BYTES: usize = 256 * 1024;
pub(crate) const ZERO_AHEAD_STEP_BYTES: usize = 1024 * 1024;
/// Granule of the zero-scan past a cut tail.
const ZERO_SCAN_CHUNK_BYTES: usize = 64 * 1024;

pub fn segment_file_name(first_index: LogIndex) -> String {
    format!("{first_index:0NAME_DIGITS$}{SEGMENT_SUFFIX}")
}

pub(crate) fn index_file_name(first_index: LogIndex) -> String {
    format!("{first_index:0NAME_DIGITS$}{INDEX_SUFFIX}")
}

/// The first index encoded in a file name `<20 digits><suffix>`, if it is one.
pub(crate) fn parse_name(name: &str, suffix: &str) -> Option<LogIndex> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes a segment header (storage-format.md 2.1) whose watermark slot
/// says `synced_bytes` (0 for a new segment).
pub fn encode_segment_header(
    first_index: LogIndex,
    segment_bytes: u64,
    synced_bytes: u64,
) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
    header[16..24].copy_from_slice(&first_index.to_le_bytes());
    header[24..32].copy_from_slice(&segment_bytes.to_le_bytes());
    let crc = crc32fast::hash(&header[..HEADER_CRC_AT]);
    header[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    header[WATERMARK_AT..WATERMARK_AT + 8].copy_from_slice(&synced_bytes.to_le_bytes());
    let wcrc = crc32fast::hash(&header[WATERMARK_AT..WATERMARK_CRC_AT]);
    header[WATERMARK_CRC_AT..WATERMARK_CRC_AT + 4].copy_from_slice(&wcrc.to_le_bytes());
    header
}

/// Validates a segment header; returns the watermark (0 if its slot is bad).
pub(crate) fn check_segment_header(
    path: &Path,
    header: &[u8],
    first_index: LogIndex,
) -> Result<usize, StorageError> {
    super::check_magic_and_version(
        path,
        header,
        SEGMENT_HEADER_BYTES,
        SEGMENT_MAGIC,
        SEGMENT_VERSION,
    )?;
    let stored = u32_at(header, HEADER_CRC_AT);
    let computed = crc32fast::hash(header.get(..HEADER_CRC_AT).unwrap_or_default());
    if stored != computed {
        return Err(StorageError::corrupt(
            path,
            HEADER_CRC_AT as u64,
            "segment header checksum mismatch",
        ));
    }
    if u32_at(header, 12) as usize != SEGMENT_HEADER_BYTES {
        return Err(StorageError::corrupt(
            path,
            12,
            "unexpected segment header length",
        ));
    }
    if u64_at(header, 16) != first_index {
        return Err(StorageError::corrupt(
            path,
            16,
            format!(
                "header says first index {}, file name says {first_index}",
                u64_at(header, 16)
            ),
        ));
    }
    let watermark = u64_at(header, WATERMARK_AT);
    let watermark_ok = u32_at(header, WATERMARK_CRC_AT)
        == crc32fast::hash(
            header
                .get(WATERMARK_AT..WATERMARK_CRC_AT)
                .unwrap_or_default(),
        );
    // A torn watermark slot only makes recovery more conservative.
    Ok(if watermark_ok {
        usize::try_from(watermark).unwrap_or(0)
    } else {
        0
    })
}

/// Owner of a zero-copy slice of a mapping, for `Bytes::from_owner`.
struct MapSlice {
    map: Arc<MmapRaw>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        debug_assert!(self.start + self.len <= self.map.len());
        // SAFETY: the range lies inside the mapping (checked when the slice
        // was made), the Arc keeps the mapping alive, and the bytes are
        // published frames, which this process never writes again (appends go
        // past the end, truncation starts a new file, recovery zeroing happens
        // before any reader exists). Other processes are kept out by the lock.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.start), self.len) }
    }
}

/// The dense index of a segment: entry `first_index + i` starts at `offsets[i]`.
#[derive(Debug)]
pub(crate) struct SegIndex {
    pub offsets: Vec<u32>,
    /// Byte offset just past the last indexed frame.
    pub end: usize,
    /// True when the offsets came from an index file and the frames were not
    /// scanned: reads then verify each frame's checksum.
    pub crc_on_read: bool,
}

/// How a frame-by-frame scan stopped.
#[derive(Debug)]
pub(crate) enum ScanStop {
    /// Zero checksum and length: the end-of-data mark (or the file's end).
    EndMark,
    /// Reached the index limit (the next segment starts there).
    Limit,
    /// A frame that is torn, corrupt or out of sequence.
    Bad { offset: usize, error: FrameError },
}

pub(crate) struct Scan {
    pub offsets: Vec<u32>,
    pub end: usize,
    pub last_term: Option<u64>,
    pub stop: ScanStop,
}

pub(crate) struct Segment {
    /// Unique within this process; names the segment in a `SyncDone`.
    pub id: u64,
    pub first_index: LogIndex,
    pub path: PathBuf,
    pub map: Arc<MmapRaw>,
    pub writable: bool,
    /// `synced_bytes` read from the header at open.
    pub watermark_on_disk: usize,
    /// `segment_bytes` from the header: the length the file was created
    /// with. Segments never shrink, so a shorter file lost its end.
    pub created_bytes: u64,
    pub index: OnceLock<SegIndex>,
    /// End as of the latest sync request (bytes below are covered by it).
    pub requested_end: usize,
    /// Bytes known durable from completed syncs.
    pub durable_end: usize,
    /// Watermark value last written into the header slot.
    pub watermark_written: usize,
    /// Bytes below were dirtied, zeros ahead of the frames included (see
    /// [`Segment::zero_ahead`]); the next sync flushes up to here. Never
    /// above the capacity.
    pub zeroed_end: usize,
    pub modified: SystemTime,
}

impl Segment {
    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    /// The whole mapping. Sound to hold only while no write happens, which
    /// the `&self` / `&mut self` split guarantees (writes take `&mut self`).
    pub fn view(&self) -> &[u8] {
        // SAFETY: the mapping is alive as long as `self`; writes through the
        // raw pointer happen only in `&mut self` methods, so none overlaps
        // the lifetime of this shared borrow.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    /// A zero-copy `Bytes` over `start..end` of the mapping.
    pub fn bytes(&self, start: usize, end: usize) -> Bytes {
        debug_assert!(start <= end && end <= self.capacity());
        let end = end.min(self.capacity());
        let start = start.min(end);
        Bytes::from_owner(MapSlice {
            map: Arc::clone(&self.map),
            start,
            len: end - start,
        })
    }

    /// Mutable access to `start..end`, which must not be published yet (or be
    /// the header's watermark slot, or a tail being zeroed before any reader
    /// exists).
    pub fn bytes_mut(&mut self, start: usize, end: usize) -> &mut [u8] {
        debug_assert!(self.writable);
        debug_assert!(start <= end && end <= self.capacity());
        let end = end.min(self.capacity());
        let start = start.min(end);
        // SAFETY: in bounds (clamped above); the caller passes only ranges no
        // reader holds (unpublished bytes, the watermark slot, or a recovery
        // tail), and `&mut self` excludes any other borrow of the mapping in
        // this process. The mapping was made writable (`self.writable`).
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(start), end - start) }
    }

    /// Keeps at least [`ZERO_AHEAD_MIN_BYTES`] past `end` (the end of the
    /// frames) written with zeros, in steps of [`ZERO_AHEAD_STEP_BYTES`].
    ///
    /// Why: a preallocated file's blocks are *unwritten* extents, and the
    /// first writeback into one makes ext4 (or XFS) convert it, a metadata
    /// change that every fdatasync must then commit to the journal, so
    /// frames written into a fresh extent made each group commit pay a
    /// journal commit (criterion `append_synced/100B/batch1`: 151 -> 140 µs
    /// with this on the machine of issue 14). Zeros written a
    /// step ahead are flushed by the next sync (`zeroed_end` extends its
    /// range), which converts the whole step at once; the syncs after it
    /// only overwrite. PostgreSQL zero-fills WAL segments for the same
    /// reason (`wal_init_zero`). The bytes past `end` are zeros already
    /// (storage-format.md 2: frames, then zeros), so this changes no
    /// content and no reader sees it: readers hold only published bytes.
    pub fn zero_ahead(&mut self, end: usize) {
        let from = self.zeroed_end.max(end);
        if from - end >= ZERO_AHEAD_MIN_BYTES {
            return;
        }
        let to = (from + ZERO_AHEAD_STEP_BYTES).min(self.capacity());
        if from < to {
            self.bytes_mut(from, to).fill(0);
        }
        self.zeroed_end = to;
    }

    pub fn write_watermark(&mut self, synced_bytes: usize) {
        let slot = self.bytes_mut(WATERMARK_AT, WATERMARK_AT + 16);
        slot[0..8].copy_from_slice(&(synced_bytes as u64).to_le_bytes());
        let crc = crc32fast::hash(&slot[0..8]);
        slot[8..12].copy_from_slice(&crc.to_le_bytes());
        slot[12..16].fill(0);
        self.watermark_written = synced_bytes;
    }

    /// Scans frames from `start`, expecting index `next_index`, up to index
    /// `limit` (inclusive) if given. Checks every checksum.
    pub fn scan(&self, start: usize, next_index: LogIndex, limit: Option<LogIndex>) -> Scan {
        scan_frames(self.view(), start, next_index, limit)
    }

    /// Zeroes every non-zero byte in `from..capacity` and makes that durable.
    /// Only called at open, before any reader exists.
    pub fn zero_tail(&mut self, from: usize) -> Result<(), StorageError> {
        let capacity = self.capacity();
        let mut chunk_start = from;
        let mut dirty: Option<(usize, usize)> = None;
        while chunk_start < capacity {
            let chunk_end = (chunk_start + ZERO_SCAN_CHUNK_BYTES
                - chunk_start % ZERO_SCAN_CHUNK_BYTES)
                .min(capacity);
            let nonzero = self
                .view()
                .get(chunk_start..chunk_end)
                .is_some_and(|c| c.iter().any(|b| *b != 0));
            if nonzero {
                self.bytes_mut(chunk_start, chunk_end).fill(0);
                dirty = Some(match dirty {
                    None => (chunk_start, chunk_end),
                    Some((low, _)) => (low, chunk_end),
                });
            }
            chunk_start = chunk_end;
        }
        if let Some((low, high)) = dirty {
            self.map
                .flush_range(low, high - low)
                .map_err(|e| StorageError::io(&self.path, e))?;
        }
        Ok(())
    }
}

/// Scans the frames of a segment's bytes from `start`, expecting index
/// `next_index`, up to index `limit` (inclusive) if given. Checks every
/// checksum.
pub(crate) fn scan_frames(
    view: &[u8],
    start: usize,
    next_index: LogIndex,
    limit: Option<LogIndex>,
) -> Scan {
    let mut scan = Scan {
        offsets: Vec::new(),
        end: start,
        last_term: None,
        stop: ScanStop::EndMark,
    };
    let mut expected = next_index;
    loop {
        if limit.is_some_and(|limit| expected > limit) {
            scan.stop = ScanStop::Limit;
            return scan;
        }
        let offset = scan.end;
        if offset + 8 > view.len() || frame::is_end_mark(view, offset) {
            scan.stop = ScanStop::EndMark;
            return scan;
        }
        match frame::decode_header(view, offset, true) {
            Ok(FrameHeader { index, .. }) if index != expected => {
                scan.stop = ScanStop::Bad {
                    offset,
                    error: FrameError::NotContiguous {
                        offset,
                        expected,
                        got: index,
                    },
                };
                return scan;
            }
            Ok(header) => {
                scan.offsets.push(offset as u32);
                scan.end = offset + header.frame_bytes;
                scan.last_term = Some(header.term);
                expected += 1;
            }
            Err(error) => {
                scan.stop = ScanStop::Bad { offset, error };
                return scan;
            }
        }
    }
}

/// Whether the frames of a segment's bytes, from offset 64, run without a
/// gap from `first_index` up to `last`, judged by their headers alone: each
/// frame's length, kind, reserved bits and index are checked as in
/// storage-format.md 2.2, its checksum is not. Reads one frame header per
/// entry, so open can tell a trusted segment that stops short (the next
/// segment is missing) without an index file and without checksumming it.
pub(crate) fn frames_reach(view: &[u8], first_index: LogIndex, last: LogIndex) -> bool {
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected = first_index;
    while expected <= last {
        match frame::decode_header(view, offset, false) {
            Ok(header) if header.index == expected => {
                offset = offset.saturating_add(header.frame_bytes);
                let Some(next) = expected.checked_add(1) else {
                    return true;
                };
                expected = next;
            }
            _ => return false,
        }
    }
    true
}

/// Best effort, for sizing a damaged range: the highest index of a valid
/// frame (checksum and all checks of storage-format.md 2.2 except sequence)
/// found at any byte position at or after `from`, among frames whose index
/// lies in `min_index..=limit`. Searches byte by byte past bad bytes, so it
/// finds frames after a damaged length field too; the structural checks run
/// before the checksum, so a position costs a checksum only when its header
/// is plausible.
pub(crate) fn highest_valid_index(
    view: &[u8],
    from: usize,
    min_index: LogIndex,
    limit: Option<LogIndex>,
) -> Option<LogIndex> {
    let limit = limit.unwrap_or(super::LOG_INDEX_MAX);
    let mut best = None;
    let mut at = from.max(SEGMENT_HEADER_BYTES);
    while at + frame::FRAME_HEADER_BYTES <= view.len() {
        if frame::is_end_mark(view, at) {
            at += 8;
            continue;
        }
        let plausible = frame::decode_header(view, at, false)
            .is_ok_and(|h| (min_index..=limit).contains(&h.index));
        if plausible {
            if let Ok(header) = frame::decode_header(view, at, true) {
                best = best.max(Some(header.index));
                at += header.frame_bytes;
                continue;
            }
        }
        at += 1;
    }
    best
}

/// The entry count of a valid index file for the segment `first_index`, or
/// `None` when it is missing or fails any check of storage-format.md 3
/// other than the expected count. Reads only the file, never the segment.
pub(crate) fn index_file_entry_count(path: &Path, first_index: LogIndex) -> Option<u64> {
    let file = File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(super::SEGMENT_BYTES_MAX)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() < INDEX_HEADER_BYTES + 4 || bytes.get(0..8) != Some(&INDEX_MAGIC[..]) {
        return None;
    }
    let count = u64_at(&bytes, 24);
    let crc_at = bytes.len() - 4;
    let valid = u32_at(&bytes, 8) == SEGMENT_VERSION
        && u64_at(&bytes, 16) == first_index
        && count.checked_mul(4).and_then(|n| n.checked_add(36)) == Some(bytes.len() as u64)
        && u32_at(&bytes, crc_at) == crc32fast::hash(bytes.get(..crc_at).unwrap_or_default());
    valid.then_some(count)
}

/// Name (in `log/`) of the file prepared ahead to become the next segment.
/// It ends in `.tmp`, so a crash leaves nothing the log could mistake for
/// part of it: opening the log deletes it like any unfinished creation.
pub const SPARE_SEGMENT_FILE_NAME: &str = "spare.seg.tmp";

/// A file of `segment_bytes`, preallocated and fsynced, that [`Log`] turns
/// into its next segment at a roll with one small header write and sync
/// instead of allocating (and syncing) a whole segment under the log lock.
///
/// [`Log`]: super::Log
#[derive(Debug)]
pub struct SpareSegment {
    file: File,
    path: PathBuf,
    pub(crate) segment_bytes: u64,
}

/// Creates the spare segment file (blocking: preallocation and fsync of a
/// whole segment; run it on a blocking thread, outside the log lock).
pub fn create_spare_segment(
    log_dir: &Path,
    segment_bytes: u64,
    preallocate: bool,
) -> Result<SpareSegment, StorageError> {
    let path = log_dir.join(SPARE_SEGMENT_FILE_NAME);
    let file = allocate_file(&path, segment_bytes, preallocate)?;
    file.sync_all().map_err(|e| StorageError::io(&path, e))?;
    Ok(SpareSegment {
        file,
        path,
        segment_bytes,
    })
}

/// Creates (truncating) `path` with `segment_bytes` reserved.
fn allocate_file(path: &Path, segment_bytes: u64, preallocate: bool) -> Result<File, StorageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| StorageError::io(path, e))?;
    let len = i64::try_from(segment_bytes).map_err(|_| StorageError::BadConfig {
        reason: "segment_bytes does not fit in off_t",
    })?;
    let mut allocated = false;
    if preallocate {
        // SAFETY: posix_fallocate only reads the descriptor, kept open by `file`.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        if rc == 0 {
            allocated = true;
        } else if rc != libc::EOPNOTSUPP && rc != libc::EINVAL {
            return Err(StorageError::io(
                path,
                std::io::Error::from_raw_os_error(rc),
            ));
        }
    }
    if !allocated {
        file.set_len(segment_bytes)
            .map_err(|e| StorageError::io(path, e))?;
    }
    Ok(file)
}

/// Creates a new segment file durably (temp file, header, preallocation,
/// fsync, rename); the caller fsyncs the directory before relying on it.
pub(crate) fn create_segment(
    log_dir: &Path,
    first_index: LogIndex,
    segment_bytes: u64,
    preallocate: bool,
    id: u64,
) -> Result<Segment, StorageError> {
    let name = segment_file_name(first_index);
    let temp_path = log_dir.join(format!("{name}{TEMP_SUFFIX}"));
    let file = allocate_file(&temp_path, segment_bytes, preallocate)?;
    finish_segment(file, &temp_path, log_dir, first_index, segment_bytes, id)
}

/// Turns `spare` into the segment starting at `first_index` (header, fsync,
/// rename); the caller fsyncs the directory before relying on it.
pub(crate) fn segment_from_spare(
    spare: SpareSegment,
    log_dir: &Path,
    first_index: LogIndex,
    id: u64,
) -> Result<Segment, StorageError> {
    let SpareSegment {
        file,
        path,
        segment_bytes,
    } = spare;
    finish_segment(file, &path, log_dir, first_index, segment_bytes, id)
}

/// Writes the header of an allocated file at `temp_path`, fsyncs it,
/// renames it to the segment name of `first_index` and maps it.
fn finish_segment(
    file: File,
    temp_path: &Path,
    log_dir: &Path,
    first_index: LogIndex,
    segment_bytes: u64,
    id: u64,
) -> Result<Segment, StorageError> {
    use std::os::unix::fs::FileExt;
    let path = log_dir.join(segment_file_name(first_index));
    file.write_all_at(&encode_segment_header(first_index, segment_bytes, 0), 0)
        .and_then(|_| file.sync_all())
        .map_err(|e| StorageError::io(temp_path, e))?;
    std::fs::rename(temp_path, &path).map_err(|e| StorageError::io(&path, e))?;
    let map = MmapOptions::new()
        .map_raw(&file)
        .map_err(|e| StorageError::io(&path, e))?;
    let segment = Segment {
        id,
        first_index,
        path,
        map: Arc::new(map),
        writable: true,
        watermark_on_disk: 0,
        created_bytes: segment_bytes,
        index: OnceLock::new(),
        requested_end: SEGMENT_HEADER_BYTES,
        durable_end: SEGMENT_HEADER_BYTES,
        watermark_written: 0,
        zeroed_end: 0,
        modified: SystemTime::now(),
    };
    let _ = segment.index.set(SegIndex {
        offsets: Vec::new(),
        end: SEGMENT_HEADER_BYTES,
        crc_on_read: false,
    });
    Ok(segment)
}

/// Opens an existing segment, validating its header.
pub(crate) fn open_segment(
    path: PathBuf,
    first_index: LogIndex,
    writable: bool,
    id: u64,
) -> Result<Segment, StorageError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(writable)
        .open(&path)
        .map_err(|e| StorageError::io(&path, e))?;
    let metadata = file.metadata().map_err(|e| StorageError::io(&path, e))?;
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    (&mut file)
        .take(SEGMENT_HEADER_BYTES as u64)
        .read_to_end(&mut header)
        .map_err(|e| StorageError::io(&path, e))?;
    let watermark = check_segment_header(&path, &header, first_index)?;
    if first_index == 0 || first_index > super::LOG_INDEX_MAX {
        return Err(StorageError::corrupt(
            &path,
            16,
            format!(
                "first index {first_index} is outside 1..={}",
                super::LOG_INDEX_MAX
            ),
        ));
    }
    let capacity = metadata.len();
    if capacity > super::SEGMENT_BYTES_MAX || usize::try_from(capacity).is_err() {
        return Err(StorageError::corrupt(
            &path,
            0,
            "segment file is larger than the format allows",
        ));
    }
    let map = if writable {
        MmapOptions::new().map_raw(&file)
    } else {
        MmapOptions::new().map_raw_read_only(&file)
    }
    .map_err(|e| StorageError::io(&path, e))?;
    let watermark_on_disk = if watermark > capacity as usize {
        0
    } else {
        watermark
    };
    Ok(Segment {
        id,
        first_index,
        path,
        map: Arc::new(map),
        writable,
        watermark_on_disk,
        created_bytes: u64_at(&header, 24),
        index: OnceLock::new(),
        requested_end: 0,
        durable_end: 0,
        watermark_written: watermark_on_disk,
        zeroed_end: 0,
        modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

/// Writes the index file of a sealed segment. Not fsynced: it can be rebuilt.
pub(crate) fn write_index_file(
    path: &Path,
    first_index: LogIndex,
    offsets: &[u32],
) -> Result<(), StorageError> {
    let mut bytes = Vec::with_capacity(INDEX_HEADER_BYTES + offsets.len() * 4 + 4);
    bytes.extend_from_slice(INDEX_MAGIC);
    bytes.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&first_index.to_le_bytes());
    bytes.extend_from_slice(&(offsets.len() as u64).to_le_bytes());
    for offset in offsets {
        bytes.extend_from_slice(&offset.to_le_bytes());
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(path, &bytes).map_err(|e| StorageError::io(path, e))
}

/// Why an index file was not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IndexFileProblem {
    Missing,
    Unreadable,
    Invalid { offset: u64, reason: &'static str },
}

/// Reads an index file expected to hold exactly `entry_count` offsets of
/// frames inside a segment of `capacity` bytes.
pub(crate) fn read_index_file(
    path: &Path,
    first_index: LogIndex,
    entry_count: u64,
    capacity: usize,
) -> Result<Vec<u32>, IndexFileProblem> {
    let invalid = |offset: u64, reason| IndexFileProblem::Invalid { offset, reason };
    let expected_len = (INDEX_HEADER_BYTES as u64)
        .checked_add(
            entry_count
                .checked_mul(4)
                .ok_or(invalid(24, "entry count overflows"))?,
        )
        .and_then(|n| n.checked_add(4))
        .ok_or(invalid(24, "entry count overflows"))?;
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(IndexFileProblem::Missing)
        }
        Err(_) => return Err(IndexFileProblem::Unreadable),
    };
    let mut bytes = Vec::new();
    file.take(expected_len + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| IndexFileProblem::Unreadable)?;
    if bytes.len() as u64 != expected_len {
        return Err(invalid(
            bytes.len() as u64,
            "index file length does not match the entry count",
        ));
    }
    if bytes.get(0..8) != Some(&INDEX_MAGIC[..]) {
        return Err(invalid(0, "bad magic"));
    }
    if u32_at(&bytes, 8) != SEGMENT_VERSION {
        return Err(invalid(8, "unsupported version"));
    }
    if u32_at(&bytes, 12) != 0 {
        return Err(invalid(12, "reserved bytes are not zero"));
    }
    let crc_at = bytes.len() - 4;
    if u32_at(&bytes, crc_at) != crc32fast::hash(bytes.get(..crc_at).unwrap_or_default()) {
        return Err(invalid(crc_at as u64, "checksum mismatch"));
    }
    if u64_at(&bytes, 16) != first_index {
        return Err(invalid(16, "first index does not match the segment"));
    }
    if u64_at(&bytes, 24) != entry_count {
        return Err(invalid(24, "entry count does not match the segment"));
    }
    let mut offsets = Vec::with_capacity(entry_count as usize);
    let mut previous_end = SEGMENT_HEADER_BYTES;
    for (i, word) in bytes
        .get(INDEX_HEADER_BYTES..crc_at)
        .unwrap_or_default()
        .chunks_exact(4)
        .enumerate()
    {
        let offset = u32_at(word, 0) as usize;
        let at = (INDEX_HEADER_BYTES + 4 * i) as u64;
        if i == 0 && offset != SEGMENT_HEADER_BYTES {
            return Err(invalid(
                at,
                "the first offset is not 64, where a segment's first frame is",
            ));
        }
        if offset < previous_end || offset + frame::FRAME_HEADER_BYTES > capacity {
            return Err(invalid(
                at,
                "offsets are not increasing frame positions inside the segment",
            ));
        }
        previous_end = offset + frame::FRAME_HEADER_BYTES;
        offsets.push(offset as u32);
    }
    Ok(offsets)
}
