//! The consensus core's own ceiling: entries/s committed through a 3-node
//! simulated cluster with no faults, no checks and no I/O, for batches of
//! 1 and 1,000 entries.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftlog::raft::Proposal;
use raftlog::sim::{Sim, SimOptions};

/// Committed entries the simulated disks keep before the bench drops them:
/// few enough to stay in cache, as a real log's recent pages would (the
/// bench measures the core, not the harness's memory traffic), and enough
/// that the cost of compacting is spread over many entries.
const COMPACT_ENTRIES: usize = 4_096;

fn cluster() -> Sim {
    let mut options = SimOptions::new(7, 3);
    options.spares = 0;
    options.faults = false;
    options.operations = false;
    options.checks = false;
    let mut sim = Sim::new(options);
    for _ in 0..1_000 {
        if sim.leader().is_some() {
            break;
        }
        if let Err(violation) = sim.step(1000) {
            panic!("bench cluster failed: {violation:?}");
        }
    }
    sim
}

fn commit_batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_commit");
    for batch in [1usize, 1_000] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("entries_per_batch", batch),
            &batch,
            |b, &batch| {
                let mut sim = cluster();
                let Some(leader) = sim.leader() else {
                    panic!("no leader elected")
                };
                let payload = Bytes::from_static(&[0u8; 64]);
                let compact_every_rounds = (COMPACT_ENTRIES / batch).max(1) as u64;
                let mut rounds = 0u64;
                b.iter(|| {
                    let proposals = (0..batch)
                        .map(|_| Proposal::data(payload.clone()))
                        .collect();
                    let Some(range) = sim.propose_raw(proposals) else {
                        panic!("leader refused")
                    };
                    for _ in 0..16 {
                        if let Err(violation) = sim.flush() {
                            panic!("{violation:?}");
                        }
                        if sim
                            .core(leader)
                            .is_some_and(|core| core.commit_index() >= *range.end())
                        {
                            break;
                        }
                    }
                    rounds += 1;
                    if rounds % compact_every_rounds == 0 {
                        sim.compact_committed();
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, commit_batches);
criterion_main!(benches);
