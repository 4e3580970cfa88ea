//! Issue 13: exactly-once per record, in every case. A re-send that
//! straddles the end of what the log holds for its producer is split (old
//! records answered with their original indexes, the rest appended), a
//! re-sent sequence with another payload is refused, two concurrent retries
//! of one batch are both answered, and the producer table survives
//! retention, restarts and a follower reset.
//!
//! The CLI tests run `raftlog serve` processes; the others in-process
//! clusters (tests/common). Every node and process is stopped at the end,
//! also on failure (the guards' `Drop`).
//!
//! Run alone: `cargo test --profile ci --test cluster_exactly_once -- --nocapture`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::process::ServeCluster;
use common::*;
use raftlog::client::{self, AdminRequest};
use raftlog::net::ClientTls;
use raftlog::server::config::ServerConfig;
use raftlog::types::{LogIndex, NodeId, ProducerSeq};
use raftlog::wire::client::{AppendRequest, ClientRequest, ClientResponse};

/// Bound on one CLI run against a local cluster.
const CLI_WAIT: Duration = Duration::from_secs(60);

fn lines(prefix: &str, count: usize) -> String {
    (0..count).map(|n| format!("{prefix}-{n:04}\n")).collect()
}

fn printed_indexes(stdout: &str) -> Vec<LogIndex> {
    stdout
        .lines()
        .map(|line| {
            line.parse()
                .unwrap_or_else(|_| panic!("not an index: {line:?}"))
        })
        .collect()
}

/// Issue 13, the reported case: 500 records published twice from sequence 0
/// (same indexes), then the same 500 plus 100 new ones from sequence 0. The
/// last publish was refused ("batch from sequence 256 overlaps the log, which
/// ends before 500"); it prints the 500 original indexes and 100 new ones,
/// and the log holds 600 records.
#[test]
fn a_resend_straddling_the_log_end_prints_original_then_new_indexes() {
    let mut cluster = ServeCluster::start(3, &[]);
    cluster.wait_leader(LEADER_WAIT);
    let publish = |input: &str| {
        let args = ["publish", "--producer-id", "7", "--first-seq", "0"];
        let run = cluster.client(&args, input.as_bytes(), CLI_WAIT);
        run.assert_success("raftlog publish");
        printed_indexes(&run.stdout)
    };
    let first = publish(&lines("r", 500));
    assert_eq!(first.len(), 500);
    let again = publish(&lines("r", 500));
    assert_eq!(
        again, first,
        "a re-send is answered with the original indexes"
    );
    let more = publish(&lines("r", 600));
    assert_eq!(more.len(), 600);
    assert_eq!(more[..500], first[..], "the first 500 keep their indexes");
    let highest = first.iter().copied().max().unwrap_or(0);
    assert!(
        more[500..].windows(2).all(|pair| pair[0] < pair[1]) && more[500] > highest,
        "the 100 new records are appended after the old ones: {:?}",
        &more[500..]
    );

    let consumed = cluster.client(&["consume", "--from", "start"], b"", CLI_WAIT);
    consumed.assert_success("raftlog consume");
    assert_eq!(
        consumed.stdout,
        lines("r", 600),
        "the log holds each of the 600 records once"
    );
    cluster.stop_all();
}

/// Issue 13: a re-sent sequence whose payload differs from the stored one
/// is refused with a clear error and a non-zero exit, never answered with
/// the old index; nothing of that publish is appended.
#[test]
fn a_resent_sequence_with_another_payload_is_refused_by_the_cli() {
    let mut cluster = ServeCluster::start(3, &[]);
    cluster.wait_leader(LEADER_WAIT);
    let args = ["publish", "--producer-id", "9", "--first-seq", "0"];
    let stored = lines("p", 10);
    cluster
        .client(&args, stored.as_bytes(), CLI_WAIT)
        .assert_success("the first publish");
    let changed = stored.replace("p-0005", "p-changed") + "p-0010\n";
    let run = cluster.client(&args, changed.as_bytes(), CLI_WAIT);
    let error = run.assert_clean_failure("a publish reusing sequence 5 for another record");
    assert!(
        error.contains("sequence 5") && error.contains("different payload"),
        "{error}"
    );
    assert!(run.stdout.is_empty(), "nothing is printed: {}", run.stdout);

    let consumed = cluster.client(&["consume", "--from", "start"], b"", CLI_WAIT);
    consumed.assert_success("raftlog consume");
    assert_eq!(consumed.stdout, stored, "the log is unchanged");
    cluster.stop_all();
}

/// Issue 13, item 5: the same batch sent on two streams before it commits.
/// `pending_appends` was keyed by the last index alone, so the duplicate's
/// reply sender replaced the original's, whose stream then got no answer.
/// Both get the same indexes, in every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_retries_of_one_batch_both_get_its_indexes() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let tls = ClientTls::load(&cluster.tls_dir).expect("client TLS");
    let connection = within(
        "connecting to the leader",
        Duration::from_secs(20),
        raftlog::net::connect_client(&cluster.addr(leader).to_string(), &tls),
    )
    .await
    .expect("connect to the leader");
    for round in 0..20u64 {
        let request = ClientRequest::Append(AppendRequest {
            producer: Some(ProducerSeq {
                producer_id: 11,
                sequence: round * 4,
            }),
            records: (0..4)
                .map(|n| Bytes::from(format!("c-{round}-{n}")))
                .collect(),
        });
        let (first, second) = tokio::join!(
            ask_raw(&connection, &request),
            ask_raw(&connection, &request)
        );
        assert!(
            matches!(first, ClientResponse::Appended { .. }),
            "round {round}: {first:?}"
        );
        assert_eq!(first, second, "round {round}");
    }
    let records = consume_all(cluster.client_config()).await.expect("consume");
    assert_eq!(records.len(), 80, "each record once");
    cluster.shutdown().await;
}

/// Small segments and retention, so that a few thousand records drop the
/// oldest segments on every node.
fn small_segments_with_retention(config: &mut ServerConfig) {
    config.segment_bytes = 4096;
    config.record_bytes_max = 1024; // a segment holds two of the largest
    config.retention_bytes = Some(16 * 1024);
}

/// Waits until node `id` no longer stores index `index` (retention dropped it).
async fn wait_dropped(cluster: &TestCluster, id: NodeId, index: LogIndex) {
    let what = format!("node {id}'s retention to drop index {index}");
    eventually(&what, CATCH_UP_WAIT, || async {
        let records = consume_all(cluster.client_config_for(&[id])).await?;
        match records.first() {
            Some(first) if first.index > index => Ok(()),
            first => Err(format!(
                "node {id} starts at {:?}",
                first.map(|record| record.index)
            )),
        }
    })
    .await
}

/// Producer 7's batch, re-sent with 10 more records after its entries are
/// gone from the log: the old records keep their indexes, the new ones are
/// appended once; the log holds no second copy of the old ones.
async fn resend_with_more(cluster: &TestCluster, original: &[LogIndex]) {
    let input = numbered_records("kept", original.len() + 10);
    let indexes = within(
        "re-sending producer 7's records",
        CATCH_UP_WAIT,
        publish_all(cluster.client_config(), producer(7, 0, 8), &input, 50),
    )
    .await
    .expect("the re-send is answered");
    assert_eq!(
        indexes[..original.len()],
        original[..],
        "the dropped records keep their original indexes"
    );
    let leader = cluster.leader().await;
    let records = consume_all(cluster.client_config_for(&[leader]))
        .await
        .expect("consume");
    let kept: Vec<&Bytes> = records
        .iter()
        .map(|record| &record.data)
        .filter(|data| data.starts_with(b"kept-"))
        .collect();
    assert_eq!(
        kept,
        input[original.len()..].iter().collect::<Vec<_>>(),
        "only the 10 new records were appended"
    );
}

async fn publish_kept_and_filler(cluster: &TestCluster) -> Vec<LogIndex> {
    let kept = numbered_records("kept", 100);
    let original = within(
        "publishing producer 7's records",
        CATCH_UP_WAIT,
        publish_all(
            cluster.running_client_config(),
            producer(7, 0, 8),
            &kept,
            50,
        ),
    )
    .await
    .expect("publish");
    let filler = numbered_records("filler", 3000);
    within(
        "publishing filler",
        CATCH_UP_WAIT,
        publish_all(
            cluster.running_client_config(),
            producer(8, 0, 8),
            &filler,
            100,
        ),
    )
    .await
    .expect("publish filler");
    original
}

/// Issue 13, item 3: the table was rebuilt from the stored log alone, so
/// after retention dropped producer 7's entries and the nodes restarted,
/// producer 7 was unknown and its re-send was appended a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_table_survives_retention_and_a_restart() {
    let mut cluster = TestCluster::start_with(3, small_segments_with_retention).await;
    cluster.leader().await;
    let original = publish_kept_and_filler(&cluster).await;
    let highest = original.iter().copied().max().unwrap_or(0);
    for id in cluster.ids() {
        wait_dropped(&cluster, id, highest).await;
    }
    for id in cluster.ids() {
        cluster.stop(id).await;
    }
    for id in cluster.ids() {
        cluster.restart(id).await;
    }
    cluster.leader().await;
    resend_with_more(&cluster, &original).await;
    cluster.shutdown().await;
}

/// Issue 13, item 3: a follower reset to the leader's log start
/// (InstallLogStart) started with an empty table; once it led, producer 7's
/// re-send was appended again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_reset_to_the_leaders_log_start_keeps_the_producer_table() {
    let mut cluster = TestCluster::start_with(3, small_segments_with_retention).await;
    let lagging = cluster.follower().await;
    cluster.stop(lagging).await;
    let original = publish_kept_and_filler(&cluster).await;
    let highest = original.iter().copied().max().unwrap_or(0);
    let others: Vec<NodeId> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != lagging)
        .collect();
    for &id in &others {
        wait_dropped(&cluster, id, highest).await;
    }
    // Restart the others too: a leader's link queues what it sent the
    // stopped node before retention (entries from index 2), and delivered
    // late those would catch it up without a reset.
    for &id in &others {
        cluster.stop(id).await;
    }
    for &id in &others {
        cluster.restart(id).await;
    }
    cluster.leader().await;
    cluster.restart(lagging).await;
    // Reset to the leader's log start: it stores nothing at or below
    // producer 7's records, yet it catches up with the tail.
    let tail = numbered_records("filler", 3000).split_off(2950);
    cluster.wait_node_serves_tail(lagging, &tail).await;
    wait_dropped(&cluster, lagging, highest).await;

    eventually(
        "leadership to move to the reset node",
        LEADER_WAIT,
        || async {
            let status = cluster.status().await?;
            if status.leader == Some(lagging) {
                return Ok(());
            }
            client::admin(
                &cluster.client_config(),
                AdminRequest::TransferLeader { id: lagging },
            )
            .await
            .map_err(|error| format!("transfer: {error}"))?;
            Err(format!("leader {:?}", status.leader))
        },
    )
    .await;
    resend_with_more(&cluster, &original).await;
    cluster.shutdown().await;
}
