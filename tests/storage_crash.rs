//! Crash tests (storage-format.md, "Recovery"): sync up to index S, append
//! more, then damage the files the way a crash (or the disk) can, reopen and
//! check what the log holds.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raftlog::storage::verify::verify_data_dir;
use raftlog::storage::{Log, LogConfig};
use raftlog::types::{Entry, LogIndex};

const SEGMENT_HEADER_BYTES: usize = 64;
const FRAME_HEADER_BYTES: usize = 48;
const PAYLOAD_BYTES: usize = 100;
const FRAME_BYTES: usize = FRAME_HEADER_BYTES + PAYLOAD_BYTES;
/// Entries 1..=SYNCED are synced (in two syncs, so the header watermark
/// covers the first ten); SYNCED+1..=LAST are appended without a sync.
const SYNCED: LogIndex = 15;
const LAST: LogIndex = 20;

fn entry(index: LogIndex) -> Entry {
    let payload: Vec<u8> = (0..PAYLOAD_BYTES)
        .map(|i| (index as usize * 7 + i) as u8)
        .collect();
    Entry::data(index, 1 + index / 8, Bytes::from(payload))
}

/// These tests simulate crashes by editing files, not by losing power, so a
/// RAM-backed directory serves (thousands of reopens, each with an msync).
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        preallocate: false,
    }
}

fn frame_offset(index: LogIndex) -> usize {
    SEGMENT_HEADER_BYTES + (index as usize - 1) * FRAME_BYTES
}

fn segment_path(dir: &Path, first: LogIndex) -> PathBuf {
    dir.join("log").join(format!("{first:020}.seg"))
}

/// Builds the crash scenario and returns the bytes of the only segment.
fn build_single_segment(dir: &Path) -> Vec<u8> {
    let mut log = Log::open(dir, config(64 * 1024)).unwrap().log;
    log.append(&(1..=10).map(entry).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(log.sync().unwrap(), 10);
    log.append(&(11..=SYNCED).map(entry).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(log.sync().unwrap(), SYNCED);
    log.append(&(SYNCED + 1..=LAST).map(entry).collect::<Vec<_>>())
        .unwrap();
    drop(log);
    std::fs::read(segment_path(dir, 1)).unwrap()
}

/// Puts `bytes` back as the only file of the log directory.
fn restore_single_segment(dir: &Path, bytes: &[u8]) {
    for item in std::fs::read_dir(dir.join("log")).unwrap() {
        std::fs::remove_file(item.unwrap().path()).unwrap();
    }
    std::fs::write(segment_path(dir, 1), bytes).unwrap();
    let _ = std::fs::remove_file(dir.join("REPAIR"));
}

fn assert_prefix(log: &Log, last: LogIndex) {
    assert_eq!(log.last_index(), last);
    let read = log.entries(1, last, usize::MAX).unwrap();
    assert_eq!(read, (1..=last).map(entry).collect::<Vec<_>>());
}

/// (a) A torn write of the tail, modelled as the file cut at every byte of
/// the unsynced frames, reopens as exactly the whole frames before the cut,
/// which include every synced entry; the log then takes appends again.
#[test]
fn a_tail_cut_at_any_byte_reopens_as_the_prefix_of_whole_frames() {
    let dir = scratch_dir();
    let full = build_single_segment(dir.path());
    let data_end = frame_offset(LAST + 1);
    for cut in frame_offset(SYNCED + 1)..=data_end {
        for zero_fill in [false, true] {
            let mut bytes = full.clone();
            if zero_fill {
                // A preallocated file keeps its length; the lost bytes read as zeros.
                bytes[cut..data_end].fill(0);
            } else {
                bytes.truncate(cut);
            }
            restore_single_segment(dir.path(), &bytes);
            let mut log = Log::open(dir.path(), config(64 * 1024)).unwrap().log;
            let whole = SYNCED + ((cut - frame_offset(SYNCED + 1)) / FRAME_BYTES) as u64;
            assert_prefix(&log, whole);
            if cut % 37 == 0 {
                log.append(&[entry(whole + 1)]).unwrap();
                log.sync().unwrap();
                drop(log);
                let log = Log::open(dir.path(), config(64 * 1024)).unwrap().log;
                assert_prefix(&log, whole + 1);
            }
        }
    }
}

/// (b) A single flipped bit anywhere in the unsynced tail (or in the zeros
/// after it) reopens as the prefix before the damaged frame: no corrupt
/// entry is ever returned and every synced entry survives. When valid frames
/// follow the damaged one it is damage (storage-format.md 6.2a: the frames
/// may have been acknowledged), reported with a repair marker; a bad last
/// frame is a torn tail, cut silently.
#[test]
fn a_bit_flip_in_the_unsynced_tail_reopens_as_the_prefix_before_it() {
    let dir = scratch_dir();
    let full = build_single_segment(dir.path());
    let data_end = frame_offset(LAST + 1);
    for bit in frame_offset(SYNCED + 1) * 8..(data_end + 8) * 8 {
        let mut bytes = full.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        restore_single_segment(dir.path(), &bytes);
        let opened =
            Log::open(dir.path(), config(64 * 1024)).unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        let log = opened.log;
        let damaged_index = ((bit / 8 - SEGMENT_HEADER_BYTES) / FRAME_BYTES) as u64 + 1;
        let expected_last = (damaged_index - 1).min(LAST);
        assert_prefix(&log, expected_last);
        if damaged_index < LAST {
            assert_eq!(opened.damage.len(), 1, "bit {bit}");
            assert_eq!(
                (opened.damage[0].first_index, opened.damage[0].last_index),
                (damaged_index, LAST),
                "bit {bit}"
            );
            assert_eq!(opened.repair.map(|m| m.until_index), Some(LAST));
        } else {
            assert!(opened.damage.is_empty(), "bit {bit}: {:?}", opened.damage);
            assert_eq!(opened.repair, None, "bit {bit}");
        }
        if bit % 97 == 0 {
            drop(log);
            let report = verify_data_dir(dir.path()).unwrap();
            assert!(report.is_clean(), "bit {bit}: {:?}", report.problems);
        }
    }
}

/// (c) A flipped bit in a synced frame in the middle of the log is not
/// silently dropped: open reports it as damage naming the file and the
/// frame's offset, writes the repair marker, and cuts the log before it;
/// verify reports the same place on the damaged copy.
#[test]
fn a_bit_flip_in_a_synced_middle_frame_is_reported_as_damage_naming_file_and_offset() {
    let dir = scratch_dir();
    let full = build_single_segment(dir.path());
    let path = segment_path(dir.path(), 1);
    let damaged = 5;
    for byte in [
        frame_offset(damaged),
        frame_offset(damaged) + 20,
        frame_offset(damaged) + 100,
    ] {
        let mut bytes = full.clone();
        bytes[byte] ^= 0x10;
        restore_single_segment(dir.path(), &bytes);
        let report = verify_data_dir(dir.path()).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.path == path && p.offset == frame_offset(damaged) as u64),
            "{:?}",
            report.problems
        );
        let opened = Log::open(dir.path(), config(64 * 1024)).unwrap();
        assert_eq!(opened.damage.len(), 1, "{:?}", opened.damage);
        let range = &opened.damage[0];
        assert_eq!(range.path, path);
        assert_eq!(range.offset, frame_offset(damaged) as u64);
        assert_eq!((range.first_index, range.last_index), (damaged, LAST));
        assert_eq!(opened.repair.map(|m| m.until_index), Some(LAST));
        assert_prefix(&opened.log, damaged - 1);
    }
}

/// Unsynced frames spread over several segments: losing the newest segment
/// files and damaging an unsynced sealed segment reopens as a prefix that
/// keeps every synced entry, and the later (unsynced) segments are removed.
#[test]
fn damage_to_unsynced_sealed_segments_cuts_there_and_drops_later_segments() {
    let dir = scratch_dir();
    let segment_bytes = 4096u64;
    let per_segment = ((segment_bytes as usize - SEGMENT_HEADER_BYTES) / FRAME_BYTES) as u64;
    {
        let mut log = Log::open(dir.path(), config(segment_bytes)).unwrap().log;
        log.append(&(1..=100).map(entry).collect::<Vec<_>>())
            .unwrap();
        log.sync().unwrap();
        log.append(&[entry(101)]).unwrap();
        log.sync().unwrap();
        log.append(&(102..=300).map(entry).collect::<Vec<_>>())
            .unwrap();
    }
    let firsts: Vec<LogIndex> = (0..)
        .map(|k| 1 + k * per_segment)
        .take_while(|f| *f <= 300)
        .collect();
    // Flip a bit in entry 150's frame, in a sealed segment after the synced part.
    let holder = *firsts.iter().rev().find(|f| **f <= 150).unwrap();
    let path = segment_path(dir.path(), holder);
    let mut bytes = std::fs::read(&path).unwrap();
    let offset = SEGMENT_HEADER_BYTES + (150 - holder) as usize * FRAME_BYTES;
    bytes[offset + 60] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    // And lose the newest segment file entirely.
    std::fs::remove_file(segment_path(dir.path(), *firsts.last().unwrap())).unwrap();

    let log = Log::open(dir.path(), config(segment_bytes)).unwrap().log;
    assert_prefix(&log, 149);
    let remaining = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count();
    assert_eq!(remaining, firsts.iter().filter(|f| **f <= 150).count());
}
