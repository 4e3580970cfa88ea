//! Leader changes under load, in-process 3-node clusters: publishers with a
//! producer id lose and duplicate nothing, followers of the tail see every
//! record once, and a client restart that replays its input is exactly-once.
//!
//! Run alone: `cargo test --profile ci --test cluster_failover -- --nocapture`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use raftlog::client::{
    self, AdminRequest, ClientConfig, ClientError, Consumer, ConsumerOptions, Publisher, Record,
    StartFrom,
};
use raftlog::types::LogIndex;
use raftlog::wire::client::ErrorResponse;
use tokio::task::JoinHandle;

/// Publishes `input` in batches of `batch`, pausing `pause` between sends
/// so the run lasts long enough to be interrupted; `acked` counts records
/// whose index came back. Returns every record's index, in input order.
fn spawn_paced_publisher(
    config: ClientConfig,
    producer_id: u64,
    input: Vec<Bytes>,
    batch: usize,
    pause: Duration,
    acked: Arc<AtomicUsize>,
) -> JoinHandle<Result<Vec<LogIndex>, ClientError>> {
    tokio::spawn(async move {
        let mut publisher = Publisher::connect(config, producer(producer_id, 0, 8)).await?;
        let (tickets_tx, mut tickets_rx) = tokio::sync::mpsc::channel::<client::AppendTicket>(64);
        let collector = tokio::spawn(async move {
            let mut indexes = Vec::new();
            while let Some(ticket) = tickets_rx.recv().await {
                let range = ticket.await?;
                let count = range.count() as usize;
                indexes.extend(range);
                acked.fetch_add(count, Ordering::SeqCst);
            }
            Ok::<_, ClientError>(indexes)
        });
        for chunk in input.chunks(batch) {
            let ticket = publisher.send(chunk.to_vec()).await?;
            if tickets_tx.send(ticket).await.is_err() {
                break; // the collector failed; its error is returned below
            }
            tokio::time::sleep(pause).await;
        }
        drop(tickets_tx);
        let indexes = collector.await.map_err(|_| ClientError::Closed)?;
        publisher.close().await;
        indexes
    })
}

/// Issue 5: the leader crashes in the middle of a publish with a producer
/// id; a new leader is elected, the publisher finishes, and the log holds
/// every input record exactly once, at the indexes the publisher reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_crash_during_a_publish_loses_and_duplicates_nothing() {
    let mut cluster = TestCluster::start(3).await;
    let old_leader = cluster.leader().await;
    let input = numbered_records("failover", 5_000);
    let acked = Arc::new(AtomicUsize::new(0));
    let publishing = spawn_paced_publisher(
        cluster.client_config(),
        0xfa11,
        input.clone(),
        25,
        Duration::from_millis(5),
        acked.clone(),
    );
    eventually(
        "1,000 records acknowledged before the crash",
        CATCH_UP_WAIT,
        || async {
            match acked.load(Ordering::SeqCst) {
                n if n >= 1_000 => Ok(n),
                n => Err(format!("{n} acknowledged")),
            }
        },
    )
    .await;
    cluster.kill(old_leader).await;
    let acked_at_crash = acked.load(Ordering::SeqCst);
    assert!(
        acked_at_crash < input.len(),
        "the crash must happen mid-publish ({acked_at_crash} acknowledged)"
    );

    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    let indexes = within("the publisher to finish", CATCH_UP_WAIT, publishing)
        .await
        .expect("publisher task")
        .expect("every record is committed despite the crash");
    assert_eq!(indexes.len(), input.len());
    assert!(
        indexes.windows(2).all(|pair| pair[0] < pair[1]),
        "indexes increase in input order"
    );

    for id in cluster.ids().into_iter().filter(|&id| id != old_leader) {
        let records = cluster.wait_node_serves(id, &input).await;
        assert_eq!(indexes_of(&records), indexes, "node {id}");
    }
    // The crashed node comes back with the same log.
    cluster.restart(old_leader).await;
    cluster.wait_node_serves(old_leader, &input).await;
    cluster.shutdown().await;
}

/// Issue 13: leadership moves twice under a running publisher. While a
/// transfer is under way the leader refuses appends (`ChangeInProgress`),
/// and under a slow disk it sheds load (`Busy`): both are routine, so the
/// publisher waits, resends with the same sequences and finishes, and the
/// log holds every record once, at the indexes it reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_rides_through_two_leadership_transfers() {
    let cluster = TestCluster::start(3).await;
    let input = numbered_records("transfers", 6_000);
    let acked = Arc::new(AtomicUsize::new(0));
    let publishing = spawn_paced_publisher(
        cluster.client_config(),
        0x7a,
        input.clone(),
        16,
        Duration::from_millis(2),
        acked.clone(),
    );
    for (round, wanted) in [(1usize, 1_000usize), (2, 2_500)] {
        eventually(
            "records acknowledged before the transfer",
            CATCH_UP_WAIT,
            || async {
                match acked.load(Ordering::SeqCst) {
                    n if n >= wanted => Ok(n),
                    n => Err(format!("{n} acknowledged")),
                }
            },
        )
        .await;
        let leader = cluster.leader().await;
        let target = cluster.follower().await;
        client::admin(
            &cluster.client_config(),
            AdminRequest::TransferLeader { id: target },
        )
        .await
        .unwrap_or_else(|error| panic!("transfer {round}: {error}"));
        eventually("the transfer to take effect", LEADER_WAIT, || async {
            match cluster.status().await?.leader {
                Some(id) if id != leader => Ok(()),
                other => Err(format!("leader {other:?}")),
            }
        })
        .await;
    }
    assert!(
        acked.load(Ordering::SeqCst) < input.len(),
        "the transfers must happen mid-publish"
    );
    let indexes = within("the publisher to finish", CATCH_UP_WAIT, publishing)
        .await
        .expect("publisher task")
        .expect("every record is committed despite the transfers");
    assert_eq!(indexes.len(), input.len());
    assert!(
        indexes.windows(2).all(|pair| pair[0] < pair[1]),
        "indexes increase in input order"
    );
    for id in cluster.ids() {
        let records = cluster.wait_node_serves(id, &input).await;
        assert_eq!(indexes_of(&records), indexes, "node {id}");
    }
    cluster.shutdown().await;
}

/// Follows the tail from the start until `count` records arrived.
fn spawn_tail_follower(config: ClientConfig, count: usize) -> JoinHandle<Vec<Record>> {
    tokio::spawn(async move {
        let mut consumer = Consumer::connect(
            config,
            ConsumerOptions {
                from: StartFrom::Start,
                follow: true,
            },
        )
        .await
        .expect("connect the tail consumer");
        let mut records = Vec::new();
        while records.len() < count {
            match consumer.next_batch().await.expect("follow the tail") {
                Some(batch) => records.extend(batch),
                None => panic!("a following consumer never ends"),
            }
        }
        records
    })
}

fn assert_exactly_once(records: &[Record], input: &[Bytes]) {
    assert_eq!(data_of(records), input, "every record once, in order");
    assert!(
        records.windows(2).all(|pair| pair[0].index < pair[1].index),
        "indexes strictly increase"
    );
}

/// Issue 5: a consumer following the tail of the leader sees every record
/// exactly once while leadership is handed to another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_follower_sees_every_record_once_across_a_leadership_transfer() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let target = cluster.follower().await;
    let mut order = vec![leader];
    order.extend(cluster.ids().into_iter().filter(|&id| id != leader));
    let input = numbered_records("tail", 2_000);
    let follower_task = spawn_tail_follower(cluster.client_config_for(&order), input.len());

    publish_all(
        cluster.client_config(),
        Default::default(),
        &input[..1_000],
        50,
    )
    .await
    .expect("first half");
    client::admin(
        &cluster.client_config(),
        AdminRequest::TransferLeader { id: target },
    )
    .await
    .expect("transfer leadership");
    eventually("the transfer to take effect", LEADER_WAIT, || async {
        match cluster.status().await?.leader {
            Some(id) if id == target => Ok(()),
            other => Err(format!("leader {other:?}")),
        }
    })
    .await;
    publish_all(
        cluster.client_config(),
        Default::default(),
        &input[1_000..],
        50,
    )
    .await
    .expect("second half");

    let records = within("the tail follower", CATCH_UP_WAIT, follower_task)
        .await
        .expect("tail follower task");
    assert_exactly_once(&records, &input);
    cluster.shutdown().await;
}

/// Issue 5: a consumer following the tail of the leader sees every record
/// exactly once when that leader crashes (it resumes on another node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_follower_sees_every_record_once_across_a_leader_crash() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut order = vec![leader];
    order.extend(cluster.ids().into_iter().filter(|&id| id != leader));
    let input = numbered_records("crash-tail", 2_000);
    let follower_task = spawn_tail_follower(cluster.client_config_for(&order), input.len());

    publish_all(
        cluster.client_config(),
        Default::default(),
        &input[..1_000],
        50,
    )
    .await
    .expect("first half");
    cluster.kill(leader).await;
    publish_all(
        cluster.running_client_config(),
        Default::default(),
        &input[1_000..],
        50,
    )
    .await
    .expect("second half, after a new election");

    let records = within("the tail follower", CATCH_UP_WAIT, follower_task)
        .await
        .expect("tail follower task");
    assert_exactly_once(&records, &input);
    cluster.shutdown().await;
}

/// Issue 5 / CLI contract (`--producer-id`, `--first-seq`): a client that
/// restarts and sends the same input again with the same producer id and
/// first sequence gets the original indexes back and appends nothing; the
/// next new records follow, and a sequence gap is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_input_with_the_same_producer_id_is_not_appended_twice() {
    let cluster = TestCluster::start(3).await;
    let input = numbered_records("once", 1_000);
    let first = publish_all(cluster.client_config(), producer(4242, 0, 8), &input, 50)
        .await
        .expect("first run");
    let replay = publish_all(cluster.client_config(), producer(4242, 0, 8), &input, 50)
        .await
        .expect("replayed run");
    assert_eq!(
        replay, first,
        "the replay is answered with the original indexes"
    );

    let more = numbered_records("once-more", 100);
    let next = publish_all(cluster.client_config(), producer(4242, 1_000, 8), &more, 50)
        .await
        .expect("the next sequences");
    assert!(next[0] > *first.last().expect("indexes"));

    let gap = publish_all(
        cluster.client_config(),
        producer(4242, 5_000, 1),
        &numbered_records("gap", 1),
        1,
    )
    .await;
    match gap {
        Err(ClientError::Refused(ErrorResponse::SequenceGap {
            producer_id,
            expected,
            got,
        })) => assert_eq!((producer_id, expected, got), (4242, 1_100, 5_000)),
        other => panic!("a sequence gap must be refused, got {other:?}"),
    }

    let mut all = input.clone();
    all.extend(more);
    let leader = cluster.leader().await;
    let records = cluster.wait_node_serves(leader, &all).await;
    let mut expected_indexes = first.clone();
    expected_indexes.extend(next);
    assert_eq!(indexes_of(&records), expected_indexes);
    cluster.shutdown().await;
}

/// Issue 14: single-record appends sent while requests are in flight travel
/// together (the publisher joins them), yet every caller gets its own
/// record's index: 4,000 one-record batches with 1,024 in flight, through a
/// leader crash, each index holds exactly its record on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_single_record_appends_each_get_their_own_index_through_a_crash() {
    let mut cluster = TestCluster::start(3).await;
    let old_leader = cluster.leader().await;
    let input = numbered_records("joined", 4_000);
    let mut publisher = Publisher::connect(cluster.client_config(), producer(0x101, 0, 1024))
        .await
        .expect("publisher");
    let mut tickets = Vec::with_capacity(input.len());
    for (n, record) in input.iter().enumerate() {
        if n == 2_000 {
            cluster.kill(old_leader).await;
        }
        tickets.push(publisher.send(vec![record.clone()]).await.expect("queued"));
    }
    let mut indexes = Vec::with_capacity(input.len());
    for ticket in tickets {
        let answer = within("an answer", CATCH_UP_WAIT, ticket)
            .await
            .expect("committed");
        assert_eq!(answer.count(), 1, "one index per one-record batch");
        indexes.extend(answer);
    }
    publisher.close().await;
    assert!(
        indexes.windows(2).all(|pair| pair[0] < pair[1]),
        "indexes increase in send order"
    );
    for id in cluster.ids().into_iter().filter(|&id| id != old_leader) {
        let records = cluster.wait_node_serves(id, &input).await;
        assert_eq!(indexes_of(&records), indexes, "node {id}");
    }
    cluster.shutdown().await;
}
