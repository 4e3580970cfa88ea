//! The small files and the directory rules of storage-format.md: atomic
//! replacement of hard state and log start, the lock, garbage in the data
//! directory, index-file rebuilds, group commit from another thread,
//! retention and reset.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use raftlog::storage::verify::verify_data_dir;
use raftlog::storage::{dump, Log, LogConfig, RetentionPolicy, StorageError};
use raftlog::types::{Entry, HardState, LogIndex, LogStart, Membership};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        preallocate: false,
    }
}

fn entry(index: LogIndex, term: u64) -> Entry {
    Entry::data(
        index,
        term,
        Bytes::from(format!("record {index}").repeat(8)),
    )
}

fn entries(range: std::ops::RangeInclusive<LogIndex>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

fn membership(n: u64) -> Membership {
    Membership::with_voters((1..=n).map(|id| (id, format!("10.0.0.{id}:7000"))))
}

fn log_file(dir: &Path, name: &str) -> PathBuf {
    dir.join("log").join(name)
}

/// A crash at each step of the atomic replace (temp file partly written,
/// temp complete, first copy renamed, second copy partly written) leaves the
/// old or the new hard state, never a torn one.
#[test]
fn hard_state_survives_a_crash_at_every_step_of_its_atomic_replace() {
    let dir = tempfile::tempdir().unwrap();
    let old = HardState {
        term: 4,
        voted_for: Some(2),
    };
    let new = HardState {
        term: 5,
        voted_for: None,
    };
    let (old_bytes, new_bytes) = {
        let mut log = Log::open(dir.path(), config()).unwrap().log;
        log.store_hard_state(&old).unwrap();
        let old_bytes = std::fs::read(dir.path().join("hard-state.0")).unwrap();
        log.store_hard_state(&new).unwrap();
        (
            old_bytes,
            std::fs::read(dir.path().join("hard-state.0")).unwrap(),
        )
    };
    let cases = |copy0: &[u8], copy1: &[u8], temp: Option<(&str, &[u8])>| {
        std::fs::write(dir.path().join("hard-state.0"), copy0).unwrap();
        std::fs::write(dir.path().join("hard-state.1"), copy1).unwrap();
        if let Some((name, bytes)) = temp {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        Log::open(dir.path(), config()).unwrap().hard_state
    };
    for len in 0..=new_bytes.len() {
        let torn = &new_bytes[..len];
        assert_eq!(
            cases(&old_bytes, &old_bytes, Some(("hard-state.0.tmp", torn))),
            Some(old)
        );
        assert_eq!(
            cases(&new_bytes, &old_bytes, Some(("hard-state.1.tmp", torn))),
            Some(new)
        );
    }
    assert_eq!(cases(&new_bytes, &new_bytes, None), Some(new));
    // One copy damaged (bit rot): the other one is used.
    let mut rotten = new_bytes.clone();
    rotten[20] ^= 4;
    assert_eq!(cases(&rotten, &new_bytes, None), Some(new));
    assert_eq!(cases(&new_bytes, &rotten, None), Some(new));
    let report = verify_data_dir(dir.path()).unwrap();
    assert!(report
        .problems
        .iter()
        .any(|p| p.path.ends_with("hard-state.1")));
    // One copy left alone: no repair marker.
    assert!(!dir.path().join("REPAIR").exists());
    // Both damaged: no silent reset to term 0 as if the node never voted:
    // no hard state, and a repair marker saying the votes are lost.
    std::fs::write(dir.path().join("hard-state.0"), &rotten).unwrap();
    let opened = Log::open(dir.path(), config()).unwrap();
    assert_eq!(opened.hard_state, None);
    let marker = opened.repair.expect("a repair marker");
    assert!(marker.hard_state_lost);
    assert_eq!(marker.cut_from, None);
    assert!(opened.damage.is_empty());
    drop(opened);
    // Still there after storing a new hard state and reopening.
    let mut log = Log::open(dir.path(), config()).unwrap().log;
    assert_eq!(log.repair(), Some(marker));
    log.store_hard_state(&new).unwrap();
    drop(log);
    let opened = Log::open(dir.path(), config()).unwrap();
    assert_eq!(opened.hard_state, Some(new));
    assert_eq!(opened.repair, Some(marker));
}

/// The log-start file is replaced atomically too.
#[test]
fn log_start_survives_a_crash_at_every_step_of_its_atomic_replace() {
    let dir = tempfile::tempdir().unwrap();
    let (old_bytes, new_bytes) = {
        let mut log = Log::open(dir.path(), config()).unwrap().log;
        log.reset(LogStart::initial(membership(3))).unwrap();
        log.append(&entries(1..=40, 1)).unwrap();
        let old_bytes = std::fs::read(dir.path().join("log-start")).unwrap();
        log.advance_start(LogStart {
            first_index: 30,
            prev_term: 1,
            membership: membership(5),
            producers: Default::default(),
        })
        .unwrap();
        (
            old_bytes,
            std::fs::read(dir.path().join("log-start")).unwrap(),
        )
    };
    for len in 0..=new_bytes.len() {
        std::fs::write(dir.path().join("log-start"), &old_bytes).unwrap();
        std::fs::write(dir.path().join("log-start.tmp"), &new_bytes[..len]).unwrap();
        let opened = Log::open(dir.path(), config()).unwrap();
        assert_eq!(opened.log_start, Some(LogStart::initial(membership(3))));
    }
    std::fs::write(dir.path().join("log-start"), &new_bytes).unwrap();
    let opened = Log::open(dir.path(), config()).unwrap();
    assert_eq!(opened.log.first_index(), 30);
    assert_eq!(opened.log_start.map(|s| s.membership), Some(membership(5)));
}

/// Two processes cannot use one data directory; offline tools are refused
/// while a server holds it.
#[test]
fn a_data_dir_in_use_is_refused_with_data_dir_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), config()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), config()),
        Err(StorageError::DataDirLocked { .. })
    ));
    assert!(matches!(
        verify_data_dir(dir.path()),
        Err(StorageError::DataDirLocked { .. })
    ));
    assert!(matches!(
        dump::dump_entries(dir.path(), None),
        Err(StorageError::DataDirLocked { .. })
    ));
}

/// Unknown files are ignored by rule; leftover temp files are removed; a
/// segment file with a damaged header is damage (cut, marker written), one
/// of an unknown version a typed error naming it, never a panic.
#[test]
fn garbage_in_the_data_dir_is_ignored_by_rule_or_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = Log::open(dir.path(), config()).unwrap().log;
        log.append(&entries(1..=100, 1)).unwrap();
        log.sync().unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    std::fs::write(log_file(dir.path(), "README"), b"hello").unwrap();
    std::fs::write(
        log_file(dir.path(), "123.seg"),
        b"short name: not a segment",
    )
    .unwrap();
    std::fs::write(
        log_file(dir.path(), "00000000000000000999.seg.tmp"),
        b"half-made",
    )
    .unwrap();
    let log = Log::open(dir.path(), config()).unwrap().log;
    assert_eq!(log.last_index(), 100);
    assert!(!log_file(dir.path(), "00000000000000000999.seg.tmp").exists());
    drop(log);
    assert!(verify_data_dir(dir.path()).unwrap().is_clean());

    let segment = log_file(dir.path(), &format!("{:020}.seg", 200));
    let valid_header =
        std::fs::read(log_file(dir.path(), &format!("{:020}.seg", 1))).unwrap()[..64].to_vec();
    let open_err = || {
        Log::open(dir.path(), config())
            .err()
            .expect("open must refuse")
    };

    // A segment file after the log whose header is bad is damage: its name
    // says the log reached index 199, so the marker says so too, and the
    // missing entries 101..=199 are reported. The open removes the file.
    let damaged = |contents: &[u8]| {
        std::fs::write(&segment, contents).unwrap();
        let _ = std::fs::remove_file(dir.path().join("REPAIR"));
        let opened = Log::open(dir.path(), config()).unwrap();
        assert_eq!(opened.log.last_index(), 100);
        let ranges: Vec<_> = opened
            .damage
            .iter()
            .map(|d| (d.first_index, d.last_index))
            .collect();
        assert_eq!(ranges, vec![(101, 199)], "{:?}", opened.damage);
        assert_eq!(opened.repair.map(|m| m.until_index), Some(199));
        assert!(!segment.exists());
        drop(opened);
    };
    damaged(b"");
    damaged(&vec![0xAB; 4096]);
    // A valid header whose first index disagrees with the file name.
    damaged(&valid_header);
    let _ = std::fs::remove_file(dir.path().join("REPAIR"));

    // A segment written by a newer format version is not damage: refused.
    let mut wrong_version = valid_header.clone();
    wrong_version[8] = 9;
    std::fs::write(&segment, &wrong_version).unwrap();
    assert!(matches!(
        open_err(),
        StorageError::UnsupportedVersion { version: 9, .. }
    ));
    std::fs::remove_file(&segment).unwrap();

    std::fs::write(dir.path().join("log-start"), b"RLOGLST\0garbage").unwrap();
    assert!(matches!(open_err(), StorageError::Corrupt { .. }));
}

/// Index files are only a cache: a missing or damaged one is rebuilt from
/// the segment, and reads after a reopen (which scans only the tail) return
/// the same entries.
#[test]
fn a_missing_or_damaged_index_file_is_rebuilt_from_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = Log::open(dir.path(), config()).unwrap().log;
        for chunk in 0..10 {
            log.append(&entries(chunk * 30 + 1..=chunk * 30 + 30, 1))
                .unwrap();
            log.sync().unwrap();
        }
    }
    let index_files: Vec<PathBuf> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    assert!(index_files.len() >= 3);
    std::fs::remove_file(&index_files[0]).unwrap();
    std::fs::write(&index_files[1], b"RLOGIDX\0 torn").unwrap();
    let mut bytes = std::fs::read(&index_files[2]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&index_files[2], &bytes).unwrap();
    let log = Log::open(dir.path(), config()).unwrap().log;
    assert_eq!(
        log.entries(1, 300, usize::MAX).unwrap(),
        entries(1..=300, 1)
    );
    drop(log);
    assert!(index_files[0].exists(), "a rebuilt index is written back");
    assert!(verify_data_dir(dir.path()).unwrap().is_clean());
}

/// An index file whose checksum holds but whose first offset is not 64
/// (where every segment's first frame is) is not used: before, it passed
/// (offsets increasing, the last frame valid) and the first read of the
/// segment decoded a frame at the wrong offset and failed as `Corrupt`,
/// which a node records as damage and repairs: a cache error turned into a
/// cut. It is rebuilt from the segment instead (storage-format.md 3).
#[test]
fn an_index_file_whose_first_offset_is_not_64_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = Log::open(dir.path(), config()).unwrap().log;
        for chunk in 0..10 {
            log.append(&entries(chunk * 30 + 1..=chunk * 30 + 30, 1))
                .unwrap();
            log.sync().unwrap();
        }
    }
    let path = dir.path().join("log").join("00000000000000000001.idx");
    let mut bytes = std::fs::read(&path).expect("the first segment's index file");
    let second = u32::from_le_bytes(bytes[36..40].try_into().unwrap());
    bytes[32..36].copy_from_slice(&(second - 48).to_le_bytes());
    let crc_at = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..crc_at]);
    bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let log = Log::open(dir.path(), config()).unwrap().log;
    assert_eq!(
        log.entries(1, 300, usize::MAX).unwrap(),
        entries(1..=300, 1)
    );
}

/// Group commit: the sync runs on another thread while appends continue;
/// only what was appended before the request is reported durable, and a
/// request captured before a truncation does not report the new entries.
#[test]
fn a_sync_request_covers_exactly_what_was_appended_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap().log;
    log.append(&entries(1..=50, 1)).unwrap();
    let request = log.sync_request();
    assert_eq!(request.index(), 50);
    let worker = std::thread::spawn(move || request.run());
    log.append(&entries(51..=80, 1)).unwrap();
    let done = worker.join().unwrap().unwrap();
    assert_eq!(log.mark_synced(done), 50);

    let request = log.sync_request();
    log.truncate_suffix(70).unwrap();
    log.append(&entries(70..=90, 2)).unwrap();
    let done = request.run().unwrap();
    assert_eq!(
        log.mark_synced(done),
        50,
        "a pre-truncation sync proves nothing about the new entries"
    );
    assert_eq!(log.sync().unwrap(), 90);
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap().log;
    let mut expected = entries(1..=69, 1);
    expected.extend(entries(70..=90, 2));
    assert_eq!(log.entries(1, 90, usize::MAX).unwrap(), expected);
}

/// Zero-copy reads stay valid and unchanged after the entries they came
/// from are truncated, overwritten by new entries, and dropped by retention.
#[test]
fn payloads_held_by_readers_never_change_after_truncation_or_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap().log;
    log.append(&entries(1..=200, 1)).unwrap();
    let held = log.entries(1, 200, usize::MAX).unwrap();
    log.truncate_suffix(100).unwrap();
    log.append(&entries(100..=250, 2)).unwrap();
    log.advance_start(LogStart {
        first_index: 150,
        prev_term: 2,
        membership: membership(3),
        producers: Default::default(),
    })
    .unwrap();
    log.reset(LogStart {
        first_index: 1000,
        prev_term: 3,
        membership: membership(3),
        producers: Default::default(),
    })
    .unwrap();
    assert_eq!(held, entries(1..=200, 1));
}

/// Retention drops only whole sealed segments at or below the floor, by
/// size or by age, and advance_start then removes their files.
#[test]
fn retention_drops_only_whole_segments_at_or_below_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap().log;
    log.append(&entries(1..=400, 1)).unwrap();
    let by_size = RetentionPolicy {
        retention_bytes: Some(3 * 4096),
        retention_ms: None,
    };
    let now = SystemTime::now();
    assert_eq!(
        log.retention_first_index(&by_size, 0, now),
        None,
        "floor 0 keeps everything"
    );
    let first = log.retention_first_index(&by_size, 400, now).unwrap();
    assert!(first > 1 && first <= 400);
    let floored = log.retention_first_index(&by_size, 100, now).unwrap();
    assert!(floored <= 101);
    let by_age = RetentionPolicy {
        retention_bytes: None,
        retention_ms: Some(60_000),
    };
    assert_eq!(log.retention_first_index(&by_age, 400, now), None);
    let later = now + Duration::from_secs(120);
    assert!(log.retention_first_index(&by_age, 400, later).is_some());

    let prev_term = log.term_at(first - 1).unwrap().unwrap();
    log.advance_start(LogStart {
        first_index: first,
        prev_term,
        membership: membership(3),
        producers: Default::default(),
    })
    .unwrap();
    assert_eq!(log.first_index(), first);
    assert_eq!(log.term_at(first - 1).unwrap(), Some(prev_term));
    assert!(matches!(
        log.entries(first - 1, first, usize::MAX),
        Err(StorageError::OutOfRange { .. })
    ));
    assert!(!log_file(dir.path(), &format!("{:020}.seg", 1)).exists());
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap().log;
    assert_eq!(log.first_index(), first);
    assert_eq!(
        log.entries(first, 400, usize::MAX).unwrap(),
        entries(first..=400, 1)
    );
}

/// Appends must continue the log; an entry too large for a segment is
/// not an error: it gets a segment of its own (storage-format.md 2.2).
#[test]
fn appends_that_do_not_continue_the_log_are_typed_errors_and_large_entries_fit() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap().log;
    log.append(&entries(1..=3, 1)).unwrap();
    assert!(matches!(
        log.append(&[entry(5, 1)]),
        Err(StorageError::NotContiguous {
            expected: 4,
            got: 5
        })
    ));
    assert_eq!(log.last_index(), 3);
    let huge = Entry::data(4, 1, Bytes::from(vec![7u8; 8192]));
    log.append(std::slice::from_ref(&huge)).unwrap();
    assert_eq!(log.last_index(), 4);
    assert_eq!(log.entries(4, 4, usize::MAX).unwrap(), vec![huge]);
}

/// dump lists every stored entry from the requested index, read-only.
#[test]
fn dump_lists_entries_from_the_requested_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = Log::open(dir.path(), config()).unwrap().log;
        log.append(&entries(1..=120, 1)).unwrap();
        log.sync().unwrap();
    }
    let dumped: Vec<Entry> = dump::dump_entries(dir.path(), Some(7))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(dumped, entries(7..=120, 1));
    let line = dump::dump_json_line(&dumped[0]);
    assert!(
        line.starts_with(r#"{"index":7,"term":1,"kind":"data","data":"record 7"#),
        "{line}"
    );
}

/// The runtime moves a sync request to a blocking thread.
#[test]
fn a_sync_request_can_move_to_another_thread() {
    fn assert_send_static<T: Send + 'static>() {}
    assert_send_static::<raftlog::storage::SyncRequest>();
    assert_send_static::<raftlog::storage::SyncDone>();
    assert_send_static::<Log>();
}

/// A segment named with index 0 or an absurd index is refused, not trusted
/// (issue 11, finding 7: `verify` too).
#[test]
fn a_segment_named_outside_the_index_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Log::open(dir.path(), config()).unwrap());
    for first in [0u64, u64::MAX] {
        let path = log_file(dir.path(), &format!("{first:020}.seg"));
        let mut bytes = raftlog::storage::encode_segment_header(first, 4096, 0).to_vec();
        bytes.resize(4096, 0);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Log::open(dir.path(), config()),
            Err(StorageError::Corrupt { offset: 16, .. })
        ));
        // `verify` reports it too, without index arithmetic on the name.
        let report = verify_data_dir(dir.path()).unwrap();
        assert!(
            report.problems.iter().any(|p| p.path == path),
            "{first}: {:?}",
            report.problems
        );
        std::fs::remove_file(&path).unwrap();
    }
}

/// Sync requests may complete out of order: a later request covers what an
/// earlier, unfinished one captured, so reporting its index is sound.
#[test]
fn sync_requests_may_complete_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap().log;
    log.append(&entries(1..=40, 1)).unwrap();
    let first = log.sync_request();
    log.append(&entries(41..=90, 1)).unwrap();
    let second = log.sync_request();
    assert_eq!(log.mark_synced(second.run().unwrap()), 90);
    assert_eq!(log.mark_synced(first.run().unwrap()), 90);
    log.append(&entries(91..=95, 1)).unwrap();
    assert_eq!(log.sync().unwrap(), 95);
}

/// `bytes` with the u64 at `at` replaced by `value` and the trailing CRC32
/// recomputed: a file that passes its checksum but holds a value no node
/// could have written.
fn with_u64_at(bytes: &[u8], at: usize, value: u64) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    let crc_at = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..crc_at]);
    bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Issue 11, finding 7: a hard-state copy whose term is at the top of u64
/// (an election would compute term + 1) is damage, with its file and
/// offset, like a failed checksum: the other copy is used, and with both
/// such, the votes count as lost; never a node that panics at its first
/// election.
#[test]
fn a_hard_state_term_no_node_could_reach_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let state = HardState {
        term: 7,
        voted_for: Some(2),
    };
    Log::open(dir.path(), config())
        .unwrap()
        .log
        .store_hard_state(&state)
        .unwrap();
    let good = std::fs::read(dir.path().join("hard-state.0")).unwrap();
    let absurd = with_u64_at(&good, 24, u64::MAX);
    std::fs::write(dir.path().join("hard-state.1"), &absurd).unwrap();
    let opened = Log::open(dir.path(), config()).unwrap();
    assert_eq!(opened.hard_state, Some(state), "the good copy is used");
    drop(opened);
    let report = verify_data_dir(dir.path()).unwrap();
    let problem = report
        .problems
        .iter()
        .find(|p| p.path.ends_with("hard-state.1"))
        .expect("the absurd copy is reported");
    assert_eq!(problem.offset, 24, "{problem}");
    assert!(problem.what.contains("term"), "{problem}");

    std::fs::write(dir.path().join("hard-state.0"), &absurd).unwrap();
    let opened = Log::open(dir.path(), config()).unwrap();
    assert_eq!(opened.hard_state, None);
    assert!(opened.repair.expect("a repair marker").hard_state_lost);
}

/// Issue 11, finding 7: a repair marker naming an index beyond any log is
/// unreadable (assume lost votes), not a node that waits forever to reach it.
#[test]
fn a_repair_marker_index_beyond_any_log_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = Log::open(dir.path(), config()).unwrap().log;
        log.append(&entries(1..=5, 1)).unwrap();
        log.sync().unwrap();
        log.record_damage(3, "test").unwrap();
    }
    let path = dir.path().join(raftlog::storage::REPAIR_FILE_NAME);
    let marker = std::fs::read(&path).unwrap();
    for (at, value) in [(16, u64::MAX), (24, u64::MAX), (16, (1 << 62) + 1)] {
        std::fs::write(&path, with_u64_at(&marker, at, value)).unwrap();
        let report = verify_data_dir(dir.path()).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.path.ends_with("REPAIR") && p.offset == at as u64),
            "offset {at}: {:?}",
            report.problems
        );
        let opened = Log::open(dir.path(), config()).unwrap();
        let repair = opened.repair.expect("a repair marker");
        assert!(
            repair.until_index <= 5 && repair.cut_from.map_or(true, |c| c <= 5),
            "offset {at} = {value}: {repair:?}"
        );
        assert!(
            repair.hard_state_lost,
            "offset {at}: unreadable, so assume lost votes"
        );
        drop(opened);
        std::fs::write(&path, &marker).unwrap();
    }
}

/// Issue 11, finding 7: a log-start file whose previous term is at the top
/// of u64 is refused with a typed error naming the file and the offset.
#[test]
fn a_log_start_term_no_node_could_reach_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Log::open(dir.path(), config())
        .unwrap()
        .log
        .reset(LogStart {
            first_index: 10,
            prev_term: 3,
            membership: membership(3),
            producers: Default::default(),
        })
        .unwrap();
    let path = dir.path().join(raftlog::storage::LOG_START_FILE_NAME);
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, with_u64_at(&good, 24, u64::MAX)).unwrap();
    match Log::open(dir.path(), config()) {
        Err(StorageError::Corrupt {
            path: named,
            offset: 24,
            reason,
        }) => {
            assert!(named.ends_with("log-start"), "{named:?}");
            assert!(reason.contains("term"), "{reason}");
        }
        other => panic!("expected Corrupt at offset 24, got {:?}", other.map(|_| ())),
    }
}

/// Issue 11, finding 7: producer sequences read back from the disk at
/// start may be any u64 (written by another build, or by a peer's
/// entries): rebuilding the exactly-once table from them never overflows,
/// and the table then refuses sequences past u64::MAX.
#[test]
fn a_log_holding_producer_sequences_at_the_top_of_u64_is_recovered() {
    use raftlog::server::producers::Admission;
    use raftlog::types::{AppendedIndexes, EntryKind, ProducerSeq};
    let dir = tempfile::tempdir().unwrap();
    let tagged = |index: LogIndex, producer_id: u64, sequence: u64| Entry {
        index,
        term: 1,
        kind: EntryKind::Data,
        producer: Some(ProducerSeq {
            producer_id,
            sequence,
        }),
        payload: Bytes::from_static(b"r"),
    };
    {
        let mut log = Log::open(dir.path(), config()).unwrap().log;
        log.append(&[
            tagged(1, 7, u64::MAX - 1),
            tagged(2, 7, u64::MAX),
            tagged(3, 7, u64::MAX),
            tagged(4, 8, u64::MAX),
            tagged(5, 8, 0),
            tagged(6, 9, u64::MAX - 1),
            tagged(7, 9, u64::MAX),
        ])
        .unwrap();
        log.sync().unwrap();
    }
    let log = Log::open(dir.path(), config()).unwrap().log;
    let start = LogStart::initial(membership(1));
    let recovered =
        raftlog::server::driver::recover(&log, start, Duration::from_secs(600)).unwrap();
    let table = &recovered.producers;
    let r = [b"r"];
    assert_eq!(table.admit(7, u64::MAX, &r), Admission::SequenceOverflow);
    assert_eq!(
        table.admit(7, u64::MAX - 1, &r),
        Admission::DuplicateForgotten {
            sequence: u64::MAX - 1
        }
    );
    assert_eq!(
        table.admit(8, 1, &r),
        Admission::Append {
            known: 0,
            indexes: AppendedIndexes::default()
        }
    );
    assert_eq!(
        table.admit(9, u64::MAX - 1, &r),
        Admission::Append {
            known: 1,
            indexes: AppendedIndexes::contiguous(6, 6).unwrap()
        }
    );
}

/// storage-format.md 6.1: the next segment's file may be prepared ahead
/// (`log/spare.seg.tmp`, allocated and fsynced off the log lock); a roll
/// turns it into the new segment with a header write, and a spare left
/// behind by a stop is deleted at open like every `.tmp` file.
#[test]
fn a_spare_segment_prepared_ahead_becomes_the_next_segment_and_a_leftover_is_deleted() {
    use raftlog::storage::SPARE_SEGMENT_FILE_NAME;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = Log::open(dir.path(), config()).expect("open").log;
    let job = log.spare_job().expect("a spare job");
    assert!(log.spare_job().is_none(), "one spare job at a time");
    log.install_spare(job.run());
    let spare = log_file(dir.path(), SPARE_SEGMENT_FILE_NAME);
    assert!(spare.exists(), "the spare is prepared");
    let written = entries(1..=40, 1);
    log.append(&written).expect("append across a roll");
    log.sync().expect("sync");
    assert!(!spare.exists(), "the roll used the spare");
    let job = log.spare_job().expect("a new spare job after the roll");
    log.install_spare(job.run());
    assert!(spare.exists());
    drop(log);
    let reopened = Log::open(dir.path(), config()).expect("reopen").log;
    assert!(!spare.exists(), "open deletes a leftover spare");
    assert_eq!(reopened.last_index(), 40);
    let read = reopened.entries(1, 40, usize::MAX).expect("read back");
    let payloads: Vec<_> = read.iter().map(|entry| entry.payload.clone()).collect();
    let expected: Vec<_> = written.iter().map(|entry| entry.payload.clone()).collect();
    assert_eq!(payloads, expected);
}

/// A sealed segment's missing index is built by an `IndexJob` that runs
/// without the log (a consumer's first read does this on a blocking
/// thread): after installing it the log needs no more jobs for that range,
/// and the entries read back are the ones written.
#[test]
fn a_missing_index_is_rebuilt_outside_the_log_by_an_index_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let written = entries(1..=200, 1);
    {
        let mut log = Log::open(dir.path(), config()).expect("open").log;
        // Synced in steps, so segment headers record their synced frames
        // (the watermark lags a sync) and the next open trusts the sealed
        // segments without scanning them.
        for chunk in written.chunks(50) {
            log.append(chunk).expect("append");
            log.sync().expect("sync");
            log.sync().expect("sync");
        }
    }
    for item in std::fs::read_dir(dir.path().join("log")).expect("log dir") {
        let path = item.expect("entry").path();
        if path.extension().is_some_and(|ext| ext == "idx") {
            std::fs::remove_file(&path).expect("remove index file");
        }
    }
    let log = Log::open(dir.path(), config()).expect("reopen").log;
    let mut jobs = 0;
    while let Some(job) = log.index_job(1, 200) {
        log.install_index(job.run());
        jobs += 1;
        assert!(jobs <= 200, "index jobs never end");
    }
    assert!(
        jobs >= 2,
        "sealed segments needed their indexes ({jobs} jobs)"
    );
    let read = log.entries(1, 200, usize::MAX).expect("read back");
    let payloads: Vec<_> = read.iter().map(|entry| entry.payload.clone()).collect();
    let expected: Vec<_> = written.iter().map(|entry| entry.payload.clone()).collect();
    assert_eq!(payloads, expected);
}

/// `raftlog dump --output json` prints exactly what the README documents:
/// keys in the order index, term, kind, [producer_id, sequence], then
/// `data` (UTF-8 payload) or `data_b64`, decided by the bytes whatever the
/// kind (a config entry's payload is its raw membership encoding); `--from`
/// below the log start starts there, past the end prints nothing.
#[test]
fn dump_prints_the_documented_json_lines() {
    use raftlog::types::{EntryKind, ProducerSeq};
    let dir = tempfile::tempdir().unwrap();
    let config_payload = membership(2).to_bytes();
    {
        let mut log = Log::open(dir.path(), config()).unwrap().log;
        log.append(&[
            Entry::data(1, 1, Bytes::from_static(b"dropped")),
            Entry::data(2, 1, Bytes::from_static(b"dropped")),
            Entry {
                index: 3,
                term: 1,
                kind: EntryKind::Config,
                producer: None,
                payload: config_payload.clone(),
            },
            Entry::noop(4, 2),
            Entry::data(5, 2, Bytes::from_static(b"two\nlines \"quoted\"")),
            Entry {
                index: 6,
                term: 2,
                kind: EntryKind::Data,
                producer: Some(ProducerSeq {
                    producer_id: 42,
                    sequence: 7,
                }),
                payload: Bytes::from_static(b"\xff\x00binary"),
            },
        ])
        .unwrap();
        log.sync().unwrap();
        log.advance_start(LogStart {
            first_index: 3,
            prev_term: 1,
            membership: membership(2),
            producers: Bytes::new(),
        })
        .unwrap();
    }
    let dump = |from: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_raftlog"))
            .args(["dump", "--output", "json", "--from", from])
            .arg(dir.path())
            .output()
            .expect("run raftlog dump");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).expect("UTF-8 output")
    };
    let config_json = match std::str::from_utf8(&config_payload) {
        Ok(text) => format!("\"data\":{}", serde_json::Value::from(text)),
        Err(_) => panic!("this membership encodes as UTF-8 (ids and ports < 128)"),
    };
    let expected = [
        format!(r#"{{"index":3,"term":1,"kind":"config",{config_json}}}"#),
        r#"{"index":4,"term":2,"kind":"noop","data":""}"#.to_string(),
        r#"{"index":5,"term":2,"kind":"data","data":"two\nlines \"quoted\""}"#.to_string(),
        r#"{"index":6,"term":2,"kind":"data","producer_id":42,"sequence":7,"data_b64":"/wBiaW5hcnk="}"#
            .to_string(),
    ];
    let lines: Vec<String> = dump("1").lines().map(str::to_string).collect();
    assert_eq!(lines, expected);
    assert_eq!(
        dump("0"),
        dump("1"),
        "0 and below the log start: the log start"
    );
    assert_eq!(dump("5").lines().count(), 2);
    assert_eq!(dump("7"), "", "past the last index: nothing");
}

/// The blocks of `path` that are allocated but unwritten (`filefrag -v`),
/// as block ranges, and the block size; `None` where the file system cannot
/// say (no FIEMAP, e.g. tmpfs).
fn unwritten_blocks(path: &Path) -> Option<(u64, Vec<std::ops::RangeInclusive<u64>>)> {
    let output = std::process::Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .expect("run filefrag (e2fsprogs)");
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !text.contains("logical_offset") {
        return None;
    }
    let block_bytes = text
        .split("blocks of ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let ranges = text
        .lines()
        .filter(|line| line.contains("unwritten"))
        .filter_map(|line| {
            // `   1:        1..    1023:   24114177..  24115199:   1023:   last,unwritten,eof`
            let logical = line.split(':').nth(1)?;
            let (low, high) = logical.split_once("..")?;
            Some(low.trim().parse().ok()?..=high.trim().parse().ok()?)
        })
        .collect();
    Some((block_bytes, ranges))
}

/// A synced append leaves the space just past its frames *written*, not an
/// unwritten extent of the preallocation: otherwise every group commit
/// converts an extent, a metadata change its fdatasync must commit to the
/// journal (`Segment::zero_ahead`).
#[test]
fn a_sync_leaves_no_unwritten_extent_just_past_the_frames() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 8 * 1024 * 1024,
        preallocate: true,
    };
    let mut log = Log::open(dir.path(), config).unwrap().log;
    log.append(&entries(1..=100, 1)).unwrap();
    log.sync().unwrap();
    let segment = log_file(dir.path(), "00000000000000000001.seg");
    let Some((block_bytes, unwritten)) = unwritten_blocks(&segment) else {
        eprintln!(
            "the file system of {} reports no extents; nothing to check",
            segment.display()
        );
        return;
    };
    assert!(
        !unwritten.is_empty(),
        "the preallocation beyond the zeroed steps should still be unwritten: {unwritten:?}"
    );
    let frames_end_block = (100 * 200) / block_bytes; // 100 frames of < 200 bytes
    let must_be_written = 0..=frames_end_block + (256 * 1024) / block_bytes;
    for range in &unwritten {
        assert!(
            range.start() > must_be_written.end(),
            "blocks {range:?} are unwritten, within {must_be_written:?}"
        );
    }
}
