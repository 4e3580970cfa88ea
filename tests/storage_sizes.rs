//! Segment sizing (storage-format.md 2.2): any configured segment size works
//! with any entry size. An entry larger than the space left rolls the
//! segment; one larger than a whole configured segment gets a segment sized
//! to hold it. Open, crash recovery and verify read each file at its own
//! size, so a log of mixed sizes reopens, recovers and verifies like any
//! other, and `dump` reads it.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raftlog::storage::verify::verify_data_dir;
use raftlog::storage::{
    dump, Log, LogConfig, StorageError, SEGMENT_HEADER_BYTES, SPARE_SEGMENT_FILE_NAME,
};
use raftlog::types::{Entry, LogIndex, LogStart, Membership};

const KIB: usize = 1024;
const SEGMENT_BYTES: u64 = 64 * KIB as u64;
const FRAME_HEADER_BYTES: usize = 48;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        preallocate: false,
    }
}

/// Files are edited, not power-cycled: a RAM-backed directory serves.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// An entry whose payload is `len` bytes that differ per index.
fn sized(index: LogIndex, len: usize) -> Entry {
    let payload: Vec<u8> = (0..len).map(|i| (index as usize * 31 + i) as u8).collect();
    Entry::data(index, 1, Bytes::from(payload))
}

fn segment_path(dir: &Path, first: LogIndex) -> PathBuf {
    dir.join("log").join(format!("{first:020}.seg"))
}

/// (first index, file length) of every segment file, in log order.
fn segment_files(dir: &Path) -> Vec<(LogIndex, u64)> {
    let mut files: Vec<(LogIndex, u64)> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .filter_map(|item| {
            let item = item.unwrap();
            let name = item.file_name().into_string().unwrap();
            let first = name.strip_suffix(".seg")?.parse().ok()?;
            Some((first, item.metadata().unwrap().len()))
        })
        .collect();
    files.sort_unstable();
    files
}

fn own_segment_bytes(payload: usize) -> u64 {
    (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + payload) as u64
}

/// The payload sizes of a log that mixes every case: an oversized entry
/// first, small ones, one that fits a segment but not the space left,
/// another oversized one in the middle, small ones after it.
fn mixed_sizes() -> Vec<usize> {
    let mut sizes = vec![200 * KIB];
    sizes.extend(std::iter::repeat(KIB).take(40));
    sizes.push(40 * KIB); // fits a 64 KiB segment, not the ~22 KiB left
    sizes.push(150 * KIB);
    sizes.extend(std::iter::repeat(3 * KIB).take(30));
    sizes
}

fn mixed_entries() -> Vec<Entry> {
    mixed_sizes()
        .into_iter()
        .zip(1..)
        .map(|(len, index)| sized(index, len))
        .collect()
}

fn assert_holds(log: &Log, expected: &[Entry]) {
    assert_eq!(log.first_index(), 1);
    assert_eq!(log.last_index(), expected.len() as u64);
    assert_eq!(
        log.entries(1, expected.len() as u64, usize::MAX).unwrap(),
        expected
    );
    // Replication reads frames segment by segment; each must decode whole.
    let mut index = 1;
    while index <= log.last_index() {
        let (frames, last) = log.frames(index, log.last_index(), usize::MAX).unwrap();
        let decoded = raftlog::storage::frame::decode_frames(&frames).unwrap();
        let want = &expected[(index - 1) as usize..last as usize];
        assert_eq!(decoded, want, "frames {index}..={last}");
        index = last + 1;
    }
}

/// An oversized entry at the start and in the middle, and one larger than
/// the space left, each start a segment; the oversized ones get files sized
/// to hold exactly their frame. Reopening (with the same, a smaller or a
/// larger configured size) reads everything back, verify finds nothing, and
/// later appends use the newly configured size.
#[test]
fn oversized_entries_get_their_own_segment_and_a_mixed_log_reopens_and_verifies() {
    let dir = scratch_dir();
    let expected = mixed_entries();
    {
        let mut log = Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap().log;
        // One entry per append, the way a leader writes, and all at once below.
        for entry in &expected[..10] {
            log.append(std::slice::from_ref(entry)).unwrap();
        }
        log.append(&expected[10..]).unwrap();
        assert_holds(&log, &expected);
        assert_eq!(log.sync().unwrap(), expected.len() as u64);
    }
    let files = segment_files(dir.path());
    assert_eq!(
        files,
        vec![
            (1, own_segment_bytes(200 * KIB)),
            (2, SEGMENT_BYTES),
            (42, SEGMENT_BYTES),
            (43, own_segment_bytes(150 * KIB)),
            (44, SEGMENT_BYTES),
            (64, SEGMENT_BYTES),
        ],
        "segment files (first index, length)"
    );
    let report = verify_data_dir(dir.path()).unwrap();
    assert!(report.is_clean(), "verify: {:?}", report.problems);
    assert_eq!(report.entries_checked, expected.len() as u64);
    let dumped: Vec<Entry> = dump::dump_entries(dir.path(), Some(2))
        .unwrap()
        .map(|entry| entry.unwrap())
        .collect();
    assert_eq!(dumped, expected[1..], "dump reads every size");

    let mut all = expected.clone();
    // (configured size at reopen, the segment files the two appends leave
    // at the end of the log). Entry 74 (100 KiB) never fits the space left;
    // the 10-byte entry after it fits only a new 1 MiB segment's rest.
    let own_100 = own_segment_bytes(100 * KIB);
    let reopens: [(u64, Vec<(LogIndex, u64)>); 3] = [
        (SEGMENT_BYTES, vec![(74, own_100), (75, SEGMENT_BYTES)]),
        (4096, vec![(76, own_100), (77, 4096)]),
        (1 << 20, vec![(77, 4096), (78, 1 << 20)]),
    ];
    for (reopen_bytes, tail) in reopens {
        let opened = Log::open(dir.path(), config(reopen_bytes)).unwrap();
        assert!(opened.damage.is_empty(), "damage: {:?}", opened.damage);
        assert!(opened.repair.is_none());
        let mut log = opened.log;
        assert_holds(&log, &all);
        let next = all.len() as u64 + 1;
        let more = vec![sized(next, 100 * KIB), sized(next + 1, 10)];
        log.append(&more).unwrap();
        log.sync().unwrap();
        all.extend(more);
        assert_holds(&log, &all);
        let files = segment_files(dir.path());
        assert_eq!(
            files[files.len() - 2..],
            tail[..],
            "after reopening at {reopen_bytes}"
        );
    }
    drop(Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap());
    let report = verify_data_dir(dir.path()).unwrap();
    assert!(report.is_clean(), "verify: {:?}", report.problems);
    assert_eq!(report.entries_checked, all.len() as u64);
}

/// A crash while an oversized entry was being written (its segment cut or
/// zeroed at any point of the frame) reopens as the synced prefix, with no
/// damage reported; the same entry can then be appended again.
#[test]
fn a_torn_oversized_segment_reopens_as_the_synced_prefix() {
    let dir = scratch_dir();
    let small: Vec<Entry> = (1..=20).map(|i| sized(i, 2 * KIB)).collect();
    let big = sized(21, 300 * KIB);
    let (full, last_len) = {
        let mut log = Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap().log;
        log.append(&small).unwrap();
        assert_eq!(log.sync().unwrap(), 20);
        log.append(std::slice::from_ref(&big)).unwrap();
        drop(log);
        let bytes = std::fs::read(segment_path(dir.path(), 21)).unwrap();
        let len = bytes.len();
        (bytes, len)
    };
    assert_eq!(last_len as u64, own_segment_bytes(300 * KIB));
    let frame_start = SEGMENT_HEADER_BYTES;
    let cuts = [
        frame_start,
        frame_start + 4,
        frame_start + FRAME_HEADER_BYTES,
        frame_start + 100 * KIB,
        last_len - 1,
    ];
    for cut in cuts {
        for zero_fill in [false, true] {
            let mut bytes = full.clone();
            if zero_fill {
                bytes[cut..].fill(0);
            } else {
                bytes.truncate(cut);
            }
            std::fs::write(segment_path(dir.path(), 21), &bytes).unwrap();
            let opened = Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap();
            assert!(
                opened.damage.is_empty(),
                "cut at {cut} (zero fill {zero_fill}): {:?}",
                opened.damage
            );
            let mut log = opened.log;
            assert_holds(&log, &small);
            let report_dir = dir.path().to_path_buf();
            log.append(std::slice::from_ref(&big)).unwrap();
            log.sync().unwrap();
            let mut all = small.clone();
            all.push(big.clone());
            assert_holds(&log, &all);
            drop(log);
            let report = verify_data_dir(&report_dir).unwrap();
            assert!(
                report.is_clean(),
                "verify after cut at {cut}: {:?}",
                report.problems
            );
            // Put the torn state back for the next case.
            std::fs::write(segment_path(dir.path(), 21), &full).unwrap();
        }
    }
}

/// A flipped bit in a synced oversized entry is damage, found by verify and
/// by a read (then cut at the next open), exactly as in an ordinary segment.
#[test]
fn a_damaged_synced_oversized_entry_is_found_by_verify_and_by_a_read() {
    let dir = scratch_dir();
    let entries = vec![sized(1, KIB), sized(2, 120 * KIB), sized(3, KIB)];
    {
        let mut log = Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap().log;
        log.append(&entries).unwrap();
        log.sync().unwrap();
        // A second sync writes the watermarks the first one made durable.
        log.sync().unwrap();
    }
    let path = segment_path(dir.path(), 2);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 60 * KIB;
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let report = verify_data_dir(dir.path()).unwrap();
    assert!(!report.is_clean(), "verify missed the flipped bit");
    assert!(
        report.problems.iter().any(|p| p.path == path),
        "problems: {:?}",
        report.problems
    );
    // Open trusts synced sealed segments without a scan; the read checks
    // the checksum (the index came from the index file), and the damage
    // it records is cut by the next open, as for any segment.
    let mut log = Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap().log;
    assert!(matches!(
        log.entries(2, 2, usize::MAX),
        Err(StorageError::Corrupt { .. })
    ));
    assert_eq!(log.entries(1, 1, usize::MAX).unwrap(), entries[..1]);
    log.record_damage(2, "flipped bit").unwrap();
    drop(log);
    let opened = Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap();
    assert_eq!(
        opened.damage.first().map(|d| (d.first_index, d.last_index)),
        Some((2, 3)),
        "damage: {:?}",
        opened.damage
    );
    assert_eq!(opened.log.last_index(), 1);
    assert_eq!(opened.repair.map(|m| m.until_index), Some(3));
}

/// A truncation leaves an empty segment of the configured size named after
/// the cut; an oversized entry appended there replaces that file (by
/// rename) instead of leaving two segments with one name. Same after a
/// reset, which leaves no segment at all.
#[test]
fn an_oversized_entry_after_a_truncation_or_reset_replaces_the_empty_segment() {
    let dir = scratch_dir();
    {
        let mut log = Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap().log;
        log.append(&(1..=5).map(|i| sized(i, KIB)).collect::<Vec<_>>())
            .unwrap();
        log.sync().unwrap();
        log.truncate_suffix(3).unwrap();
        assert_eq!(
            segment_files(dir.path()),
            vec![(1, SEGMENT_BYTES), (3, SEGMENT_BYTES)]
        );
        let mut expected: Vec<Entry> = (1..=2).map(|i| sized(i, KIB)).collect();
        let replacement = vec![sized(3, 100 * KIB), sized(4, KIB)];
        log.append(&replacement).unwrap();
        log.sync().unwrap();
        expected.extend(replacement);
        assert_holds(&log, &expected);
        assert_eq!(
            segment_files(dir.path()),
            vec![
                (1, SEGMENT_BYTES),
                (3, own_segment_bytes(100 * KIB)),
                (4, SEGMENT_BYTES)
            ]
        );
        drop(log);
        let log = Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap().log;
        assert_holds(&log, &expected);
    }
    let mut log = Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap().log;
    let start = LogStart {
        first_index: 100,
        prev_term: 1,
        membership: Membership::default(),
        producers: bytes::Bytes::new(),
    };
    log.reset(start).unwrap();
    let big = sized(100, 90 * KIB);
    log.append(std::slice::from_ref(&big)).unwrap();
    log.sync().unwrap();
    drop(log);
    let log = Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap().log;
    assert_eq!((log.first_index(), log.last_index()), (100, 100));
    assert_eq!(log.entries(100, 100, usize::MAX).unwrap(), vec![big]);
    assert_eq!(
        segment_files(dir.path()),
        vec![(100, own_segment_bytes(90 * KIB))]
    );
}

/// The spare segment file is prepared at the configured size: an oversized
/// entry does not use it (it would not fit) and leaves it for the next
/// ordinary roll, which does.
#[test]
fn the_spare_segment_is_used_only_when_the_entry_fits_it() {
    let dir = scratch_dir();
    let spare_path = dir.path().join("log").join(SPARE_SEGMENT_FILE_NAME);
    let mut log = Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap().log;
    log.append(&[sized(1, KIB)]).unwrap();
    let job = log.spare_job().expect("a spare job");
    log.install_spare(job.run());
    assert_eq!(std::fs::metadata(&spare_path).unwrap().len(), SEGMENT_BYTES);
    log.append(&[sized(2, 80 * KIB)]).unwrap();
    assert!(spare_path.exists(), "the oversized roll took the spare");
    assert!(log.spare_job().is_none(), "the spare is still installed");
    log.append(&[sized(3, KIB)]).unwrap();
    assert!(
        !spare_path.exists(),
        "the ordinary roll did not use the spare"
    );
    log.sync().unwrap();
    assert_eq!(
        segment_files(dir.path()),
        vec![
            (1, SEGMENT_BYTES),
            (2, own_segment_bytes(80 * KIB)),
            (3, SEGMENT_BYTES)
        ]
    );
    drop(log);
    let log = Log::open(dir.path(), config(SEGMENT_BYTES)).unwrap().log;
    assert_holds(&log, &[sized(1, KIB), sized(2, 80 * KIB), sized(3, KIB)]);
}
