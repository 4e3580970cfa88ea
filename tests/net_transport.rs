//! The transport over real QUIC on 127.0.0.1: certificates, mutual TLS and
//! identity checks, framing, peer links and their recovery.
//!
//! Every wait is bounded by `WAIT`; ports are picked by the OS (port 0).
//! The garbage-datagram test derives its bytes from one seed, printed, and
//! replayable with `RAFTLOG_TEST_SEED=<seed>`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use raftlog::net::certs::{self, CertError};
use raftlog::net::frame::{FramePart, FRAME_PREFIX_BYTES};
use raftlog::net::{
    close_code, connect_client, read_frame, ClientTls, Endpoint, FrameReadError, Incoming, Lane,
    NetError, NodeTls, PeerLinks, PeerLinksConfig, TlsError, ALPN_PEER,
};
use raftlog::types::NodeId;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Upper bound of every wait in these tests; generous for a loaded 2-core CI
/// machine, never reached when things work.
const WAIT: Duration = Duration::from_secs(20);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn write_certs(dir: &Path, node_ids: &[NodeId]) {
    let nodes: Vec<(NodeId, String)> = node_ids
        .iter()
        .map(|id| (*id, "127.0.0.1".to_string()))
        .collect();
    certs::generate(dir, &nodes).expect("generate certificates");
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// One node's transport as the runtime would wire it: the endpoint, the
/// peer links, and a task routing accepted peers to the links and clients
/// to a channel.
struct TestNode {
    endpoint: Endpoint,
    links: Arc<PeerLinks>,
    inbound: raftlog::net::PeerInbound,
    clients: mpsc::Receiver<Incoming>,
    router: tokio::task::JoinHandle<()>,
}

impl TestNode {
    fn start(tls: &NodeTls, listen: SocketAddr, config: PeerLinksConfig) -> TestNode {
        Self::try_start(tls, listen, config).expect("bind endpoint")
    }

    fn try_start(
        tls: &NodeTls,
        listen: SocketAddr,
        config: PeerLinksConfig,
    ) -> Result<TestNode, NetError> {
        let (endpoint, mut incoming) = Endpoint::bind(listen, tls)?;
        let (links, inbound) = PeerLinks::new(endpoint.clone(), config).expect("links");
        let links = Arc::new(links);
        let (client_tx, clients) = mpsc::channel(16);
        let router_links = links.clone();
        let router = tokio::spawn(async move {
            while let Some(accepted) = incoming.next().await {
                match accepted {
                    Incoming::Peer {
                        node_id,
                        connection,
                    } => router_links.accept_inbound(node_id, connection),
                    client @ Incoming::Client { .. } => {
                        let _ = client_tx.send(client).await;
                    }
                }
            }
        });
        Ok(TestNode {
            endpoint,
            links,
            inbound,
            clients,
            router,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("local addr")
    }

    async fn stop(self) {
        self.links.shutdown();
        self.router.abort();
        self.endpoint.close();
        within("endpoint idle", self.endpoint.wait_idle()).await;
    }
}

fn node(dir: &Path, node_id: NodeId) -> TestNode {
    let tls = NodeTls::load(dir, node_id, false).expect("load node TLS");
    TestNode::start(&tls, localhost(0), PeerLinksConfig::default())
}

fn link(a: &TestNode, b_id: NodeId, b: &TestNode) {
    a.links.set_peers(BTreeMap::from([(b_id, b.addr())]));
}

async fn recv_frame(node: &mut TestNode) -> (NodeId, Bytes) {
    within("an inbound frame", node.inbound.recv())
        .await
        .expect("inbound queue open")
}

/// Sends `frame` every 20 ms until `to` receives something (a link dials
/// lazily and drops frames while the remote is unreachable).
async fn send_until_received(
    from: &TestNode,
    to_id: NodeId,
    to: &mut TestNode,
    lane: Lane,
    frame: Bytes,
) -> (NodeId, Bytes) {
    within("a frame through a (re)connecting link", async {
        loop {
            let _ = from.links.send(to_id, lane, frame.clone());
            if let Ok(Some(received)) = timeout(Duration::from_millis(20), to.inbound.recv()).await
            {
                return received;
            }
        }
    })
    .await
}

#[test]
fn certificates_carry_host_and_node_identity_and_keys_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs::generate(
        dir.path(),
        &[(1, "127.0.0.1".into()), (2, "db-2.lan".into())],
    )
    .expect("generate");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "node-1.key", "node-2.key", "client.key"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key} mode {mode:o}");
        }
    }
    let der = |file: &str| {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_file(dir.path().join(file)).expect("pem")
    };
    assert_eq!(
        certs::node_id_of_certificate(&der("node-1.pem")).ok(),
        Some(Some(1))
    );
    assert_eq!(
        certs::node_id_of_certificate(&der("node-2.pem")).ok(),
        Some(Some(2))
    );
    assert_eq!(
        certs::node_id_of_certificate(&der("client.pem")).ok(),
        Some(None)
    );
    let node2_names = certs::dns_names_of_certificate(&der("node-2.pem")).expect("names");
    assert!(
        node2_names.contains(&"db-2.lan".to_string()),
        "{node2_names:?}"
    );
    assert_eq!(
        certs::dns_names_of_certificate(&der("client.pem")).expect("names"),
        vec![certs::CLIENT_IDENTITY_NAME.to_string()]
    );

    // Rerunning must not replace the CA; adding a node reuses it.
    assert!(matches!(
        certs::generate(dir.path(), &[(3, "127.0.0.1".into())]),
        Err(CertError::AlreadyExists { .. })
    ));
    certs::add_node(dir.path(), 3, "127.0.0.1").expect("add node 3");
    assert!(matches!(
        certs::add_node(dir.path(), 3, "127.0.0.1"),
        Err(CertError::AlreadyExists { .. })
    ));
    NodeTls::load(dir.path(), 3, true).expect("node 3 loads with the old CA");
}

#[test]
fn tls_loading_names_the_missing_or_bad_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    match ClientTls::load(dir.path()) {
        Err(TlsError::MissingFile { path }) => assert!(path.ends_with("ca.pem"), "{path:?}"),
        other => panic!("expected MissingFile, got {other:?}"),
    }
    write_certs(dir.path(), &[1, 2]);
    std::fs::write(dir.path().join("client.key"), "not a key").expect("write");
    match ClientTls::load(dir.path()) {
        Err(TlsError::BadPem { path, .. }) => assert!(path.ends_with("client.key"), "{path:?}"),
        other => panic!("expected BadPem, got {other:?}"),
    }
    std::fs::remove_file(dir.path().join("client.key")).expect("remove");
    assert!(matches!(
        ClientTls::load(dir.path()),
        Err(TlsError::IncompleteClientPair { .. })
    ));
    // Node 1's files holding node 2's certificate are refused at load time.
    std::fs::copy(dir.path().join("node-2.pem"), dir.path().join("node-1.pem")).expect("copy");
    match NodeTls::load(dir.path(), 1, false) {
        Err(TlsError::NodeIdentityMismatch {
            expected, found, ..
        }) => assert_eq!((expected, found), (1, Some(2))),
        other => panic!("expected NodeIdentityMismatch, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_frames_both_ways_on_both_lanes() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), &[1, 2]);
    let mut a = node(dir.path(), 1);
    let mut b = node(dir.path(), 2);
    link(&a, 2, &b);
    link(&b, 1, &a);

    for (lane, body) in [(Lane::Control, "vote"), (Lane::Replication, "append")] {
        a.links
            .send(2, lane, Bytes::from(format!("a->{body}")))
            .expect("queue");
        assert_eq!(
            recv_frame(&mut b).await,
            (1, Bytes::from(format!("a->{body}")))
        );
        b.links
            .send(1, lane, Bytes::from(format!("b->{body}")))
            .expect("queue");
        assert_eq!(
            recv_frame(&mut a).await,
            (2, Bytes::from(format!("b->{body}")))
        );
    }
    // Frames of one lane keep their order (as many as one queue holds).
    let frame_count = PeerLinksConfig::default().replication_queue_frames_max as u32;
    for seq in 0..frame_count {
        a.links
            .send(
                2,
                Lane::Replication,
                Bytes::from(seq.to_le_bytes().to_vec()),
            )
            .expect("queue");
    }
    for seq in 0..frame_count {
        assert_eq!(
            recv_frame(&mut b).await.1,
            Bytes::from(seq.to_le_bytes().to_vec())
        );
    }
    let counters = a.endpoint.stats().snapshot();
    assert_eq!(counters.peer_dials_succeeded, 1, "{counters:?}");
    assert_eq!(a.links.connected(), BTreeMap::from([(2, true)]));
    assert_eq!(counters.frame_errors, 0, "{counters:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_frame_overtakes_a_large_replication_frame_in_flight() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), &[1, 2]);
    let a = node(dir.path(), 1);
    let mut b = node(dir.path(), 2);
    link(&a, 2, &b);
    // Bring the connection and both lanes up first.
    a.links
        .send(2, Lane::Control, Bytes::from_static(b"hello"))
        .expect("queue");
    a.links
        .send(2, Lane::Replication, Bytes::from_static(b"hello"))
        .expect("queue");
    recv_frame(&mut b).await;
    recv_frame(&mut b).await;

    let batch_bytes = 24 * 1024 * 1024;
    let batch = Bytes::from(vec![7u8; batch_bytes]);
    a.links
        .send(2, Lane::Replication, batch)
        .expect("queue batch");
    a.links
        .send(2, Lane::Control, Bytes::from_static(b"heartbeat"))
        .expect("queue heartbeat");
    let (_, first) = recv_frame(&mut b).await;
    assert_eq!(
        first,
        Bytes::from_static(b"heartbeat"),
        "control frame waited behind the batch"
    );
    let (_, second) = recv_frame(&mut b).await;
    assert_eq!(second.len(), batch_bytes);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialing_a_node_that_holds_another_ids_certificate_is_refused_and_counted() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), &[1, 2, 3]);
    let mut a = node(dir.path(), 1);
    let mut impostor = node(dir.path(), 3);
    // Node 1 believes node 2 lives where node 3 listens.
    link(&a, 2, &impostor);
    within("a refused dial", async {
        loop {
            let _ = a.links.send(2, Lane::Control, Bytes::from_static(b"vote"));
            if a.endpoint.stats().snapshot().peer_dials_refused_tls >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(impostor.inbound.try_recv().is_err(), "impostor got a frame");
    // Both endpoints still serve the right peer.
    link(&a, 3, &impostor);
    impostor.links.set_peers(BTreeMap::from([(1, a.addr())]));
    let received = send_until_received(
        &a,
        3,
        &mut impostor,
        Lane::Control,
        Bytes::from_static(b"hi"),
    )
    .await;
    assert_eq!(received, (1, Bytes::from_static(b"hi")));
    let received = send_until_received(
        &impostor,
        1,
        &mut a,
        Lane::Control,
        Bytes::from_static(b"ho"),
    )
    .await;
    assert_eq!(received, (3, Bytes::from_static(b"ho")));
    a.stop().await;
    impostor.stop().await;
}

/// Opens a peer stream on `connection` and writes a header claiming
/// `claimed`, then one frame.
async fn send_forged_peer_stream(connection: &quinn::Connection, claimed: NodeId) {
    let mut stream = connection.open_uni().await.expect("open stream");
    let mut header = vec![1u8, 1u8];
    header.extend_from_slice(&claimed.to_le_bytes());
    raftlog::net::write_frame(&mut stream, Bytes::from(header))
        .await
        .expect("write header");
    raftlog::net::write_frame(&mut stream, Bytes::from_static(b"forged vote"))
        .await
        .expect("write frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_another_id_than_its_certificate_is_refused_and_counted() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), &[1, 2, 3]);
    let mut a = node(dir.path(), 1);
    let liar = node(dir.path(), 3);
    let connection = within("dial", liar.endpoint.connect_peer(1, a.addr()))
        .await
        .expect("dial node 1");
    send_forged_peer_stream(&connection, 2).await;
    let reason = within("the refusal", connection.closed()).await;
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, close_code::PEER_ID_MISMATCH)
        }
        other => panic!("expected an application close, got {other}"),
    }
    assert_eq!(a.endpoint.stats().snapshot().peers_refused_id_mismatch, 1);
    assert!(
        a.inbound.try_recv().is_err(),
        "a forged frame reached the runtime"
    );

    // The same certificate claiming its own id is served.
    let connection = within("dial", liar.endpoint.connect_peer(1, a.addr()))
        .await
        .expect("dial node 1");
    send_forged_peer_stream(&connection, 3).await;
    assert_eq!(
        recv_frame(&mut a).await,
        (3, Bytes::from_static(b"forged vote"))
    );
    a.stop().await;
    liar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_protocol_without_a_node_certificate_is_refused_and_counted() {
    use rustls_pki_types::pem::PemObject;
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), &[1]);
    let a = node(dir.path(), 1);

    // A client certificate (valid, CA-signed) speaking the peer ALPN.
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls_pki_types::CertificateDer::pem_file_iter(dir.path().join("ca.pem")).expect("ca.pem")
    {
        roots.add(cert.expect("ca cert")).expect("add root");
    }
    let chain =
        vec![
            rustls_pki_types::CertificateDer::from_pem_file(dir.path().join("client.pem"))
                .expect("client.pem"),
        ];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.path().join("client.key"))
        .expect("client.key");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client auth");
    config.alpn_protocols = vec![ALPN_PEER.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config).expect("quic config");
    let client = quinn::Endpoint::client(localhost(0)).expect("client endpoint");
    let connecting = client
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            a.addr(),
            &certs::node_identity_name(1),
        )
        .expect("connect");
    let connection = within("handshake", connecting).await.expect("handshake");
    match within("the refusal", connection.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, close_code::PEER_NOT_NODE)
        }
        other => panic!("expected an application close, got {other}"),
    }
    assert_eq!(a.endpoint.stats().snapshot().peers_refused_not_node, 1);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_cluster_ca_fails_with_a_certificate_error() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), &[1]);
    let other = tempfile::tempdir().expect("tempdir");
    write_certs(other.path(), &[1]);
    let a = node(dir.path(), 1);
    let foreign = ClientTls::load(other.path()).expect("foreign client TLS");
    let err = within(
        "a refused connect",
        connect_client(&a.addr().to_string(), &foreign),
    )
    .await
    .expect_err("a client trusting another CA must not connect");
    assert!(err.is_tls_refusal(), "{err}");
    let message = err.to_string();
    assert!(message.contains("certificate"), "unclear error: {message}");

    // A client of the right CA still gets in.
    let mut a = a;
    let ours = ClientTls::load(dir.path()).expect("client TLS");
    within("connect", connect_client(&a.addr().to_string(), &ours))
        .await
        .expect("client with the cluster CA connects");
    assert!(matches!(
        within("accept", a.clients.recv()).await,
        Some(Incoming::Client { .. })
    ));
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_required_client_certificates_only_clients_holding_the_pair_get_in() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), &[1]);
    let tls = NodeTls::load(dir.path(), 1, true).expect("node TLS");
    let mut a = TestNode::start(&tls, localhost(0), PeerLinksConfig::default());
    let addr = a.addr().to_string();

    let bare = ClientTls::load_without_client_certificate(dir.path()).expect("ca only");
    assert!(!bare.has_client_certificate());
    // In TLS 1.3 the client may finish its side of the handshake before the
    // server checks its (missing) certificate, so the refusal shows either
    // as a failed connect or as the connection closing with a TLS error.
    match within("connect", connect_client(&addr, &bare)).await {
        Err(err) => assert!(err.is_tls_refusal(), "{err}"),
        Ok(connection) => {
            let reason = within("the refusal", connection.closed()).await;
            assert!(
                matches!(reason, quinn::ConnectionError::ConnectionClosed(_)),
                "{reason}"
            );
        }
    }
    assert!(
        a.clients.try_recv().is_err(),
        "a certificate-less client was accepted"
    );
    // The server counts the failure in its handshake task, which may finish
    // after the client already saw the close.
    within("the counted handshake failure", async {
        while a.endpoint.stats().snapshot().handshakes_failed == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let full = ClientTls::load(dir.path()).expect("client pair");
    assert!(full.has_client_certificate());
    let connection = within("connect", connect_client(&addr, &full))
        .await
        .expect("client with the pair connects");
    match within("accept", a.clients.recv()).await {
        Some(Incoming::Client {
            client_identity: Some(identity),
            connection: server_side,
        }) => {
            assert_eq!(
                identity.dns_names,
                vec![certs::CLIENT_IDENTITY_NAME.to_string()]
            );
            assert_eq!(identity.node_id, None);
            // A request/response round trip over the accepted connection.
            let (mut send, mut recv) = connection.open_bi().await.expect("open bi");
            raftlog::net::write_frame(&mut send, Bytes::from_static(b"status?"))
                .await
                .expect("write");
            let (mut server_send, mut server_recv) = within("accept bi", server_side.accept_bi())
                .await
                .expect("accept bi");
            let request = within("request", read_frame(&mut server_recv, 64))
                .await
                .expect("read request");
            assert_eq!(request, Some(Bytes::from_static(b"status?")));
            raftlog::net::write_frame(&mut server_send, Bytes::from_static(b"ok"))
                .await
                .expect("write response");
            let response = within("response", read_frame(&mut recv, 64))
                .await
                .expect("read response");
            assert_eq!(response, Some(Bytes::from_static(b"ok")));
        }
        other => panic!("expected a client with an identity, got {other:?}"),
    }
    a.stop().await;
}

/// splitmix64: a tiny deterministic generator for test bytes.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_do_not_disturb_the_endpoint() {
    init_tracing();
    let seed: u64 = std::env::var("RAFTLOG_TEST_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0x5EED_0005);
    println!("seed {seed} (replay with RAFTLOG_TEST_SEED={seed})");
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), &[1, 2]);
    let mut a = node(dir.path(), 1);
    let b = node(dir.path(), 2);
    let socket = tokio::net::UdpSocket::bind(localhost(0))
        .await
        .expect("udp");
    let mut state = seed;
    for datagram_index in 0..500 {
        let len = match datagram_index % 4 {
            0 => 1 + (splitmix64(&mut state) % 64) as usize,
            1 => 1200 + (splitmix64(&mut state) % 200) as usize,
            _ => 1 + (splitmix64(&mut state) % 1500) as usize,
        };
        let mut datagram: Vec<u8> = (0..len).map(|_| splitmix64(&mut state) as u8).collect();
        // Half of them look like QUIC long-header Initial packets of version 1.
        if datagram_index % 2 == 0 && datagram.len() > 5 {
            datagram[0] = 0xC0 | (datagram[0] & 0x0F);
            datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        socket
            .send_to(&datagram, a.addr())
            .await
            .expect("send garbage");
    }
    // A fresh client and a fresh peer are still served.
    let client = ClientTls::load(dir.path()).expect("client TLS");
    within("connect", connect_client(&a.addr().to_string(), &client))
        .await
        .unwrap_or_else(|err| panic!("seed {seed}: client refused after garbage: {err}"));
    link(&b, 1, &a);
    let received = send_until_received(
        &b,
        1,
        &mut a,
        Lane::Control,
        Bytes::from_static(b"still here"),
    )
    .await;
    assert_eq!(
        received,
        (2, Bytes::from_static(b"still here")),
        "seed {seed}"
    );
    a.stop().await;
    b.stop().await;
}

/// A client connection to `node` and the node's side of it, for driving
/// raw bytes through `read_frame`.
async fn stream_pair(
    node: &mut TestNode,
    tls: &ClientTls,
) -> (quinn::Connection, quinn::Connection) {
    let client = within("connect", connect_client(&node.addr().to_string(), tls))
        .await
        .expect("connect");
    match within("accept", node.clients.recv()).await {
        Some(Incoming::Client { connection, .. }) => (client, connection),
        other => panic!("expected a client, got {other:?}"),
    }
}

/// Writes `raw` on a fresh stream, finishes it, and returns the server's
/// receive side. A bidirectional stream, as clients use: a client
/// connection is granted no unidirectional ones.
async fn raw_stream(
    client: &quinn::Connection,
    server: &quinn::Connection,
    raw: &[u8],
) -> quinn::RecvStream {
    let (mut send, _) = client.open_bi().await.expect("open");
    send.write_all(raw).await.expect("write");
    send.finish().expect("finish");
    within("accept stream", server.accept_bi())
        .await
        .expect("accept")
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_frame_refuses_oversized_and_truncated_frames_and_sees_a_clean_end() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), &[1]);
    let mut a = node(dir.path(), 1);
    let tls = ClientTls::load(dir.path()).expect("client TLS");
    let (client, server) = stream_pair(&mut a, &tls).await;
    let frame_bytes_max = 16;

    // Two whole frames (one empty), then a clean end.
    let mut raw = Vec::new();
    raw.extend_from_slice(&3u32.to_le_bytes());
    raw.extend_from_slice(b"abc");
    raw.extend_from_slice(&0u32.to_le_bytes());
    let mut recv = raw_stream(&client, &server, &raw).await;
    assert_eq!(
        read_frame(&mut recv, frame_bytes_max).await.expect("frame"),
        Some(Bytes::from_static(b"abc"))
    );
    assert_eq!(
        read_frame(&mut recv, frame_bytes_max).await.expect("frame"),
        Some(Bytes::new())
    );
    assert_eq!(
        read_frame(&mut recv, frame_bytes_max).await.expect("end"),
        None
    );

    // Over the limit: refused from the prefix alone (the body never comes).
    let mut recv = raw_stream(&client, &server, &u32::MAX.to_le_bytes()).await;
    match read_frame(&mut recv, frame_bytes_max).await {
        Err(FrameReadError::TooLarge {
            declared_bytes,
            frame_bytes_max: limit,
        }) => assert_eq!(
            (declared_bytes, limit),
            (u64::from(u32::MAX), frame_bytes_max)
        ),
        other => panic!("expected TooLarge, got {other:?}"),
    }

    // Truncated inside the prefix.
    let mut recv = raw_stream(&client, &server, &[5, 0]).await;
    match read_frame(&mut recv, frame_bytes_max).await {
        Err(FrameReadError::Truncated {
            part: FramePart::Prefix,
            expected_bytes,
            received_bytes,
        }) => assert_eq!((expected_bytes, received_bytes), (FRAME_PREFIX_BYTES, 2)),
        other => panic!("expected a truncated prefix, got {other:?}"),
    }

    // Truncated inside the body.
    let mut raw = 10u32.to_le_bytes().to_vec();
    raw.extend_from_slice(b"abcd");
    let mut recv = raw_stream(&client, &server, &raw).await;
    match read_frame(&mut recv, frame_bytes_max).await {
        Err(FrameReadError::Truncated {
            part: FramePart::Body,
            expected_bytes,
            received_bytes,
        }) => assert_eq!((expected_bytes, received_bytes), (10, 4)),
        other => panic!("expected a truncated body, got {other:?}"),
    }
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_peer_frame_closes_that_connection_and_is_counted() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), &[1, 2]);
    let small = PeerLinksConfig {
        frame_bytes_max: 1024,
        ..PeerLinksConfig::default()
    };
    let tls = NodeTls::load(dir.path(), 1, false).expect("node TLS");
    let mut a = TestNode::start(&tls, localhost(0), small);
    let b = node(dir.path(), 2);
    link(&b, 1, &a);
    b.links
        .send(1, Lane::Replication, Bytes::from(vec![0u8; 4096]))
        .expect("queue");
    within("the frame error", async {
        while a.endpoint.stats().snapshot().frame_errors == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The link recovers with a new connection for frames within the limit.
    let received =
        send_until_received(&b, 1, &mut a, Lane::Control, Bytes::from_static(b"small")).await;
    assert_eq!(received, (2, Bytes::from_static(b"small")));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_link_reconnects_after_the_remote_endpoint_restarts() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), &[1, 2]);
    let a = node(dir.path(), 1);
    let mut b = node(dir.path(), 2);
    let b_addr = b.addr();
    link(&a, 2, &b);
    let received =
        send_until_received(&a, 2, &mut b, Lane::Control, Bytes::from_static(b"before")).await;
    assert_eq!(received, (1, Bytes::from_static(b"before")));

    b.stop().await;
    // Rebind the same port (the OS may need a moment to release it).
    let tls = NodeTls::load(dir.path(), 2, false).expect("node TLS");
    let mut b = within("rebinding the port", async {
        loop {
            match TestNode::try_start(&tls, b_addr, PeerLinksConfig::default()) {
                Ok(node) => return node,
                Err(NetError::Bind { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(other) => panic!("rebinding: {other}"),
            }
        }
    })
    .await;
    let received = send_until_received(
        &a,
        2,
        &mut b,
        Lane::Replication,
        Bytes::from_static(b"after"),
    )
    .await;
    assert_eq!(received, (1, Bytes::from_static(b"after")));
    let counters = a.endpoint.stats().snapshot();
    assert!(counters.peer_dials_succeeded >= 2, "{counters:?}");
    a.stop().await;
    b.stop().await;
}

/// Issue 12: the inbound peer queue is bounded in bytes, not only frames. A
/// receiver whose queue holds 1 KiB and whose runtime does not take frames
/// accepts one 600-byte frame; the next ones wait on their streams (the
/// sender's flow control) instead of queueing, and all arrive in order once
/// the runtime takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_peer_queue_holds_at_most_its_bytes_and_loses_nothing() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_certs(dir.path(), &[1, 2]);
    let a = node(dir.path(), 1);
    let tls = NodeTls::load(dir.path(), 2, false).expect("load node TLS");
    let mut b = TestNode::start(
        &tls,
        localhost(0),
        PeerLinksConfig {
            inbound_queue_bytes_max: 1024,
            frame_bytes_max: 1024,
            ..PeerLinksConfig::default()
        },
    );
    link(&a, 2, &b);
    for seq in 0..10u8 {
        a.links
            .send(2, Lane::Replication, Bytes::from(vec![seq; 600]))
            .expect("queue");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queued = b.endpoint.stats().snapshot().frames_received;
    assert_eq!(queued, 1, "frames queued beyond the byte bound");
    for seq in 0..10u8 {
        assert_eq!(recv_frame(&mut b).await.1, Bytes::from(vec![seq; 600]));
    }
    a.stop().await;
    b.stop().await;
}
