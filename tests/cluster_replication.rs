//! In-process 3-node clusters on real QUIC (127.0.0.1, temp dirs): records
//! published anywhere end up, identical and in order, on every node, and
//! nodes that were down or fell behind the log start catch up.
//!
//! Run alone: `cargo test --profile ci --test cluster_replication -- --nocapture`.

mod common;

use std::time::Duration;

use common::*;
use raftlog::client::PublisherOptions;

/// Issue 5: a publisher that only knows a follower's address is redirected
/// to the leader; afterwards every node serves the same records, in input
/// order, at contiguous indexes (nothing else was appended meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_published_through_a_follower_are_served_identically_by_every_node() {
    let cluster = TestCluster::start(3).await;
    let follower = cluster.follower().await;
    let input = numbered_records("via-follower", 10_000);

    let indexes = within(
        "publishing 10,000 records through a follower",
        CATCH_UP_WAIT,
        publish_all(
            cluster.client_config_for(&[follower]),
            PublisherOptions {
                inflight_max: 16,
                ..PublisherOptions::default()
            },
            &input,
            100,
        ),
    )
    .await
    .expect("publish through a follower");
    assert_eq!(indexes.len(), input.len());
    let first = indexes[0];
    let contiguous: Vec<u64> = (first..first + input.len() as u64).collect();
    assert_eq!(
        indexes, contiguous,
        "one publisher, no leader change: indexes are contiguous"
    );

    for id in cluster.ids() {
        let records = cluster.wait_node_serves(id, &input).await;
        assert_eq!(
            indexes_of(&records),
            indexes,
            "node {id} serves the records at the indexes the publisher was told"
        );
    }
    cluster.shutdown().await;
}

/// Issue 5: a follower that was down while 5,000 records were committed
/// gets all of them after it restarts, and serves exactly what the leader serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_down_during_publishing_catches_up_after_restart() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    cluster.kill(follower).await;

    let input = numbered_records("while-down", 5_000);
    within(
        "publishing 5,000 records with one follower down",
        CATCH_UP_WAIT,
        publish_all(
            cluster.running_client_config(),
            PublisherOptions::default(),
            &input,
            100,
        ),
    )
    .await
    .expect("a majority keeps committing");

    cluster.restart(follower).await;
    let on_leader = cluster.wait_node_serves(leader, &input).await;
    let on_follower = cluster.wait_node_serves(follower, &input).await;
    assert_eq!(on_follower, on_leader, "same records at the same indexes");
    cluster.shutdown().await;
}

/// Small segments and a small retention budget, so retention drops
/// segments while a test publishes a few hundred KiB.
fn small_segments(config: &mut raftlog::server::config::ServerConfig) {
    config.record_bytes_max = 4 * 1024;
    config.segment_bytes = 64 * 1024;
    config.retention_bytes = Some(128 * 1024);
}

/// Issue 5 / retention: while a follower is down the leader's retention
/// drops the segments it would have needed; on its return the leader resets
/// it to the log start, and it then serves the same records as the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_log_start_is_reset_and_catches_up() {
    let mut cluster = TestCluster::start_with(3, small_segments).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let before = numbered_records("before", 10);
    let before_indexes = publish_all(
        cluster.client_config(),
        PublisherOptions::default(),
        &before,
        10,
    )
    .await
    .expect("publish before the follower stops");
    cluster.wait_node_serves(follower, &before).await;
    cluster.kill(follower).await;

    // ~1 MiB of records: many times the retention budget.
    let payload = "x".repeat(200);
    let input: Vec<bytes::Bytes> = (0..5_000)
        .map(|n| bytes::Bytes::from(format!("{n:06}-{payload}")))
        .collect();
    let indexes = within(
        "publishing 1 MiB with one follower down",
        CATCH_UP_WAIT,
        publish_all(
            cluster.running_client_config(),
            PublisherOptions::default(),
            &input,
            100,
        ),
    )
    .await
    .expect("a majority keeps committing");
    let follower_last = *before_indexes.last().expect("indexes");
    let log_start = eventually(
        "the leader's retention to pass the stopped follower's log",
        Duration::from_secs(20),
        || async {
            let status = cluster.status().await?;
            if status.log_start > follower_last + 1 {
                Ok(status.log_start)
            } else {
                Err(format!("log start {}", status.log_start))
            }
        },
    )
    .await;
    tracing_free_note(&format!(
        "leader {leader} log start {log_start}, follower {follower} stopped at {follower_last}"
    ));

    cluster.restart(follower).await;
    let last_index = *indexes.last().expect("indexes");
    let caught_up = eventually(
        "the reset follower to serve up to the last record",
        CATCH_UP_WAIT,
        || async {
            let records = consume_all(cluster.client_config_for(&[follower])).await?;
            match records.last() {
                Some(last) if last.index == last_index => Ok(records),
                other => Err(format!(
                    "follower serves {} records, last {:?}",
                    records.len(),
                    other.map(|r| r.index)
                )),
            }
        },
    )
    .await;
    let first_served = caught_up[0].index;
    assert!(
        first_served > follower_last,
        "the follower was reset past its old log (it serves from {first_served})"
    );
    // What it serves is exactly the leader's records from that index on.
    let on_leader = consume_all(cluster.client_config_for(&[leader]))
        .await
        .expect("consume from the leader");
    let leader_tail: Vec<_> = on_leader
        .into_iter()
        .filter(|record| record.index >= first_served)
        .collect();
    let follower_tail: Vec<_> = caught_up
        .into_iter()
        .filter(|record| record.index >= leader_tail[0].index)
        .collect();
    assert_eq!(follower_tail, leader_tail);
    let expected_tail: Vec<(u64, bytes::Bytes)> = indexes
        .iter()
        .copied()
        .zip(input.iter().cloned())
        .filter(|(index, _)| *index >= follower_tail[0].index)
        .collect();
    let served: Vec<(u64, bytes::Bytes)> = follower_tail
        .into_iter()
        .map(|record| (record.index, record.data))
        .collect();
    assert_eq!(served, expected_tail, "the input's tail at its indexes");
    // The leader learns the follower's progress from its next acknowledgement.
    eventually(
        "the leader to see the follower caught up",
        Duration::from_secs(20),
        || async {
            let status = cluster.status().await?;
            match status.nodes.iter().find(|node| node.id == follower) {
                Some(node) if node.match_index >= Some(last_index) => Ok(()),
                _ => Err(format!("{status:?}")),
            }
        },
    )
    .await;
    cluster.shutdown().await;
}

/// Issue 5: acknowledged records survive every node crashing at once
/// (aborted: no handover, no final sync) and restarting on its data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_every_node_keeps_every_acknowledged_record() {
    let mut cluster = TestCluster::start(3).await;
    let input = numbered_records("durable", 2_000);
    let indexes = within(
        "publishing 2,000 records",
        CATCH_UP_WAIT,
        publish_all(
            cluster.client_config(),
            PublisherOptions::default(),
            &input,
            100,
        ),
    )
    .await
    .expect("publish");

    for id in cluster.ids() {
        cluster.kill(id).await;
    }
    for id in cluster.ids() {
        cluster.restart(id).await;
    }
    cluster.leader().await;
    for id in cluster.ids() {
        let records = cluster.wait_node_serves(id, &input).await;
        assert_eq!(indexes_of(&records), indexes, "node {id}");
    }

    // And once more with a clean stop of every node.
    for id in cluster.ids() {
        cluster.stop(id).await;
    }
    for id in cluster.ids() {
        cluster.restart(id).await;
    }
    let more = numbered_records("after-restart", 100);
    publish_all(
        cluster.client_config(),
        PublisherOptions::default(),
        &more,
        100,
    )
    .await
    .expect("the restarted cluster takes new records");
    let mut all = input.clone();
    all.extend(more);
    for id in cluster.ids() {
        cluster.wait_node_serves(id, &all).await;
    }
    cluster.shutdown().await;
}

/// Issue 7 (found by the fault suite): removing the leader answers with the
/// membership without it, like any removal. The leader steps down as the
/// removal commits, which is how that request succeeds, so it must not be
/// failed with NotLeader (a client following the redirect would then ask
/// the new leader to remove a node that is already gone, and report an error).
///
/// It used to fail: followers dropped their link to the leader as soon as
/// they appended C_new without it, so their acknowledgements never reached
/// it, C_new never committed there, and CheckQuorum made it step down
/// (failing the request with `Unavailable`). Followers now keep a link to
/// the leader they follow even when it is not a member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_answers_with_the_membership_without_it() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let membership = raftlog::client::admin(
        &cluster.client_config_for(&[leader]),
        raftlog::client::AdminRequest::RemoveNode { id: leader },
    )
    .await
    .expect("removing the leader succeeds");
    assert!(
        !membership.addrs.contains_key(&leader),
        "the answer is the membership without {leader}: {membership:?}"
    );
    assert_eq!(membership.voters.len(), 2, "{membership:?}");
    cluster.kill(leader).await;
    let remaining: Vec<_> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    eventually(
        "a new leader among the remaining nodes",
        LEADER_WAIT,
        || async {
            match raftlog::client::status(&cluster.client_config_for(&remaining)).await {
                Ok(status) if status.leader.is_some_and(|id| id != leader) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    cluster.shutdown().await;
}
