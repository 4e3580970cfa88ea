//! Issue 18: how a Consume stream ends (docs/protocol.md 4.1), against an
//! in-process 3-node cluster over raw quinn streams: the client's
//! RESET_STREAM ends it as STOP_SENDING does, a frame after the request is
//! answered InvalidRequest, and an orderly node stop ends a following
//! Consume with ShuttingDown and FIN (it was a bare FIN, or no frame at all).
//! The interop test (tests/interop) checks the same from aioquic.

mod common;

use std::time::Duration;

use common::*;
use raftlog::net::frame::FrameReadError;
use raftlog::net::ClientTls;
use raftlog::wire::client::{
    ClientRequest, ClientResponse, ConsumeFrom, ConsumeRequest, ErrorResponse,
};
use raftlog::wire::FRAME_BYTES_MAX;

const FOLLOW_FROM_START: ConsumeRequest = ConsumeRequest {
    from: ConsumeFrom::Start,
    follow: true,
    limit: None,
};

async fn connect(cluster: &TestCluster, id: u64) -> quinn::Connection {
    let tls = ClientTls::load(&cluster.tls_dir).expect("client TLS");
    within(
        "connecting",
        Duration::from_secs(20),
        raftlog::net::connect_client(&cluster.addr(id).to_string(), &tls),
    )
    .await
    .expect("connect")
}

/// Opens a following Consume (the request sent, FIN only if `finish`) and
/// reads its first batch.
async fn open_consume(
    connection: &quinn::Connection,
    finish: bool,
) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, mut recv) = connection.open_bi().await.expect("open a stream");
    let body = ClientRequest::Consume(FOLLOW_FROM_START)
        .encode()
        .expect("encodable");
    raftlog::net::write_frame(&mut send, body)
        .await
        .expect("write the request");
    if finish {
        send.finish().expect("finish");
    }
    let first = next_frame(&mut recv).await.expect("the first batch");
    assert!(
        matches!(first, Some(ClientResponse::Records(_))),
        "{first:?}"
    );
    (send, recv)
}

async fn next_frame(
    recv: &mut quinn::RecvStream,
) -> Result<Option<ClientResponse>, FrameReadError> {
    let frame = within(
        "the next consume frame",
        Duration::from_secs(10),
        raftlog::net::read_frame(recv, FRAME_BYTES_MAX),
    )
    .await?;
    Ok(frame.map(|frame| ClientResponse::decode(frame).expect("a well-formed frame")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_ends_on_reset_stream_and_on_a_frame_after_its_request() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let connection = connect(&cluster, leader).await;

    // RESET_STREAM: the node resets its side with the same code and sends
    // nothing more (it kept streaming before).
    let (mut send, mut recv) = open_consume(&connection, false).await;
    send.reset(quinn::VarInt::from_u32(7)).expect("reset");
    loop {
        match next_frame(&mut recv).await {
            Ok(Some(ClientResponse::Records(_))) => continue,
            Err(FrameReadError::Read(quinn::ReadError::Reset(code))) => {
                assert_eq!(code, quinn::VarInt::from_u32(7));
                break;
            }
            other => panic!("expected the node to reset the stream, got {other:?}"),
        }
    }

    // A frame after the request: InvalidRequest, then FIN.
    let (mut send, mut recv) = open_consume(&connection, false).await;
    raftlog::net::write_frame(
        &mut send,
        ClientRequest::Status.encode().expect("encodable"),
    )
    .await
    .expect("write a second request");
    let answer = next_frame(&mut recv).await.expect("an answer");
    assert!(
        matches!(
            answer,
            Some(ClientResponse::Error(ErrorResponse::InvalidRequest { .. }))
        ),
        "{answer:?}"
    );
    assert!(matches!(next_frame(&mut recv).await, Ok(None)), "then FIN");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_stop_ends_a_following_consume_with_shutting_down() {
    let mut cluster = TestCluster::start(3).await;
    let follower = cluster.follower().await;
    let connection = connect(&cluster, follower).await;
    let (_send, mut recv) = open_consume(&connection, true).await;
    let reader = tokio::spawn(async move {
        let mut frames = Vec::new();
        loop {
            match next_frame(&mut recv).await {
                Ok(Some(ClientResponse::Records(_))) => continue,
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, "FIN".to_string()),
                Err(error) => return (frames, error.to_string()),
            }
        }
    });
    cluster.stop(follower).await;
    let (frames, end) = within("the consume to end", Duration::from_secs(10), reader)
        .await
        .expect("the reader");
    assert_eq!(
        frames,
        vec![ClientResponse::Error(ErrorResponse::ShuttingDown)],
        "ended by {end}"
    );
    assert_eq!(end, "FIN");
    cluster.shutdown().await;
}
