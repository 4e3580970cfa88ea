//! Hostile or mistaken parties against an in-process 3-node cluster: a
//! client trusting another CA, an impostor holding another node's
//! certificate, garbage UDP datagrams, a record over the size limit. Each is
//! refused with a clear error and the cluster keeps serving.
//!
//! The garbage test derives its datagrams from one printed seed; replay with
//! `RAFTLOG_GARBAGE_SEED=<seed> cargo test --profile ci --test cluster_bad_clients`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use raftlog::client::{self, ClientError, Publisher, PublisherOptions};
use raftlog::net::{ClientTls, Endpoint, NodeTls};
use raftlog::types::{LogIndex, ProducerSeq};
use raftlog::wire::client::{
    AppendRequest, ClientRequest, ClientResponse, ConsumeEnd, ConsumeEndReason, ConsumeFrom,
    ConsumeRequest, ErrorResponse,
};
use raftlog::wire::FRAME_BYTES_MAX;

/// Publishes a few records and checks every node serves them: the cluster
/// is still healthy after whatever the test did to it.
async fn assert_cluster_serves(cluster: &TestCluster, prefix: &str) {
    let input = numbered_records(prefix, 200);
    within(
        "publishing 200 records",
        CATCH_UP_WAIT,
        publish_all(
            cluster.running_client_config(),
            PublisherOptions::default(),
            &input,
            50,
        ),
    )
    .await
    .expect("the cluster keeps taking records");
    for id in cluster.ids() {
        if cluster.is_running(id) {
            cluster.wait_node_serves_tail(id, &input).await;
        }
    }
}

/// Issue 5 / net: a client whose tls-dir holds another cluster's CA cannot
/// connect, and the error says the node's certificate was not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_another_ca_is_refused_with_a_certificate_error() {
    let cluster = TestCluster::start(3).await;
    cluster.leader().await;
    let other = tempfile::tempdir().expect("temp dir");
    raftlog::net::certs::generate(other.path(), &[(1, "127.0.0.1".to_string())])
        .expect("another CA");
    let mut config = cluster.client_config();
    config.tls_dir = other.path().to_path_buf();
    config.request_timeout = Duration::from_secs(2);

    let error = within(
        "a client with another CA to fail",
        Duration::from_secs(20),
        Publisher::connect(config.clone(), PublisherOptions::default()),
    )
    .await
    .err()
    .expect("a client trusting another CA must not connect");
    let message = error.to_string();
    assert!(
        matches!(error, ClientError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(
        message.to_lowercase().contains("certificate"),
        "the error names the certificate problem: {message}"
    );
    let status_error = within(
        "status with another CA to fail",
        Duration::from_secs(20),
        client::status(&config),
    )
    .await
    .expect_err("status with another CA");
    assert!(
        status_error
            .to_string()
            .to_lowercase()
            .contains("certificate"),
        "{status_error}"
    );
    assert_cluster_serves(&cluster, "after-foreign-ca").await;
    cluster.shutdown().await;
}

/// Issue 5 / net: a process holding a valid certificate of node 4 that
/// listens at node 3's address is not taken for node 3: dialing it as node 3
/// fails the TLS handshake, the leader reports node 3 unreachable, and the
/// other two nodes keep committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_presenting_another_nodes_certificate_is_refused() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let victim = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let victim_addr = cluster.addr(victim);
    cluster.kill(victim).await;
    raftlog::net::certs::add_node(&cluster.tls_dir, 4, "127.0.0.1").expect("node 4 certificate");
    let impostor_tls = NodeTls::load(&cluster.tls_dir, 4, false).expect("node 4 TLS");
    let (impostor, mut impostor_incoming) = {
        let deadline = std::time::Instant::now() + START_WAIT;
        loop {
            match Endpoint::bind(victim_addr, &impostor_tls) {
                Ok(bound) => break bound,
                Err(error) if std::time::Instant::now() < deadline => {
                    tracing_free_note(&format!("impostor bind: {error}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("cannot bind the impostor at {victim_addr}: {error}"),
            }
        }
    };
    // Whatever the real nodes manage to open to it is drained and dropped.
    let drain = tokio::spawn(async move { while impostor_incoming.next().await.is_some() {} });

    // A peer dialing node `victim` at its address is refused by TLS.
    let prober_tls = NodeTls::load(&cluster.tls_dir, leader, false).expect("prober TLS");
    let (prober, _prober_incoming) =
        Endpoint::bind("127.0.0.1:0".parse().expect("addr"), &prober_tls).expect("prober");
    let refused = within(
        "dialing the impostor",
        Duration::from_secs(20),
        prober.connect_peer(victim, victim_addr),
    )
    .await
    .expect_err("a certificate naming node 4 must not pass as node 3");
    assert!(refused.is_tls_refusal(), "a TLS refusal: {refused}");

    eventually(
        "the leader to report the impersonated node unreachable",
        Duration::from_secs(20),
        || async {
            let status = cluster.status().await?;
            match status.nodes.iter().find(|node| node.id == victim) {
                Some(node) if !node.reachable => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_cluster_serves(&cluster, "with-impostor").await;
    let status = cluster.status().await.expect("status");
    assert!(
        status.nodes.iter().all(|node| node.id != 4),
        "the impostor did not join: {status:?}"
    );

    drain.abort();
    prober.close();
    impostor.close();
    cluster.shutdown().await;
}

/// xorshift64*: a small deterministic generator for the garbage bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Issue 5 / net: random UDP datagrams (some shaped like QUIC long-header
/// packets) sent at every node change nothing: the cluster keeps its leader
/// and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_do_not_disturb_the_cluster() {
    let seed = std::env::var("RAFTLOG_GARBAGE_SEED")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    eprintln!("garbage seed {seed} (replay: RAFTLOG_GARBAGE_SEED={seed})");
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("garbage socket");
    let mut rng = Rng(seed);
    for round in 0..1_500 {
        for id in cluster.ids() {
            let length = 1 + (rng.next() % 1_400) as usize;
            let mut datagram: Vec<u8> = (0..length).map(|_| rng.next() as u8).collect();
            if round % 3 == 0 && length >= 5 {
                // A QUIC v1 long header, so the parser gets past the first byte.
                datagram[0] = 0xc0 | (datagram[0] & 0x3f);
                datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
            // A full socket buffer just drops datagrams, which is fine here.
            let _ = socket.send_to(&datagram, cluster.addr(id)).await;
        }
        if round % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_cluster_serves(&cluster, "after-garbage").await;
    let status = cluster.status().await.expect("status");
    assert_eq!(status.leader, Some(leader), "no election was caused");
    assert!(status.nodes.iter().all(|node| node.reachable), "{status:?}");
    for id in cluster.ids() {
        assert!(!cluster.node(id).is_finished(), "node {id} stopped");
    }
    cluster.shutdown().await;
}

/// Issue 5 / CLI contract (`--max-record-bytes`): a record over the node's
/// limit is refused with `RecordTooLarge` naming the limit, a record at the
/// limit is taken, and the cluster keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_size_limit_is_refused_and_the_cluster_keeps_serving() {
    const LIMIT_BYTES: u64 = 4 * 1024;
    let cluster = TestCluster::start_with(3, |config| {
        config.record_bytes_max = LIMIT_BYTES;
    })
    .await;
    cluster.leader().await;

    let mut publisher = Publisher::connect(cluster.client_config(), PublisherOptions::default())
        .await
        .expect("connect");
    let too_large = Bytes::from(vec![b'x'; LIMIT_BYTES as usize + 1]);
    let error = within(
        "the oversized append to be answered",
        Duration::from_secs(20),
        publisher.append(vec![too_large]),
    )
    .await
    .expect_err("a record over the limit must be refused");
    match &error {
        ClientError::Refused(ErrorResponse::RecordTooLarge {
            record_bytes,
            limit_bytes,
        }) => assert_eq!(
            (*record_bytes, *limit_bytes),
            (LIMIT_BYTES + 1, LIMIT_BYTES)
        ),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert!(error.to_string().contains("4096"), "{error}");
    publisher.close().await;

    let at_limit = vec![Bytes::from(vec![b'y'; LIMIT_BYTES as usize])];
    publish_all(
        cluster.client_config(),
        PublisherOptions::default(),
        &at_limit,
        1,
    )
    .await
    .expect("a record at the limit is taken");
    assert_cluster_serves(&cluster, "after-too-large").await;
    cluster.shutdown().await;
}

/// Every frame of a consume stream up to its end (`ConsumeEnd` or an error).
async fn consume_raw(
    connection: &quinn::Connection,
    request: ConsumeRequest,
) -> Vec<ClientResponse> {
    let (mut send, mut recv) = within("a stream", Duration::from_secs(20), connection.open_bi())
        .await
        .expect("open a stream");
    let body = ClientRequest::Consume(request).encode().expect("encodable");
    raftlog::net::write_frame(&mut send, body)
        .await
        .expect("write the request");
    let _ = send.finish();
    let mut frames = Vec::new();
    loop {
        let frame = within(
            "the next consume frame",
            Duration::from_secs(20),
            raftlog::net::read_frame(&mut recv, FRAME_BYTES_MAX),
        )
        .await
        .unwrap_or_else(|error| panic!("{request:?}: the stream failed: {error}"))
        .unwrap_or_else(|| panic!("{request:?}: the stream ended without ConsumeEnd"));
        let response = ClientResponse::decode(frame).expect("a well-formed frame");
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

fn append(producer_id: u64, sequence: u64, count: usize) -> ClientRequest {
    ClientRequest::Append(AppendRequest {
        producer: Some(ProducerSeq {
            producer_id,
            sequence,
        }),
        records: (0..count)
            .map(|i| Bytes::from(format!("p{producer_id}-{i}")))
            .collect(),
    })
}

fn assert_invalid(response: &ClientResponse, mentions: &str) {
    match response {
        ClientResponse::Error(ErrorResponse::InvalidRequest { reason }) => {
            assert!(
                reason.contains(mentions),
                "{reason:?} mentions {mentions:?}"
            )
        }
        other => panic!("expected InvalidRequest ({mentions}), got {other:?}"),
    }
}

/// Issue 11, finding 7: values a client controls at the top of `u64` (a
/// producer sequence whose next one does not exist, a consume index beyond
/// any log, a limit of `u64::MAX`) are refused with `InvalidRequest` or
/// served, never overflowed: the leader keeps its table and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_and_indexes_at_the_top_of_u64_are_refused_and_the_cluster_keeps_serving() {
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

    // Sequences u64::MAX, u64::MAX + 1: the second does not exist.
    assert_invalid(
        &ask_raw(&connection, &append(7, u64::MAX, 2)).await,
        "sequence",
    );
    // The next sequence after u64::MAX does not exist either.
    assert_invalid(
        &ask_raw(&connection, &append(8, u64::MAX, 1)).await,
        "sequence",
    );
    // u64::MAX - 1 is the last usable sequence (its successor fits)...
    let first = ask_raw(&connection, &append(9, u64::MAX - 1, 1)).await;
    let ClientResponse::Appended {
        first_index,
        last_index,
    } = first
    else {
        panic!("the last usable sequence is taken: {first:?}");
    };
    assert_eq!(first_index, last_index);
    // ... a retry of it is a duplicate with its original index ...
    assert_eq!(
        ask_raw(&connection, &append(9, u64::MAX - 1, 1)).await,
        ClientResponse::Appended {
            first_index,
            last_index
        }
    );
    // ... and the producer has no sequence left.
    assert_invalid(
        &ask_raw(&connection, &append(9, u64::MAX, 1)).await,
        "sequence",
    );
    assert_eq!(
        ask_raw(&connection, &append(9, u64::MAX - 1, 1)).await,
        ClientResponse::Appended {
            first_index,
            last_index
        },
        "the table is intact"
    );

    // A consume from an index no log can reach is refused.
    for follow in [false, true] {
        let frames = consume_raw(
            &connection,
            ConsumeRequest {
                from: ConsumeFrom::Index(u64::MAX),
                follow,
                limit: None,
            },
        )
        .await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_invalid(&frames[0], "from_index");
    }
    // A consume from past the commit index (a consumer resuming on a node
    // that lags) ends at once without follow, at the index it asked for.
    let commit_index = cluster.status().await.expect("status").commit_index;
    let ahead = commit_index + 5;
    let frames = consume_raw(
        &connection,
        ConsumeRequest {
            from: ConsumeFrom::Index(ahead),
            follow: false,
            limit: None,
        },
    )
    .await;
    assert_eq!(
        frames,
        vec![ClientResponse::ConsumeEnd(ConsumeEnd {
            reason: ConsumeEndReason::CommitIndexReached,
            next_index: ahead,
        })]
    );
    // A limit of u64::MAX is no limit.
    let frames = consume_raw(
        &connection,
        ConsumeRequest {
            from: ConsumeFrom::Start,
            follow: false,
            limit: Some(u64::MAX),
        },
    )
    .await;
    assert!(
        matches!(
            frames.last(),
            Some(ClientResponse::ConsumeEnd(ConsumeEnd {
                reason: ConsumeEndReason::CommitIndexReached,
                ..
            }))
        ),
        "{frames:?}"
    );
    let served: Vec<LogIndex> = frames
        .iter()
        .filter_map(|frame| match frame {
            ClientResponse::Records(batch) => Some(batch.records.iter().map(|(index, _)| *index)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(served, vec![first_index], "the one record taken");

    connection.close(0u32.into(), b"done");
    assert_cluster_serves(&cluster, "after-top-of-u64").await;
    for id in cluster.ids() {
        assert!(!cluster.node(id).is_finished(), "node {id} stopped");
    }
    cluster.shutdown().await;
}
