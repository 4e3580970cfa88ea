//! Corruption-aware recovery (storage-format.md 4a and 6.2a): damage in the
//! middle of the log is recorded in the repair marker, then cut; `verify`
//! reports it; `verify` and `dump` never change the directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use raftlog::storage::verify::{verify_data_dir, VerifyReport};
use raftlog::storage::{dump, Log, LogConfig, Opened, RepairMarker, StorageError};
use raftlog::types::{Entry, HardState, LogIndex, LogStart, Membership};

const SEGMENT_HEADER_BYTES: usize = 64;
const FRAME_BYTES: usize = 48 + 100;
const RAFTLOG: &str = env!("CARGO_BIN_EXE_raftlog");

fn entry(index: LogIndex) -> Entry {
    let payload: Vec<u8> = (0..100).map(|i| (index as usize * 7 + i) as u8).collect();
    Entry::data(index, 1 + index / 50, Bytes::from(payload))
}

fn entries(range: std::ops::RangeInclusive<LogIndex>) -> Vec<Entry> {
    range.map(entry).collect()
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        preallocate: false,
    }
}

fn open(dir: &Path, segment_bytes: u64) -> Opened {
    Log::open(dir, config(segment_bytes)).unwrap_or_else(|e| panic!("open: {e}"))
}

fn assert_prefix(log: &Log, last: LogIndex) {
    assert_eq!(log.last_index(), last);
    if last > 0 {
        assert_eq!(log.entries(1, last, usize::MAX).unwrap(), entries(1..=last));
    }
}

/// The `.seg` files by first index.
fn segments(dir: &Path) -> Vec<(LogIndex, PathBuf)> {
    let mut found: Vec<(LogIndex, PathBuf)> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let first = path
                .file_name()?
                .to_str()?
                .strip_suffix(".seg")?
                .parse()
                .ok()?;
            Some((first, path))
        })
        .collect();
    found.sort();
    found
}

/// Every file of the directory and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for sub in [dir.to_path_buf(), dir.join("log")] {
        for item in std::fs::read_dir(&sub).unwrap() {
            let path = item.unwrap().path();
            if path.is_file() {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// `raftlog verify DIR`: (exit success, stdout).
fn verify_cli(dir: &Path) -> (bool, String) {
    let output = Command::new(RAFTLOG)
        .arg("verify")
        .arg(dir)
        .output()
        .expect("run raftlog verify");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// `verify` (library and CLI) reports the damaged range and fails, and
/// neither it nor `dump` changes a byte of the directory.
fn assert_verify_reports(dir: &Path, path: &Path, first: LogIndex, last: LogIndex) {
    let before = snapshot(dir);
    let report = verify_data_dir(dir).unwrap();
    let wanted = format!("damaged entries {first}..{last}");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.path == path && p.what.contains(&wanted)),
        "{wanted} in {path:?}: {:?}",
        report.problems
    );
    let (ok, stdout) = verify_cli(dir);
    assert!(!ok, "verify must fail on damage:\n{stdout}");
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(name) && l.contains(&wanted)),
        "{stdout}"
    );
    // A read-only open reports the same damage, cut in memory only.
    let read_only = Log::open_read_only(dir).unwrap();
    assert!(read_only.damage.iter().any(|d| d.first_index == first));
    assert_eq!(read_only.log.last_index(), first - 1);
    drop(read_only);
    let dumped: Vec<_> = dump::dump_entries(dir, None).unwrap().collect();
    assert_eq!(dumped.len() as u64, first - 1);
    assert_eq!(snapshot(dir), before, "verify and dump must not modify");
}

/// After the open cut the damage: verify passes with a `repair pending` line.
fn assert_verify_repair_pending(dir: &Path, until: LogIndex) {
    let report = verify_data_dir(dir).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.repair.map(|m| m.until_index), Some(until));
    let (ok, stdout) = verify_cli(dir);
    assert!(ok, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l == format!("repair pending: until index {until}")),
        "{stdout}"
    );
}

fn marker(until_index: LogIndex) -> Option<RepairMarker> {
    Some(RepairMarker {
        until_index,
        hard_state_lost: false,
        cut_from: None,
    })
}

/// A log of `last` entries in 4096-byte segments, synced in chunks of 30
/// (so the header watermarks of most segments claim their frames).
fn build_segmented(dir: &Path, last: LogIndex) {
    let mut log = open(dir, 4096).log;
    let mut next = 1;
    while next <= last {
        let high = (next + 29).min(last);
        log.append(&entries(next..=high)).unwrap();
        log.sync().unwrap();
        next = high + 1;
    }
}

#[test]
fn a_flipped_bit_in_a_middle_frame_of_the_tail_segment_is_damage_cut_with_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), 64 * 1024).log;
        log.append(&entries(1..=20)).unwrap();
        log.sync().unwrap();
        log.append(&entries(21..=40)).unwrap();
        log.sync().unwrap();
    }
    let (_, path) = segments(dir.path()).remove(0);
    let mut bytes = std::fs::read(&path).unwrap();
    let offset = SEGMENT_HEADER_BYTES + 9 * FRAME_BYTES;
    bytes[offset + 70] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();
    assert_verify_reports(dir.path(), &path, 10, 40);

    let opened = open(dir.path(), 64 * 1024);
    assert_eq!(opened.damage.len(), 1);
    let range = &opened.damage[0];
    assert_eq!((range.first_index, range.last_index), (10, 40));
    assert_eq!((range.path.clone(), range.offset), (path, offset as u64));
    assert_eq!(opened.repair, marker(40));
    assert_prefix(&opened.log, 9);
    // The log takes appends again; the marker stays until cleared.
    let mut log = opened.log;
    log.append(&entries(10..=12)).unwrap();
    log.sync().unwrap();
    drop(log);
    let opened = open(dir.path(), 64 * 1024);
    assert!(opened.damage.is_empty());
    assert_eq!(opened.repair, marker(40));
    assert_prefix(&opened.log, 12);
    drop(opened);
    assert_verify_repair_pending(dir.path(), 40);
}

/// Sealed segments are not scanned at open; a read finds the damage, the
/// runtime records it, and the next open cuts there.
#[test]
fn damage_in_a_sealed_segment_found_by_a_read_is_cut_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    build_segmented(dir.path(), 200);
    let (first, path) = segments(dir.path())
        .into_iter()
        .rfind(|(f, _)| *f <= 60)
        .unwrap();
    let bad = first + 2;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[SEGMENT_HEADER_BYTES + 2 * FRAME_BYTES + 100] ^= 1;
    std::fs::write(&path, &bytes).unwrap();

    let opened = open(dir.path(), 4096);
    assert!(opened.damage.is_empty(), "a sealed segment is not scanned");
    let mut log = opened.log;
    assert!(matches!(
        log.entries(1, 200, usize::MAX),
        Err(StorageError::Corrupt { .. })
    ));
    let recorded = log.record_damage(bad, "read found a bad checksum").unwrap();
    assert_eq!(
        recorded,
        RepairMarker {
            until_index: 200,
            hard_state_lost: false,
            cut_from: Some(bad),
        }
    );
    assert!(matches!(
        log.clear_repair(),
        Err(StorageError::RepairCutPending { cut_from }) if cut_from == bad
    ));
    assert_eq!(log.last_index(), 200, "record_damage does not cut");
    drop(log);
    let (ok, stdout) = verify_cli(dir.path());
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "repair pending: until index 200, cut pending from index {bad}"
        )),
        "{stdout}"
    );

    let opened = open(dir.path(), 4096);
    assert_eq!(opened.damage.len(), 1, "{:?}", opened.damage);
    assert_eq!(
        (opened.damage[0].first_index, opened.damage[0].last_index),
        (bad, 200)
    );
    assert!(opened.damage[0].path.ends_with("REPAIR"));
    assert_eq!(opened.repair, marker(200));
    assert_prefix(&opened.log, bad - 1);
    drop(opened);
    assert_verify_repair_pending(dir.path(), 200);
}

#[test]
fn a_missing_middle_segment_is_damage_up_to_the_last_index() {
    let dir = tempfile::tempdir().unwrap();
    build_segmented(dir.path(), 200);
    let all = segments(dir.path());
    let (missing_first, missing) = all[2].clone();
    std::fs::remove_file(&missing).unwrap();
    let before = &all[1].1;
    assert_verify_reports(dir.path(), before, missing_first, 200);

    let opened = open(dir.path(), 4096);
    let ranges: Vec<_> = opened
        .damage
        .iter()
        .map(|d| (d.first_index, d.last_index, d.path.clone()))
        .collect();
    assert_eq!(ranges, vec![(missing_first, 200, before.clone())]);
    assert_eq!(opened.repair, marker(200));
    assert_prefix(&opened.log, missing_first - 1);
    drop(opened);
    assert_eq!(segments(dir.path()).len(), 2, "later segments are removed");
    assert_verify_repair_pending(dir.path(), 200);
}

/// The same without index files (they are a cache, not fsynced: a power
/// loss can take them): open still finds the gap, from the frame headers of
/// the segment before it, and records it for repair at start, instead of
/// opening "healthy" and failing a later read of that range.
#[test]
fn a_missing_middle_segment_without_index_files_is_found_at_open() {
    let dir = tempfile::tempdir().unwrap();
    build_segmented(dir.path(), 200);
    let all = segments(dir.path());
    let (missing_first, missing) = all[2].clone();
    std::fs::remove_file(&missing).unwrap();
    for item in std::fs::read_dir(dir.path().join("log")).unwrap() {
        let path = item.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "idx") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let before = &all[1].1;
    assert_verify_reports(dir.path(), before, missing_first, 200);

    let opened = open(dir.path(), 4096);
    let ranges: Vec<_> = opened
        .damage
        .iter()
        .map(|d| (d.first_index, d.last_index, d.path.clone()))
        .collect();
    assert_eq!(ranges, vec![(missing_first, 200, before.clone())]);
    assert_eq!(opened.repair, marker(200));
    assert_prefix(&opened.log, missing_first - 1);
    drop(opened);
    assert_eq!(segments(dir.path()).len(), 2, "later segments are removed");
    assert_verify_repair_pending(dir.path(), 200);
}

#[test]
fn a_truncated_middle_segment_is_damage_from_its_first_lost_entry() {
    let dir = tempfile::tempdir().unwrap();
    build_segmented(dir.path(), 200);
    let (first, path) = segments(dir.path())[2].clone();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((SEGMENT_HEADER_BYTES + 5 * FRAME_BYTES + 20) as u64)
        .unwrap();
    drop(file);
    assert_verify_reports(dir.path(), &path, first + 5, 200);

    let opened = open(dir.path(), 4096);
    assert_eq!(opened.damage.len(), 1, "{:?}", opened.damage);
    assert_eq!(
        (opened.damage[0].first_index, opened.damage[0].last_index),
        (first + 5, 200)
    );
    assert_eq!(opened.damage[0].path, path);
    assert_eq!(opened.repair, marker(200));
    assert_prefix(&opened.log, first + 4);
}

#[test]
fn a_middle_segment_with_a_bad_header_is_damage_from_its_first_index() {
    let dir = tempfile::tempdir().unwrap();
    build_segmented(dir.path(), 200);
    let (first, path) = segments(dir.path())[3].clone();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    assert_verify_reports(dir.path(), &path, first, 200);

    let opened = open(dir.path(), 4096);
    assert_eq!(opened.damage.len(), 1, "{:?}", opened.damage);
    let range = &opened.damage[0];
    assert_eq!((range.first_index, range.last_index), (first, 200));
    assert_eq!((range.path.clone(), range.offset), (path.clone(), 44));
    assert_eq!(opened.repair, marker(200));
    assert_prefix(&opened.log, first - 1);
    drop(opened);
    assert!(!path.exists());
}

/// Both hard-state copies unreadable: no error, no hard state, a marker
/// saying the votes are lost; one bad copy is survived silently.
#[test]
fn lost_hard_state_opens_without_it_and_writes_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    build_segmented(dir.path(), 50);
    let state = HardState {
        term: 7,
        voted_for: Some(3),
    };
    open(dir.path(), 4096).log.store_hard_state(&state).unwrap();
    let copy = |n: usize| dir.path().join(format!("hard-state.{n}"));
    let mut rotten = std::fs::read(copy(0)).unwrap();
    rotten[30] ^= 1;
    std::fs::write(copy(1), &rotten).unwrap();
    let opened = open(dir.path(), 4096);
    assert_eq!((opened.hard_state, opened.repair), (Some(state), None));
    drop(opened);

    std::fs::write(copy(0), &rotten).unwrap();
    let opened = open(dir.path(), 4096);
    assert_eq!(opened.hard_state, None);
    assert_eq!(
        opened.repair,
        Some(RepairMarker {
            until_index: 50,
            hard_state_lost: true,
            cut_from: None,
        })
    );
    assert!(opened.damage.is_empty());
    assert_prefix(&opened.log, 50);
    drop(opened);
    let (ok, stdout) = verify_cli(dir.path());
    assert!(!ok, "both copies are bad: {stdout}");
    assert!(
        stdout.contains("repair pending: until index 50, hard state lost"),
        "{stdout}"
    );

    // A fresh directory stays fresh.
    let fresh = tempfile::tempdir().unwrap();
    let opened = open(fresh.path(), 4096);
    assert_eq!((opened.hard_state, opened.repair), (None, None));
}

/// A crash after the marker is written and before the cut: the next open
/// finishes the cut; `clear_repair` then removes the marker for good.
#[test]
fn a_crash_between_marker_and_cut_is_finished_by_the_next_open_then_cleared() {
    let dir = tempfile::tempdir().unwrap();
    build_segmented(dir.path(), 100);
    {
        // The marker as an open that found damage at 60 writes it first.
        let mut log = open(dir.path(), 4096).log;
        log.record_damage(60, "simulated").unwrap();
    }
    let opened = open(dir.path(), 4096);
    assert_eq!(
        opened
            .damage
            .iter()
            .map(|d| (d.first_index, d.last_index))
            .collect::<Vec<_>>(),
        vec![(60, 100)]
    );
    assert_eq!(opened.repair, marker(100));
    assert_prefix(&opened.log, 59);
    let mut log = opened.log;
    log.append(&entries(60..=100)).unwrap();
    log.sync().unwrap();
    log.clear_repair().unwrap();
    assert_eq!(log.repair(), None);
    drop(log);
    let opened = open(dir.path(), 4096);
    assert_eq!(opened.repair, None);
    assert!(opened.damage.is_empty());
    assert_prefix(&opened.log, 100);
    drop(opened);
    assert!(!dir.path().join("REPAIR").exists());
    let (ok, stdout) = verify_cli(dir.path());
    assert!(ok && !stdout.contains("repair pending"), "{stdout}");
}

/// A marker's until_index never goes down: later damage extends it.
#[test]
fn later_damage_never_lowers_until_index() {
    let dir = tempfile::tempdir().unwrap();
    build_segmented(dir.path(), 100);
    {
        let mut log = open(dir.path(), 4096).log;
        log.record_damage(80, "first").unwrap();
    }
    let mut log = open(dir.path(), 4096).log;
    assert_eq!(log.last_index(), 79);
    log.record_damage(30, "second").unwrap();
    drop(log);
    let opened = open(dir.path(), 4096);
    assert_eq!(opened.repair, marker(100));
    assert_prefix(&opened.log, 29);
}

/// A pending cut and more damage after it in the tail segment: the cut is
/// at the lower index, and both are reported.
#[test]
fn a_pending_cut_below_new_damage_cuts_at_the_lower_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), 64 * 1024).log;
        log.append(&entries(1..=20)).unwrap();
        log.sync().unwrap();
        log.append(&entries(21..=40)).unwrap();
        log.sync().unwrap();
        log.record_damage(10, "simulated").unwrap();
    }
    let (_, path) = segments(dir.path()).remove(0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[SEGMENT_HEADER_BYTES + 29 * FRAME_BYTES + 60] ^= 2;
    std::fs::write(&path, &bytes).unwrap();
    let opened = open(dir.path(), 64 * 1024);
    let ranges: Vec<_> = opened
        .damage
        .iter()
        .map(|d| (d.first_index, d.last_index))
        .collect();
    assert_eq!(ranges, vec![(10, 40), (30, 40)]);
    assert_eq!(opened.repair, marker(40));
    assert_prefix(&opened.log, 9);
}

/// `(first, last)` of every `damaged entries FIRST..LAST` problem of a
/// verify report, sorted, each once.
fn verify_damaged_ranges(report: &VerifyReport) -> Vec<(LogIndex, LogIndex)> {
    let mut ranges: Vec<(LogIndex, LogIndex)> = report
        .problems
        .iter()
        .filter_map(|p| {
            let rest = p.what.split_once("damaged entries ")?.1;
            let (range, _) = rest.split_once(':')?;
            let (first, last) = range.split_once("..")?;
            Some((first.parse().ok()?, last.parse().ok()?))
        })
        .collect();
    ranges.sort_unstable();
    ranges.dedup();
    ranges
}

/// What a read-only open (the same decisions as a node's open, nothing
/// written) and `verify` make of `dir` agree: the same damaged ranges, and
/// verify (library and CLI) is clean exactly when the open records nothing
/// (no damage, and the votes not newly counted as lost). Returns the
/// verify report.
fn assert_verify_agrees_with_open(dir: &Path) -> VerifyReport {
    let report = verify_data_dir(dir).unwrap();
    let opened = Log::open_read_only(dir).unwrap_or_else(|e| panic!("read-only open: {e}"));
    let mut open_ranges: Vec<(LogIndex, LogIndex)> = opened
        .damage
        .iter()
        .map(|d| (d.first_index, d.last_index))
        .collect();
    open_ranges.sort_unstable();
    open_ranges.dedup();
    assert_eq!(
        verify_damaged_ranges(&report),
        open_ranges,
        "verify problems {:?} vs open damage {:?}",
        report.problems,
        opened.damage
    );
    let votes_lost_now = opened.repair.is_some_and(|m| m.hard_state_lost)
        && !report.repair.is_some_and(|m| m.hard_state_lost);
    let open_records_something = !opened.damage.is_empty() || votes_lost_now;
    drop(opened);
    assert_eq!(
        report.is_clean(),
        !open_records_something,
        "verify problems: {:?}",
        report.problems
    );
    let (ok, stdout) = verify_cli(dir);
    assert_eq!(ok, report.is_clean(), "{stdout}");
    report
}

/// A zero-length segment file (first, middle or last) is a segment with an
/// invalid header: damage from its first index, for verify as for open.
#[test]
fn verify_agrees_with_open_on_a_zero_length_segment() {
    let count = {
        let dir = tempfile::tempdir().unwrap();
        build_segmented(dir.path(), 200);
        segments(dir.path()).len()
    };
    assert!(count >= 3, "the test needs 3 segments or more");
    for position in [0, count / 2, count - 1] {
        let dir = tempfile::tempdir().unwrap();
        build_segmented(dir.path(), 200);
        let all = segments(dir.path());
        let (first, path) = all[position].clone();
        std::fs::File::create(&path).unwrap();
        let report = assert_verify_agrees_with_open(dir.path());
        let ranges = verify_damaged_ranges(&report);
        assert_eq!(
            ranges.first().map(|r| r.0),
            Some(first),
            "segment {position}: {:?}",
            report.problems
        );
        assert!(
            report.problems.iter().any(|p| p.path == path),
            "segment {position}: {:?}",
            report.problems
        );
    }
}

/// A zero-length segment file wholly below the log start (left, say, by a
/// crash while retention deleted it) is no part of the log: open deletes
/// it without a word (6.2 step 3), so verify notes it and is clean.
#[test]
fn verify_agrees_with_open_on_a_zero_length_segment_below_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    build_segmented(dir.path(), 200);
    let all = segments(dir.path());
    let start = all[2].0 + 1;
    {
        let mut log = open(dir.path(), 4096).log;
        log.advance_start(LogStart {
            first_index: start,
            prev_term: entry(start - 1).term,
            membership: Membership::default(),
            producers: Bytes::new(),
        })
        .unwrap();
    }
    assert_eq!(segments(dir.path())[0].0, all[2].0, "retention ran");
    std::fs::File::create(&all[0].1).unwrap();
    let report = assert_verify_agrees_with_open(dir.path());
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(
        report.notes.iter().any(|n| n.path == all[0].1),
        "{:?}",
        report.notes
    );
}

/// The 36 bytes of a repair marker (storage-format.md 4a).
fn marker_bytes(until_index: LogIndex, cut_from: Option<LogIndex>) -> Vec<u8> {
    let mut bytes = b"RLOGRPR\0".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    let flags: u32 = if cut_from.is_some() { 2 } else { 0 };
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(&until_index.to_le_bytes());
    bytes.extend_from_slice(&cut_from.unwrap_or(0).to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// A cut a running node recorded (a read found an entry damaged) is damage
/// from that index for verify too, as the next open cuts there; a pending
/// cut past the end of the log is dropped by open and is no problem.
#[test]
fn verify_agrees_with_open_on_a_pending_cut() {
    let dir = tempfile::tempdir().unwrap();
    build_segmented(dir.path(), 100);
    {
        let mut log = open(dir.path(), 4096).log;
        log.record_damage(60, "simulated").unwrap();
    }
    let report = assert_verify_agrees_with_open(dir.path());
    assert_eq!(verify_damaged_ranges(&report), vec![(60, 100)]);

    let past_end = tempfile::tempdir().unwrap();
    build_segmented(past_end.path(), 100);
    std::fs::write(past_end.path().join("REPAIR"), marker_bytes(150, Some(150))).unwrap();
    let report = assert_verify_agrees_with_open(past_end.path());
    assert!(report.is_clean(), "{:?}", report.problems);
}

/// Both hard-state copies valid with the same generation but different
/// contents: no store writes that (both copies get the same bytes), so one
/// of them is not what was stored and the vote cannot be trusted. Open
/// counts the votes as lost (the marker keeps the node from voting), and
/// verify reports it. A copy with the voted flag clear but a non-zero
/// `voted_for` is invalid, like any field that breaks its rule.
#[test]
fn verify_agrees_with_open_on_conflicting_hard_state_copies() {
    let dir = tempfile::tempdir().unwrap();
    build_segmented(dir.path(), 50);
    let state = HardState {
        term: 7,
        voted_for: Some(2),
    };
    open(dir.path(), 4096).log.store_hard_state(&state).unwrap();
    let good = std::fs::read(dir.path().join("hard-state.0")).unwrap();
    let with = |at: usize, bytes: &[u8]| {
        let mut copy = good.clone();
        copy[at..at + bytes.len()].copy_from_slice(bytes);
        let crc = crc32fast::hash(&copy[..40]);
        copy[40..44].copy_from_slice(&crc.to_le_bytes());
        copy
    };
    // Same generation, another vote in the same term.
    std::fs::write(
        dir.path().join("hard-state.1"),
        with(32, &3u64.to_le_bytes()),
    )
    .unwrap();
    let report = assert_verify_agrees_with_open(dir.path());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.path.ends_with("hard-state.1") && p.what.contains("same generation")),
        "{:?}",
        report.problems
    );
    let opened = open(dir.path(), 4096);
    assert_eq!(opened.hard_state, None);
    assert!(opened.repair.expect("a repair marker").hard_state_lost);
    drop(opened);

    // The voted flag clear with a vote in the field: that copy is bad, the
    // other one is used (one bad copy is a verify problem, not damage).
    let dir = tempfile::tempdir().unwrap();
    build_segmented(dir.path(), 50);
    open(dir.path(), 4096).log.store_hard_state(&state).unwrap();
    std::fs::write(
        dir.path().join("hard-state.1"),
        with(12, &0u32.to_le_bytes()),
    )
    .unwrap();
    let report = verify_data_dir(dir.path()).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.path.ends_with("hard-state.1") && p.offset == 32),
        "{:?}",
        report.problems
    );
    let opened = open(dir.path(), 4096);
    assert_eq!(opened.hard_state, Some(state));
    assert_eq!(opened.repair, None);
}
