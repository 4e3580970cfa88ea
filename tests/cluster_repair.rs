//! Issue 7, corruption-aware recovery, end to end in an in-process 3-node
//! cluster: a follower whose disk flipped a bit in the middle of its log
//! starts (instead of refusing to), cuts its log before the damage, does not
//! vote while its log is short, is refilled by the leader, and ends up
//! serving exactly what the leader serves, with its repair marker gone.
//!
//! Run alone: `cargo test --profile ci --test cluster_repair -- --nocapture`.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use raftlog::client::PublisherOptions;
use raftlog::storage::Log;

/// Small segments, so the log spans several and the damage is in the middle.
fn small_segments(config: &mut raftlog::server::config::ServerConfig) {
    config.record_bytes_max = 4 * 1024;
    config.segment_bytes = 64 * 1024;
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("log"))
        .expect("read the log directory")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

/// Flips one byte in the payload area of a sealed segment in the middle
/// of the log (well past the segment header, inside the first frames).
fn flip_a_byte_in_the_middle(data_dir: &Path) -> PathBuf {
    let files = segments(data_dir);
    assert!(
        files.len() >= 3,
        "the log spans several segments: {files:?}"
    );
    let victim = files[files.len() / 2].clone();
    let mut bytes = std::fs::read(&victim).expect("read a segment");
    let offset = 4096 + 300;
    bytes[offset] ^= 0x40;
    std::fs::write(&victim, bytes).expect("write the damaged segment");
    victim
}

/// Publishes `records` through the cluster, bounded in time.
async fn publish(cluster: &TestCluster, what: &str, records: &[bytes::Bytes]) {
    within(
        what,
        CATCH_UP_WAIT,
        publish_all(
            cluster.client_config(),
            PublisherOptions::default(),
            records,
            100,
        ),
    )
    .await
    .unwrap_or_else(|error| panic!("{what}: {error}"));
}

/// Waits until the node with `data_dir` has finished its repair.
async fn wait_repair_marker_removed(data_dir: &Path) {
    eventually("the repair marker to be removed", CATCH_UP_WAIT, || async {
        if data_dir.join("REPAIR").exists() {
            Err("still repairing".to_string())
        } else {
            Ok(())
        }
    })
    .await;
}

/// Waits until the leader's status says whether `id` is repairing.
async fn wait_status_repairing(cluster: &TestCluster, id: u64, repairing: bool) {
    let what = format!("status to show node {id} with repairing = {repairing}");
    eventually(&what, CATCH_UP_WAIT, || async {
        let status = cluster.status().await?;
        match status.nodes.iter().find(|node| node.id == id) {
            Some(node) if node.repairing == repairing => Ok(()),
            other => Err(format!("node {id} in status: {other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_flipped_bit_repairs_from_the_leader() {
    let mut cluster = TestCluster::start_with(3, small_segments).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let before = numbered_records("before-damage", 3_000);
    publish(&cluster, "publishing before the damage", &before).await;
    cluster.wait_node_serves(follower, &before).await;

    cluster.stop(follower).await;
    let data_dir = cluster.config(follower).data_dir.clone();
    let damaged = flip_a_byte_in_the_middle(&data_dir);
    tracing_free_note(&format!("flipped a byte in {}", damaged.display()));

    // The node starts (it used to refuse), as a repairing replica.
    cluster.restart(follower).await;
    assert!(
        data_dir.join("REPAIR").exists(),
        "the repair marker is written before the log is cut"
    );

    // The leader sees it repairing (its answers say so), unless the repair
    // is already over: a restarted node relinks at once since the QUIC
    // stateless-reset fix, and the leader may refill the cut range before
    // the first status is taken. What it holds afterwards is checked below.
    let what = format!("status to show node {follower} repairing, or its repair finished");
    eventually(&what, CATCH_UP_WAIT, || async {
        if !data_dir.join("REPAIR").exists() {
            return Ok(());
        }
        let status = cluster.status().await?;
        match status.nodes.iter().find(|node| node.id == follower) {
            Some(node) if node.repairing => Ok(()),
            other => Err(format!("node {follower} in status: {other:?}")),
        }
    })
    .await;

    // New records grow the log past what the follower held; the leader
    // refills the cut range and the follower serves everything again.
    let after = numbered_records("after-damage", 200);
    publish(&cluster, "publishing after the damage", &after).await;
    let all: Vec<_> = before.iter().chain(after.iter()).cloned().collect();
    let on_leader = cluster.wait_node_serves(leader, &all).await;
    let on_follower = cluster.wait_node_serves(follower, &all).await;
    assert_eq!(on_follower, on_leader, "same records at the same indexes");
    wait_repair_marker_removed(&data_dir).await;

    wait_status_repairing(&cluster, follower, false).await;

    // The repaired node votes again: with the leader stopped, the two
    // others elect one of them.
    cluster.stop(leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    cluster.stop(follower).await;
    let opened = Log::open_read_only(&data_dir).expect("the repaired log opens");
    assert!(opened.damage.is_empty(), "{:?}", opened.damage);
    assert!(opened.repair.is_none());
    drop(opened);
    cluster.shutdown().await;
}

/// Both hard-state copies of a follower unreadable: it starts (with a
/// repair marker) instead of refusing, asks the voters for their terms,
/// and votes again once fenced and caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_lost_its_hard_state_votes_again_after_repair() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let before = numbered_records("before-loss", 500);
    publish(&cluster, "publishing before the loss", &before).await;
    cluster.wait_node_serves(follower, &before).await;

    cluster.stop(follower).await;
    let data_dir = cluster.config(follower).data_dir.clone();
    for name in raftlog::storage::HARD_STATE_FILE_NAMES {
        std::fs::write(data_dir.join(name), b"garbage, not a hard state").expect("overwrite");
    }
    cluster.restart(follower).await;
    assert!(data_dir.join("REPAIR").exists(), "the loss is recorded");

    let after = numbered_records("after-loss", 100);
    publish(&cluster, "publishing after the loss", &after).await;
    wait_repair_marker_removed(&data_dir).await;
    cluster.stop(leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader, "the two left elect a leader");
    let all: Vec<_> = before.iter().chain(after.iter()).cloned().collect();
    cluster.wait_node_serves(new_leader, &all).await;
    cluster.shutdown().await;
}

/// A power loss can take the index files (they are not fsynced) and, with
/// a bad disk, a whole segment in the middle of the log: the follower
/// finds the gap at start from the frame headers of the segment before it,
/// starts as a repairing replica instead of failing a later read of that
/// range, and the leader refills it (issue 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_missing_a_middle_segment_and_its_index_files_repairs_at_start() {
    let mut cluster = TestCluster::start_with(3, small_segments).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let before = numbered_records("before-loss", 3_000);
    publish(&cluster, "publishing before the loss", &before).await;
    cluster.wait_node_serves(follower, &before).await;

    cluster.stop(follower).await;
    let data_dir = cluster.config(follower).data_dir.clone();
    let files = segments(&data_dir);
    assert!(
        files.len() >= 4,
        "the log spans several segments: {files:?}"
    );
    let lost = files[files.len() / 2].clone();
    std::fs::remove_file(&lost).expect("remove a middle segment");
    for entry in std::fs::read_dir(data_dir.join("log")).expect("the log directory") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|ext| ext == "idx") {
            std::fs::remove_file(&path).expect("remove an index file");
        }
    }
    tracing_free_note(&format!("removed {} and every index file", lost.display()));

    cluster.restart(follower).await;
    assert!(
        data_dir.join("REPAIR").exists(),
        "the gap is recorded in the repair marker at start"
    );
    let after = numbered_records("after-loss", 200);
    publish(&cluster, "publishing after the loss", &after).await;
    let all: Vec<_> = before.iter().chain(after.iter()).cloned().collect();
    let on_leader = cluster.wait_node_serves(leader, &all).await;
    let on_follower = cluster.wait_node_serves(follower, &all).await;
    assert_eq!(on_follower, on_leader, "same records at the same indexes");
    wait_repair_marker_removed(&data_dir).await;
    cluster.shutdown().await;
}
