//! Storage engine benchmarks (issue 3): append throughput without and with a
//! sync per batch, sequential reads, and recovery time of a log with many
//! segments plus a 64 MiB tail. Run with `cargo bench --bench storage`.
//! Data lives under $TMPDIR (tempfile).

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftlog::storage::frame::encode_entries;
use raftlog::storage::{
    encode_segment_header, segment_file_name, Log, LogConfig, SEGMENT_HEADER_BYTES,
};
use raftlog::types::{Entry, LogStart, Membership};

/// Reset the log (untimed) once this much has been appended, to bound disk use.
const APPEND_BYTES_BEFORE_RESET: u64 = 512 * 1024 * 1024;
/// Segments fabricated for the recovery benchmark (sparse, 64 MiB each).
const RECOVERY_SEGMENT_COUNT: u64 = 1024;
const TAIL_BYTES: usize = 64 * 1024 * 1024;

fn batch(first: u64, count: usize, payload: &Bytes) -> Vec<Entry> {
    (0..count as u64)
        .map(|i| Entry::data(first + i, 1, payload.clone()))
        .collect()
}

fn membership() -> Membership {
    Membership::with_voters([(1, "127.0.0.1:7001".to_string())])
}

fn bench_append(c: &mut Criterion, synced: bool) {
    let name = if synced {
        "append_synced"
    } else {
        "append_unsynced"
    };
    let mut group = c.benchmark_group(name);
    if synced {
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(2));
    } else {
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(3));
    }
    group.warm_up_time(Duration::from_millis(500));
    for payload_bytes in [100usize, 1024] {
        for batch_count in [1usize, 64, 1024] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut log = Log::open(dir.path(), LogConfig::default())
                .expect("open")
                .log;
            let payload = Bytes::from(vec![0x5Au8; payload_bytes]);
            // Pre-build batches so the benchmark measures the engine only.
            let template = batch(1, batch_count, &payload);
            group.throughput(Throughput::Elements(batch_count as u64));
            let id = BenchmarkId::new(format!("{payload_bytes}B"), format!("batch{batch_count}"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        let appended_bytes = (log.last_index() + 1 - log.first_index())
                            * (payload_bytes as u64 + 48);
                        if appended_bytes > APPEND_BYTES_BEFORE_RESET {
                            let next = log.last_index() + 1;
                            log.reset(LogStart {
                                first_index: next,
                                prev_term: 1,
                                membership: membership(),
                                producers: Default::default(),
                            })
                            .expect("reset");
                        }
                        let mut entries = template.clone();
                        let first = log.last_index() + 1;
                        for (i, e) in entries.iter_mut().enumerate() {
                            e.index = first + i as u64;
                        }
                        let start = Instant::now();
                        log.append(&entries).expect("append");
                        if synced {
                            log.sync().expect("sync");
                        }
                        elapsed += start.elapsed();
                        done += 1;
                    }
                    elapsed
                })
            });
            if synced {
                // The machine's own limit, measured right after (the disk is
                // shared, so adjacent runs compare best): write(2) the same
                // bytes at the end of a file, then fdatasync.
                bench_raw_fdatasync(&mut group, payload_bytes, batch_count);
            }
        }
    }
    group.finish();
}

fn bench_append_unsynced(c: &mut Criterion) {
    bench_append(c, false);
}

fn bench_append_synced(c: &mut Criterion) {
    bench_append(c, true);
}

/// write(2) of a batch's frame bytes at the end of a file, then fdatasync.
fn bench_raw_fdatasync(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    payload_bytes: usize,
    batch_count: usize,
) {
    let bytes = vec![0x5Au8; batch_count * (payload_bytes + 48)];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raw");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("create");
    let mut written = 0u64;
    let id = BenchmarkId::new(
        format!("raw_write_fdatasync_{payload_bytes}B"),
        format!("batch{batch_count}"),
    );
    group.bench_function(id, |b| {
        b.iter(|| {
            if written > APPEND_BYTES_BEFORE_RESET {
                file.set_len(0).expect("truncate");
                written = 0;
            }
            file.write_all(&bytes).expect("write");
            file.sync_data().expect("fdatasync");
            written += bytes.len() as u64;
        })
    });
}

fn bench_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_sequential");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), LogConfig::default())
        .expect("open")
        .log;
    let payload = Bytes::from(vec![0x5Au8; 100]);
    let total: u64 = 1_000_000;
    for chunk in 0..(total / 1000) {
        log.append(&batch(chunk * 1000 + 1, 1000, &payload))
            .expect("append");
    }
    log.sync().expect("sync");
    let read_count: u64 = 1024;
    group.throughput(Throughput::Elements(read_count));
    let mut low = 1;
    group.bench_function("100B/read1024", |b| {
        b.iter(|| {
            if low + read_count > total {
                low = 1;
            }
            let entries = log
                .entries(low, low + read_count - 1, usize::MAX)
                .expect("read");
            low += read_count;
            entries
        })
    });
    group.finish();
}

/// Writes RECOVERY_SEGMENT_COUNT sparse 64 MiB segments of one synced entry
/// each, then a tail segment holding 64 MiB of 1 KiB entries.
fn build_recovery_dir(dir: &std::path::Path) {
    let log_dir = dir.join("log");
    std::fs::create_dir_all(&log_dir).expect("mkdir");
    let segment_bytes = 64 * 1024 * 1024u64;
    for first in 1..=RECOVERY_SEGMENT_COUNT {
        let mut frame = BytesMut::new();
        encode_entries(
            &[Entry::data(first, 1, Bytes::from_static(b"x"))],
            &mut frame,
        );
        let synced = (SEGMENT_HEADER_BYTES + frame.len()) as u64;
        let path = log_dir.join(segment_file_name(first));
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        file.set_len(segment_bytes).expect("set_len");
        file.write_all(&encode_segment_header(first, segment_bytes, synced))
            .expect("header");
        file.write_all(&frame).expect("frame");
    }
    let config = LogConfig {
        segment_bytes,
        preallocate: false,
    };
    let mut log = Log::open(dir, config).expect("open").log;
    let payload = Bytes::from(vec![0x33u8; 1024 - 48]);
    let per_batch = 1024;
    let batches = TAIL_BYTES / (1024 * per_batch) - 1;
    for _ in 0..batches {
        let first = log.last_index() + 1;
        log.append(&batch(first, per_batch, &payload))
            .expect("append");
    }
    log.sync().expect("sync");
    log.sync().expect("sync");
}

fn bench_recovery(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_millis(500));
    let dir = tempfile::tempdir().expect("tempdir");
    build_recovery_dir(dir.path());
    let name = format!("{RECOVERY_SEGMENT_COUNT}x64MiB_segments_plus_64MiB_tail");
    group.bench_function(name, |b| {
        b.iter(|| {
            let opened = Log::open(dir.path(), LogConfig::default()).expect("open");
            assert!(opened.log.last_index() > RECOVERY_SEGMENT_COUNT);
            opened.log.last_index()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_append_unsynced,
    bench_append_synced,
    bench_read,
    bench_recovery
);
criterion_main!(benches);
