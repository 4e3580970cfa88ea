//! Segment sizes against record sizes, with real `raftlog serve` processes:
//! 1 MiB segments take 1 MiB records and larger ones (a record larger than
//! a segment gets a segment of its own), every node serves them
//! byte-identical, also after a restart; and a follower whose segments are
//! smaller than the records its leader accepts stores them without
//! crash-looping (before, it refused each with `EntryTooLarge` and exited).
//!
//! Run alone: `cargo test --profile ci --test cluster_segments -- --nocapture`.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::process::ServeCluster;
use common::*;
use raftlog::client::{ClientConfig, PublisherOptions};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A client of the nodes `ids` of `cluster`.
fn client_config(cluster: &ServeCluster, ids: &[u64]) -> ClientConfig {
    ClientConfig {
        cluster: ids
            .iter()
            .map(|id| {
                cluster
                    .addrs
                    .iter()
                    .find(|(node, _)| node == id)
                    .expect("known node")
                    .1
                    .clone()
            })
            .collect(),
        tls_dir: cluster.tls_dir.clone(),
        // A 1.5 MiB append is synced by a majority of loaded nodes.
        request_timeout: Duration::from_secs(10),
    }
}

/// A record of `len` bytes that differ per record and per position.
fn record(seed: usize, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i.wrapping_mul(7) ^ seed.wrapping_mul(131)) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn records(seed: usize, lens: &[usize]) -> Vec<Bytes> {
    lens.iter()
        .enumerate()
        .map(|(n, len)| record(seed * 100 + n, *len))
        .collect()
}

/// Publishes `input` one record per append; fails the test on an error.
async fn publish(cluster: &ServeCluster, input: &[Bytes]) {
    within(
        "publishing the records",
        CATCH_UP_WAIT,
        publish_all(
            client_config(cluster, &[1, 2, 3]),
            PublisherOptions::default(),
            input,
            1,
        ),
    )
    .await
    .unwrap_or_else(|error| {
        panic!(
            "publish failed: {error}\nnode 1:\n{}\nnode 2:\n{}\nnode 3:\n{}",
            cluster.log(1),
            cluster.log(2),
            cluster.log(3)
        )
    });
}

/// Waits until node `id`'s own log, read from the start, is `expected`
/// byte for byte.
async fn wait_serves(cluster: &ServeCluster, id: u64, expected: &[Bytes]) {
    let what = format!("node {id} to serve the {} records", expected.len());
    eventually(&what, CATCH_UP_WAIT, || async {
        let served = consume_all(client_config(cluster, &[id])).await?;
        if data_of(&served) == expected {
            Ok(())
        } else {
            Err(format!(
                "node {id} serves {} records (lengths {:?})",
                served.len(),
                served.iter().map(|r| r.data.len()).collect::<Vec<_>>()
            ))
        }
    })
    .await
}

/// The lengths of node `id`'s segment files.
fn segment_lengths(data_dir: &Path) -> Vec<u64> {
    let mut lengths: Vec<(String, u64)> = std::fs::read_dir(data_dir.join("log"))
        .expect("the node's log directory")
        .filter_map(|item| {
            let item = item.ok()?;
            let name = item.file_name().into_string().ok()?;
            name.ends_with(".seg")
                .then(|| (name, item.metadata().map_or(0, |m| m.len())))
        })
        .collect();
    lengths.sort();
    lengths.into_iter().map(|(_, len)| len).collect()
}

fn assert_no_storage_error(cluster: &ServeCluster, id: u64) {
    let log = cluster.log(id);
    assert!(
        !log.contains("EntryTooLarge") && !log.contains("more than a segment"),
        "node {id} refused an entry:\n{log}"
    );
}

/// `serve --segment-bytes 1048576` with records of 1 MiB and larger (2 MiB
/// record limit): the cluster starts (it was refused: "must hold at least
/// two of the largest records"), takes 1 MiB records, records larger than
/// the space left, and records larger than a segment; every node serves
/// them byte-identical, also after one restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_segments_take_one_mib_and_larger_records_on_every_node() {
    let mut cluster = ServeCluster::start(
        3,
        &[
            "--segment-bytes",
            "1048576",
            "--max-record-bytes",
            "2097152",
        ],
    );
    cluster.wait_leader(LEADER_WAIT);
    // 1 MiB (larger than a segment's room), then ones that fit a segment
    // but not the space left after the one before, then 1.5 MiB.
    let mut input = records(
        1,
        &[
            MIB,
            300 * KIB,
            800 * KIB,
            600 * KIB,
            MIB,
            MIB + MIB / 2,
            10,
            100 * KIB,
        ],
    );
    publish(&cluster, &input).await;
    for id in 1..=3 {
        wait_serves(&cluster, id, &input).await;
    }
    for id in 1..=3 {
        let lengths = segment_lengths(&cluster.data_dir(id));
        assert!(
            lengths.iter().any(|len| *len > MIB as u64),
            "node {id} has no oversized segment: {lengths:?}"
        );
        assert!(
            lengths.contains(&(MIB as u64)),
            "node {id} has no ordinary segment: {lengths:?}"
        );
    }

    // A restart reopens the mixed-size log; it keeps serving and taking
    // records.
    let status = cluster.stop(2, libc::SIGTERM);
    assert!(
        status.success(),
        "node 2 stop: {status}\n{}",
        cluster.log(2)
    );
    let during = records(2, &[MIB, 50 * KIB, MIB + 1]);
    publish(&cluster, &during).await;
    input.extend(during);
    cluster.spawn(2, &[]);
    let after = records(3, &[2 * MIB, 700 * KIB]);
    publish(&cluster, &after).await;
    input.extend(after);
    for id in 1..=3 {
        wait_serves(&cluster, id, &input).await;
        assert_no_storage_error(&cluster, id);
    }
    cluster.stop_all();
}

/// The leader has 1 MiB segments and takes 1 MiB records; node 3 has 64
/// KiB segments and a 4 KiB record limit. It replicates every record, both while catching up and
/// live, serves them byte-identical, and restarts on its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_smaller_segments_stores_every_record_its_leader_took() {
    let mut cluster = ServeCluster::prepare(3, &[]);
    // Nodes 1 and 2 are a majority: one of them leads, node 3 follows.
    for id in [1, 2] {
        cluster.spawn(id, &["--segment-bytes", "1048576"]);
    }
    cluster.wait_leader(LEADER_WAIT);
    let mut input = records(4, &[MIB, 200 * KIB, MIB, 64 * KIB, 10]);
    publish(&cluster, &input).await;

    // Its own record limit is smaller too: it limits what node 3 takes
    // from publishers, never what it replicates.
    let follower_flags = ["--segment-bytes", "65536", "--max-record-bytes", "4096"];
    cluster.spawn(3, &follower_flags);
    wait_serves(&cluster, 3, &input).await;
    let live = records(5, &[MIB, 65 * KIB, 30 * KIB, MIB]);
    publish(&cluster, &live).await;
    input.extend(live);
    for id in 1..=3 {
        wait_serves(&cluster, id, &input).await;
    }
    let lengths = segment_lengths(&cluster.data_dir(3));
    assert!(
        lengths.iter().filter(|len| **len > MIB as u64).count() >= 4,
        "node 3 stores each 1 MiB record in a segment of its own: {lengths:?}"
    );
    assert!(
        lengths.contains(&(64 * KIB as u64)),
        "node 3 uses its own size otherwise: {lengths:?}"
    );

    let status = cluster.stop(3, libc::SIGTERM);
    assert!(
        status.success(),
        "node 3 stop: {status}\n{}",
        cluster.log(3)
    );
    cluster.spawn(3, &follower_flags);
    let more = records(6, &[MIB, 1]);
    publish(&cluster, &more).await;
    input.extend(more);
    wait_serves(&cluster, 3, &input).await;
    assert_no_storage_error(&cluster, 3);
    // Every node exits 0 on SIGTERM: none of them died on the way.
    cluster.stop_all();
}
