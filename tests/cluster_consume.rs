//! Consumer corner cases (docs/protocol.md 4.3 and 5.3): a consume resuming
//! on a node whose commit index lags is never sent a frame past that
//! node's commit index; a limit of 0 sends no record and moves no cursor;
//! records removed by retention are announced once and the consumer
//! continues at the log start.
//!
//! Run alone: `cargo test --profile ci --test cluster_consume -- --nocapture`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::process::ServeCluster;
use common::*;
use raftlog::client::{ClientConfig, PublisherOptions};
use raftlog::net::ClientTls;
use raftlog::types::LogIndex;
use raftlog::wire::client::{
    ClientRequest, ClientResponse, ConsumeEnd, ConsumeEndReason, ConsumeFrom, ConsumeRequest,
};
use raftlog::wire::FRAME_BYTES_MAX;

/// Opens a consume stream on `connection`; its frames are read with
/// [`next_frame`].
async fn open_consume(
    connection: &quinn::Connection,
    request: ConsumeRequest,
) -> quinn::RecvStream {
    let (mut send, recv) = within("a stream", Duration::from_secs(20), connection.open_bi())
        .await
        .expect("open a stream");
    let body = ClientRequest::Consume(request).encode().expect("encodable");
    raftlog::net::write_frame(&mut send, body)
        .await
        .expect("write the request");
    let _ = send.finish();
    recv
}

async fn next_frame(recv: &mut quinn::RecvStream) -> ClientResponse {
    let frame = within(
        "the next consume frame",
        Duration::from_secs(20),
        raftlog::net::read_frame(recv, FRAME_BYTES_MAX),
    )
    .await
    .unwrap_or_else(|error| panic!("the stream failed: {error}"))
    .unwrap_or_else(|| panic!("the stream ended without ConsumeEnd"));
    ClientResponse::decode(frame).expect("a well-formed frame")
}

/// Every frame of a consume stream up to its end (`ConsumeEnd` or an error).
async fn consume_raw(
    connection: &quinn::Connection,
    request: ConsumeRequest,
) -> Vec<ClientResponse> {
    let mut recv = open_consume(connection, request).await;
    let mut frames = Vec::new();
    loop {
        let response = next_frame(&mut recv).await;
        let last = matches!(
            response,
            ClientResponse::ConsumeEnd(_) | ClientResponse::Error(_)
        );
        frames.push(response);
        if last {
            return frames;
        }
    }
}

async fn connect(cluster: &TestCluster, id: u64) -> quinn::Connection {
    let tls = ClientTls::load(&cluster.tls_dir).expect("client TLS");
    within(
        "connecting to a node",
        Duration::from_secs(20),
        raftlog::net::connect_client(&cluster.addr(id).to_string(), &tls),
    )
    .await
    .expect("connect to the node")
}

/// The invariant of docs/protocol.md 4.3 for every Records frame of a
/// stream asked `from`: it starts at the cursor (never ahead of it), ends
/// at most one past the node's commit index, and its records lie inside it.
fn assert_batch_valid(frame: &ClientResponse, cursor: LogIndex) -> Option<LogIndex> {
    let ClientResponse::Records(batch) = frame else {
        return None;
    };
    assert_eq!(batch.start_index, cursor, "a batch jumped ahead: {frame:?}");
    assert!(
        batch.start_index <= batch.next_index && batch.next_index <= batch.commit_index + 1,
        "a batch past the node's commit index: start {} next {} commit {}",
        batch.start_index,
        batch.next_index,
        batch.commit_index
    );
    for (index, _) in &batch.records {
        assert!((batch.start_index..batch.next_index).contains(index));
    }
    Some(batch.next_index)
}

/// A consumer resuming at index N on a follower that has not heard the
/// commit of N yet (it was down while N was published and has just
/// restarted): without `follow` the stream ends at once at N; with `follow`
/// nothing goes out until the follower's commit index reaches N - 1, and no
/// frame ever starts past the cursor or ends past the node's commit index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_resuming_on_a_lagging_follower_waits_and_never_jumps_ahead() {
    let mut cluster = TestCluster::start(3).await;
    let follower = cluster.follower().await;
    cluster.stop(follower).await;
    let input = numbered_records("lagging", 300);
    let indexes = within(
        "publishing while the follower is down",
        CATCH_UP_WAIT,
        publish_all(
            cluster.running_client_config(),
            PublisherOptions::default(),
            &input,
            50,
        ),
    )
    .await
    .expect("publish");
    let resume_at = *indexes.last().expect("indexes");
    cluster.restart(follower).await;
    let connection = connect(&cluster, follower).await;

    // Asked at once: the restarted follower starts with commit index
    // (log start - 1), far below `resume_at`.
    let frames = consume_raw(
        &connection,
        ConsumeRequest {
            from: ConsumeFrom::Index(resume_at),
            follow: false,
            limit: None,
        },
    )
    .await;
    let mut cursor = resume_at;
    for frame in &frames {
        if let Some(next) = assert_batch_valid(frame, cursor) {
            cursor = next;
        }
    }
    match frames.last() {
        Some(ClientResponse::ConsumeEnd(ConsumeEnd {
            reason: ConsumeEndReason::CommitIndexReached,
            next_index,
        })) => assert!(
            *next_index == resume_at || *next_index == resume_at + 1,
            "ends at its own cursor or after the one record: {frames:?}"
        ),
        other => panic!("no ConsumeEnd: {other:?} in {frames:?}"),
    }

    // Following: frames are valid from the first on, and record N arrives.
    let mut recv = open_consume(
        &connection,
        ConsumeRequest {
            from: ConsumeFrom::Index(resume_at),
            follow: true,
            limit: None,
        },
    )
    .await;
    let mut cursor = resume_at;
    let got = loop {
        let frame = next_frame(&mut recv).await;
        let next = assert_batch_valid(&frame, cursor)
            .unwrap_or_else(|| panic!("a following stream sent {frame:?}"));
        if let ClientResponse::Records(batch) = &frame {
            if let Some((index, data)) = batch.records.first() {
                break (*index, data.clone());
            }
        }
        cursor = next;
    };
    assert_eq!(got, (resume_at, input[input.len() - 1].clone()));
    connection.close(0u32.into(), b"done");
    cluster.shutdown().await;
}

/// A limit of 0 asks for no record: the stream ends at once at the cursor
/// asked for, with no batch, so a consumer continuing from its `next_index`
/// skips nothing (a node read a batch, sent none of its records and ended
/// past them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_with_a_limit_of_zero_sends_no_record_and_ends_at_its_cursor() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let input = numbered_records("limit-zero", 40);
    let indexes = publish_all(
        cluster.client_config(),
        PublisherOptions::default(),
        &input,
        10,
    )
    .await
    .expect("publish");
    let connection = connect(&cluster, leader).await;
    for follow in [false, true] {
        for cursor in [1, indexes[10]] {
            let frames = consume_raw(
                &connection,
                ConsumeRequest {
                    from: ConsumeFrom::Index(cursor),
                    follow,
                    limit: Some(0),
                },
            )
            .await;
            assert_eq!(
                frames,
                vec![ClientResponse::ConsumeEnd(ConsumeEnd {
                    reason: ConsumeEndReason::LimitReached,
                    next_index: cursor,
                })],
                "limit 0 from {cursor}, follow {follow}"
            );
        }
    }
    // A limit of 1 from there gets exactly the next record.
    let frames = consume_raw(
        &connection,
        ConsumeRequest {
            from: ConsumeFrom::Index(indexes[10]),
            follow: false,
            limit: Some(1),
        },
    )
    .await;
    let records: Vec<(LogIndex, Bytes)> = frames
        .iter()
        .filter_map(|frame| match frame {
            ClientResponse::Records(batch) => Some(batch.records.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(records, vec![(indexes[10], input[10].clone())]);
    assert_eq!(
        frames.last(),
        Some(&ClientResponse::ConsumeEnd(ConsumeEnd {
            reason: ConsumeEndReason::LimitReached,
            next_index: indexes[10] + 1,
        }))
    );
    connection.close(0u32.into(), b"done");
    cluster.shutdown().await;
}

fn serve_client_config(cluster: &ServeCluster) -> ClientConfig {
    ClientConfig {
        cluster: cluster.addrs.iter().map(|(_, addr)| addr.clone()).collect(),
        tls_dir: cluster.tls_dir.clone(),
        request_timeout: CLIENT_REQUEST_TIMEOUT,
    }
}

/// Retention dropped the records a consumer asks for: `raftlog consume`
/// says once on stderr where it continues, prints every record from there
/// on, and exits 0; `--limit 0` prints nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_says_once_that_retention_removed_records_and_continues() {
    let mut cluster = ServeCluster::start(
        3,
        &["--segment-bytes", "65536", "--retention-bytes", "131072"],
    );
    let status = cluster.wait_leader(LEADER_WAIT);
    let leader = status["leader"].as_u64().expect("leader id");
    let input: Vec<Bytes> = (0..1500)
        .map(|n| Bytes::from(format!("retained-{n:06}-{}", "x".repeat(400))))
        .collect();
    let indexes = within(
        "publishing 600 KiB",
        CATCH_UP_WAIT,
        publish_all(
            serve_client_config(&cluster),
            PublisherOptions::default(),
            &input,
            100,
        ),
    )
    .await
    .expect("publish");
    let leader_addr = cluster
        .addrs
        .iter()
        .find(|(id, _)| *id == leader)
        .expect("leader addr")
        .1
        .clone();
    let tls_dir = cluster.tls_dir.display().to_string();
    let consume = |args: &[&str]| {
        let mut all = vec!["consume"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--cluster", &leader_addr, "--tls-dir", &tls_dir]);
        process::run(&all, b"", Duration::from_secs(60))
    };
    // The leader's own log start (status is answered by the leader).
    let log_start = eventually(
        "retention to drop the first segments",
        CATCH_UP_WAIT,
        || async {
            let status = cluster.client(
                &["status", "--output", "json", "--timeout-ms", "2000"],
                b"",
                Duration::from_secs(30),
            );
            let json: serde_json::Value = serde_json::from_str(&status.stdout)
                .map_err(|error| format!("{error}: {}{}", status.stdout, status.stderr))?;
            match (json["leader"].as_u64(), json["log_start"].as_u64()) {
                (Some(id), Some(start)) if id == leader && start > 2 => Ok(start),
                other => Err(format!("leader and log start {other:?}")),
            }
        },
    )
    .await;

    let limit_zero = consume(&["--from", "1", "--limit", "0"]);
    limit_zero.assert_success("consume --limit 0");
    assert_eq!(limit_zero.stdout, "", "--limit 0 prints nothing");

    let consumed = consume(&["--from", "1", "--output", "json"]);
    consumed.assert_success("consume --from 1");
    let notes: Vec<&str> = consumed
        .stderr
        .lines()
        .filter(|line| line.contains("removed by retention"))
        .collect();
    assert_eq!(
        notes.len(),
        1,
        "one note on stderr: {}\nstdout starts: {:?}",
        consumed.stderr,
        consumed.stdout.lines().next()
    );
    let printed: Vec<(LogIndex, String)> = consumed
        .stdout
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("json line");
            (
                value["index"].as_u64().expect("index"),
                value["data"].as_str().expect("text data").to_string(),
            )
        })
        .collect();
    let continued_at: LogIndex = notes[0]
        .strip_prefix("raftlog: records below ")
        .and_then(|rest| rest.split_once(" were removed by retention; continuing at "))
        .filter(|(below, at)| below == at)
        .and_then(|(below, _)| below.parse().ok())
        .unwrap_or_else(|| panic!("the note says where it continues: {}", notes[0]));
    assert!(
        continued_at >= log_start,
        "continued at {continued_at}, the log started at {log_start} already"
    );
    let first = continued_at;
    let expected: Vec<(LogIndex, String)> = indexes
        .iter()
        .zip(&input)
        .filter(|(index, _)| **index >= first)
        .map(|(index, data)| (*index, String::from_utf8_lossy(data).into_owned()))
        .collect();
    assert_eq!(printed, expected, "every record from the log start on");
    cluster.stop_all();
}

/// Tiny segments and a retention budget of four of them: retention drops a
/// segment about every second while records flow.
fn tiny_segments(config: &mut raftlog::server::config::ServerConfig) {
    config.segment_bytes = 4096;
    config.retention_bytes = Some(4 * 4096);
}

/// Retention racing reads: while a publisher keeps the log moving and
/// retention drops the oldest segment every second, consumers keep asking
/// from index 1, i.e. from wherever the log starts. A read planned from a
/// commit snapshot taken just before retention moved the log start used to
/// end the stream with `Internal` ("index N is outside the log"); every
/// stream must instead be served from the log start, with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_racing_reads_never_ends_a_consume_with_an_error() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let cluster = TestCluster::start_with(3, tiny_segments).await;
    let leader = cluster.leader().await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let config = cluster.client_config();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut publisher =
                raftlog::client::Publisher::connect(config, PublisherOptions::default())
                    .await
                    .map_err(|error| error.to_string())?;
            let mut batches = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let batch: Vec<Bytes> = (0..20)
                    .map(|n| Bytes::from(format!("race-{batches:06}-{n:02}-{}", "r".repeat(180))))
                    .collect();
                let ticket = publisher.send(batch).await.map_err(|e| e.to_string())?;
                ticket.await.map_err(|e| e.to_string())?;
                batches += 1;
            }
            publisher.close().await;
            Ok::<u64, String>(batches)
        })
    };
    let mut readers = Vec::new();
    for _ in 0..4 {
        let connection = connect(&cluster, leader).await;
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut streams = 0u64;
            let mut highest_start = 0;
            while !stop.load(Ordering::SeqCst) {
                let frames = consume_raw(
                    &connection,
                    ConsumeRequest {
                        from: ConsumeFrom::Index(1),
                        follow: false,
                        limit: None,
                    },
                )
                .await;
                for frame in &frames {
                    match frame {
                        ClientResponse::Records(batch) => {
                            highest_start = highest_start.max(batch.start_index);
                        }
                        ClientResponse::ConsumeEnd(_) => {}
                        other => return Err(format!("stream {streams} answered {other:?}")),
                    }
                }
                streams += 1;
            }
            connection.close(0u32.into(), b"done");
            Ok::<(u64, LogIndex), String>((streams, highest_start))
        }));
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.store(true, Ordering::SeqCst);
    let batches = within("the publisher to stop", CATCH_UP_WAIT, publisher)
        .await
        .expect("publisher task")
        .expect("publishing");
    let mut streams = 0;
    let mut highest_start = 0;
    for reader in readers {
        let (count, start) = within("a reader to stop", CATCH_UP_WAIT, reader)
            .await
            .expect("reader task")
            .unwrap_or_else(|error| panic!("a consume failed: {error}"));
        streams += count;
        highest_start = highest_start.max(start);
    }
    // Not vacuous: retention moved the log start many times under the reads.
    assert!(batches > 50, "only {batches} batches published");
    assert!(streams > 100, "only {streams} consume streams");
    assert!(
        highest_start > 200,
        "the log start only reached {highest_start}"
    );
    cluster.shutdown().await;
}
