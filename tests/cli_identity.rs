//! Identities (issue 12), multi-process: real `raftlog serve` processes on
//! free ports of 127.0.0.1 driven through the CLI.
//!
//! - admin requests are served only to the admin role: a directory holding
//!   only `ca.pem`, and a client identity, are refused every admin request
//!   with `error: permission denied: ...`, and the membership is unchanged;
//! - publish, consume and status need a client certificate unless the nodes
//!   run with `--allow-anonymous-clients`, which never opens admin requests;
//! - a node certificate for an id outside the configuration cannot vote,
//!   campaign or depose the leader;
//! - `certs add-node` + `admin add-node` grow a running cluster to five nodes
//!   with the CLI alone (the README's steps);
//! - SIGHUP with a rotated node certificate keeps the cluster working.
//!
//! Every process is stopped by a guard; every wait is bounded.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{run, ChildGuard, Finished, ServeCluster, RAFTLOG};
use common::{free_udp_ports, LEADER_WAIT};

const RUN_WAIT: Duration = Duration::from_secs(60);

/// A directory holding copies of `files` from the cluster's TLS directory.
fn dir_with(cluster: &ServeCluster, name: &str, files: &[&str]) -> PathBuf {
    let dir = cluster.dir.path().join(name);
    std::fs::create_dir_all(&dir).expect("create dir");
    for file in files {
        std::fs::copy(cluster.tls_dir.join(file), dir.join(file)).expect("copy TLS file");
    }
    dir
}

/// `raftlog ARGS --cluster <all nodes> --tls-dir DIR`.
fn client_with(cluster: &ServeCluster, tls_dir: &Path, args: &[&str], stdin: &[u8]) -> Finished {
    let mut all: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    all.extend([
        "--cluster".to_string(),
        cluster.cluster_arg(),
        "--tls-dir".to_string(),
        tls_dir.display().to_string(),
        "--timeout-ms".to_string(),
        "5000".to_string(),
    ]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run(&all, stdin, RUN_WAIT)
}

/// Consumes from the start of the node at `addr` until it prints exactly
/// `expected` (within 30 s).
fn wait_served(addr: &str, tls: &str, expected: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let args = [
            "consume",
            "--from",
            "start",
            "--cluster",
            addr,
            "--tls-dir",
            tls,
        ];
        let consumed = run(&args, b"", RUN_WAIT);
        if consumed.status.success() && consumed.stdout == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} does not serve every record: {consumed:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_permission_denied(finished: &Finished, what: &str) {
    let line = finished.assert_clean_failure(what);
    assert!(
        line.starts_with("error: permission denied: "),
        "{what}: expected a permission-denied error, got {line:?}"
    );
}

/// The members of a status JSON as `(id, role)`, learners marked.
fn members(status: &serde_json::Value) -> BTreeSet<(u64, bool)> {
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| {
            (
                node["id"].as_u64().expect("id"),
                node["role"].as_str() == Some("learner"),
            )
        })
        .collect()
}

fn leader_of(status: &serde_json::Value) -> u64 {
    status["leader"].as_u64().expect("a leader")
}

/// Polls `status` (with the cluster's own identities) until `check` accepts it.
fn wait_status(
    cluster: &ServeCluster,
    what: &str,
    timeout: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let status = cluster.client(
            &["status", "--output", "json", "--timeout-ms", "2000"],
            b"",
            RUN_WAIT,
        );
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&status.stdout) {
            if status.status.success() && check(&json) {
                return json;
            }
        }
        last = format!("{}{}", status.stdout, status.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}; last status: {last}");
}

/// Issue 12: a CA-only directory and a client identity are refused every
/// admin request (add-node, remove-node of a follower and of the leader,
/// transfer-leader) with `error: permission denied` and a non-zero exit,
/// and afterwards the membership and the leader are what they were; the
/// admin identity's transfer then works.
#[test]
fn ca_only_and_client_identities_are_refused_every_admin_request_and_nothing_changes() {
    let mut cluster = ServeCluster::start(3, &[]);
    let before = cluster.wait_leader(LEADER_WAIT);
    let leader = leader_of(&before);
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let ca_only = dir_with(&cluster, "ca-only", &["ca.pem"]);
    let alice = cluster.dir.path().join("alice");
    let tls = cluster.tls_dir.display().to_string();
    run(
        &[
            "certs",
            "client",
            "--ca-dir",
            &tls,
            "--name",
            "alice",
            "--out",
            &alice.display().to_string(),
        ],
        b"",
        RUN_WAIT,
    )
    .assert_success("certs client");
    assert!(alice.join("client.pem").exists() && !alice.join("admin.pem").exists());

    let requests: Vec<Vec<String>> = vec![
        vec!["admin".into(), "add-node".into(), "9=127.0.0.1:9".into()],
        vec!["admin".into(), "remove-node".into(), follower.to_string()],
        vec!["admin".into(), "remove-node".into(), leader.to_string()],
        vec![
            "admin".into(),
            "transfer-leader".into(),
            follower.to_string(),
        ],
    ];
    for (caller, dir) in [("CA only", &ca_only), ("client identity", &alice)] {
        for request in &requests {
            let args: Vec<&str> = request.iter().map(String::as_str).collect();
            let finished = client_with(&cluster, dir, &args, b"");
            assert_permission_denied(&finished, &format!("{caller}: {request:?}"));
        }
    }
    let after = wait_status(&cluster, "a leader", LEADER_WAIT, |status| {
        status["leader"].is_u64()
    });
    assert_eq!(
        members(&after),
        members(&before),
        "membership changed: {after}"
    );
    assert_eq!(leader_of(&after), leader, "leadership moved: {after}");

    // The admin identity of the same directory is served.
    let transfer = cluster.client(
        &["admin", "transfer-leader", &follower.to_string()],
        b"",
        RUN_WAIT,
    );
    transfer.assert_success("admin transfer-leader with admin.pem");
    wait_status(&cluster, "the transfer", LEADER_WAIT, |status| {
        status["leader"].as_u64() == Some(follower)
    });
    cluster.stop_all();
}

/// Issue 12: by default publish, consume and status without a client
/// certificate are refused with `permission denied`; with
/// `--allow-anonymous-clients` they are served, and admin requests still
/// are not.
#[test]
fn anonymous_clients_are_refused_by_default_and_admitted_with_allow_anonymous_clients() {
    let mut cluster = ServeCluster::start(3, &[]);
    cluster.wait_leader(LEADER_WAIT);
    let ca_only = dir_with(&cluster, "ca-only", &["ca.pem"]);
    let publish = client_with(&cluster, &ca_only, &["publish"], b"a\nb\n");
    assert_permission_denied(&publish, "anonymous publish");
    let consume = client_with(&cluster, &ca_only, &["consume", "--from", "start"], b"");
    assert_permission_denied(&consume, "anonymous consume");
    let status = client_with(&cluster, &ca_only, &["status"], b"");
    assert_permission_denied(&status, "anonymous status");
    // Nothing was appended on the anonymous caller's behalf.
    let consumed = cluster.client(&["consume", "--from", "start"], b"", RUN_WAIT);
    consumed.assert_success("consume with client.pem");
    assert_eq!(consumed.stdout, "", "records appended anonymously");
    cluster.stop_all();

    let mut open = ServeCluster::start(3, &["--allow-anonymous-clients"]);
    open.wait_leader(LEADER_WAIT);
    let ca_only = dir_with(&open, "ca-only", &["ca.pem"]);
    let publish = client_with(&open, &ca_only, &["publish"], b"a\nb\n");
    publish.assert_success("anonymous publish with --allow-anonymous-clients");
    assert_eq!(publish.stdout_lines().len(), 2, "{}", publish.stdout);
    // Follow until both records arrive: a node that has not yet heard the
    // new commit index would otherwise rightly answer with nothing.
    let consume = client_with(
        &open,
        &ca_only,
        &["consume", "--from", "start", "--follow", "--limit", "2"],
        b"",
    );
    consume.assert_success("anonymous consume with --allow-anonymous-clients");
    assert_eq!(consume.stdout, "a\nb\n");
    let status = client_with(&open, &ca_only, &["status", "--output", "json"], b"");
    status.assert_success("anonymous status with --allow-anonymous-clients");
    let transfer = client_with(&open, &ca_only, &["admin", "transfer-leader", "1"], b"");
    assert_permission_denied(&transfer, "anonymous admin with --allow-anonymous-clients");
    open.stop_all();
}

/// Issue 12: a process holding a valid node certificate (issued by the
/// cluster CA with `certs add-node`) for id 9, which was never added, sends
/// every node higher-term RequestVotes carrying the leadership-transfer
/// flag, AppendEntries and TimeoutNow. None reaches the consensus core: the
/// leader and the term stay what they were, each node logs the stranger
/// once, and the cluster keeps committing.
#[test]
fn a_node_certificate_outside_the_membership_cannot_disrupt_a_healthy_leader() {
    use raftlog::net::{Endpoint, Lane, NodeTls, PeerLinks, PeerLinksConfig};
    use raftlog::raft::{AppendEntries, Message, RequestVote, TimeoutNow};

    // Longer election timeouts than the default, so a loaded machine does
    // not elect on its own while the test watches the term.
    let mut cluster = ServeCluster::start(
        3,
        &[
            "--require-client-cert",
            "--election-timeout-ms",
            "1000..2000",
            "--heartbeat-ms",
            "100",
        ],
    );
    let before = cluster.wait_leader(LEADER_WAIT);
    let leader = leader_of(&before);
    let term = before["term"].as_u64().expect("term");

    let rogue_dir = cluster.dir.path().join("node-9-tls");
    run(
        &[
            "certs",
            "add-node",
            "--ca-dir",
            &cluster.tls_dir.display().to_string(),
            "--node",
            "9=127.0.0.1",
            "--out",
            &rogue_dir.display().to_string(),
        ],
        b"",
        RUN_WAIT,
    )
    .assert_success("certs add-node 9");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let tls = NodeTls::load(&rogue_dir, 9, false).expect("node 9 TLS");
    let (endpoint, links) = runtime.block_on(async {
        let (endpoint, mut incoming) =
            Endpoint::bind("127.0.0.1:0".parse().expect("addr"), &tls).expect("bind rogue");
        // Whatever the nodes open back to it is taken and dropped.
        tokio::spawn(async move { while incoming.next().await.is_some() {} });
        let (links, _inbound) =
            PeerLinks::new(endpoint.clone(), PeerLinksConfig::default()).expect("links");
        links.set_peers(
            cluster
                .addrs
                .iter()
                .map(|(id, addr)| (*id, addr.parse().expect("socket addr")))
                .collect(),
        );
        (endpoint, links)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut round = 0u64;
    loop {
        let high = term + 10 + round;
        let messages = [
            Message::RequestVote(RequestVote {
                term: high,
                last_log_index: 1 << 40,
                last_log_term: high,
                pre_vote: false,
                leadership_transfer: true,
            }),
            Message::RequestVote(RequestVote {
                term: high,
                last_log_index: 1 << 40,
                last_log_term: high,
                pre_vote: true,
                leadership_transfer: true,
            }),
            Message::AppendEntries(AppendEntries {
                term: high,
                prev_log_index: 0,
                prev_log_term: 0,
                entries: Vec::new(),
                leader_commit: 0,
            }),
            Message::TimeoutNow(TimeoutNow { term: high }),
        ];
        for (id, _) in &cluster.addrs {
            for message in &messages {
                let frame = raftlog::wire::peer::encode_message(message);
                let _ = links.send(*id, Lane::Control, frame);
            }
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(50));
        let everyone_saw_it = (1..=3).all(|id| {
            cluster
                .log(id)
                .contains("not a member of the current configuration")
        });
        if (everyone_saw_it && round >= 40) || Instant::now() >= deadline {
            break;
        }
    }
    // Let anything that did get through take effect before looking.
    std::thread::sleep(Duration::from_secs(1));
    let after = wait_status(&cluster, "a leader", LEADER_WAIT, |status| {
        status["leader"].is_u64()
    });
    assert_eq!(leader_of(&after), leader, "the leader was deposed: {after}");
    assert_eq!(
        after["term"].as_u64(),
        Some(term),
        "the term moved: {after}"
    );
    assert_eq!(members(&after), members(&before), "membership: {after}");
    for id in 1..=3 {
        let log = cluster.log(id);
        assert!(
            links.connected().get(&id) == Some(&true) || log.contains("peer connected"),
            "the rogue never reached node {id}"
        );
        assert_eq!(
            log.matches("not a member of the current configuration")
                .count(),
            1,
            "node {id} should log the stranger exactly once:\n{log}"
        );
    }
    let published = cluster.client(&["publish"], b"still\ncommitting\n", RUN_WAIT);
    published.assert_success("publish after the rogue");
    assert_eq!(published.stdout_lines().len(), 2);

    links.shutdown();
    endpoint.close();
    drop(runtime);
    cluster.stop_all();
}

/// A `raftlog serve` process outside [`ServeCluster`], logging to `log`.
fn spawn_serve(args: &[String], log: &Path) -> ChildGuard {
    let mut command = Command::new(RAFTLOG);
    command.arg("serve").args(args);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("node log file");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    ChildGuard::spawn(command)
}

/// Issue 12 / README "Adding a node": with the CLI only, `certs add-node
/// --out DIR` writes a bundle holding `ca.pem` and that node's pair and
/// nothing else, the node starts with `--join` and that bundle, and `admin
/// add-node` makes it a voter; done twice, the cluster has five voters, and
/// the fifth serves what was published.
#[test]
fn certs_add_node_and_admin_add_node_grow_a_running_cluster_to_five_nodes() {
    let mut cluster = ServeCluster::start(3, &[]);
    cluster.wait_leader(LEADER_WAIT);
    let tls = cluster.tls_dir.display().to_string();
    let first_addr = cluster.addrs[0].1.clone();
    let ports = free_udp_ports(2);
    let mut joined = Vec::new();
    for (id, port) in [(4u64, ports[0]), (5u64, ports[1])] {
        let bundle = cluster.dir.path().join(format!("node-{id}-tls"));
        let bundle_arg = bundle.display().to_string();
        run(
            &[
                "certs",
                "add-node",
                "--ca-dir",
                &tls,
                "--node",
                &format!("{id}=127.0.0.1"),
                "--out",
                &bundle_arg,
            ],
            b"",
            RUN_WAIT,
        )
        .assert_success("certs add-node");
        let files: BTreeSet<String> = std::fs::read_dir(&bundle)
            .expect("bundle dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let expected: BTreeSet<String> = [
            "ca.pem",
            &format!("node-{id}.pem"),
            &format!("node-{id}.key"),
        ]
        .iter()
        .map(|name| name.to_string())
        .collect();
        assert_eq!(files, expected, "the bundle holds exactly the node's files");

        let addr = format!("127.0.0.1:{port}");
        let args: Vec<String> = [
            "--id",
            &id.to_string(),
            "--listen",
            &addr,
            "--data-dir",
            &cluster.data_dir(id).display().to_string(),
            "--tls-dir",
            &bundle_arg,
            "--peer",
            &format!("1={first_addr}"),
            "--join",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        joined.push((id, spawn_serve(&args, &cluster.log_path(id))));
        let added = run(
            &[
                "admin",
                "add-node",
                &format!("{id}={addr}"),
                "--cluster",
                &first_addr,
                "--tls-dir",
                &tls,
            ],
            b"",
            RUN_WAIT,
        );
        added.assert_success(&format!("admin add-node {id}"));
        assert!(
            added.stdout.contains(&format!("{id} {addr} voter")),
            "node {id} is a voter: {}\nnode {id} log:\n{}",
            added.stdout,
            cluster.log(id)
        );
    }
    wait_status(&cluster, "five reachable voters", LEADER_WAIT, |status| {
        let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
        nodes.len() == 5
            && nodes
                .iter()
                .all(|node| node["reachable"] == true && node["role"] != "learner")
    });
    let published = cluster.client(&["publish"], b"x\ny\nz\n", RUN_WAIT);
    published.assert_success("publish to five nodes");
    let fifth = format!("127.0.0.1:{}", ports[1]);
    wait_served(&fifth, &tls, "x\ny\nz\n", "node 5");
    for (id, mut process) in joined {
        let status = process.stop_with(libc::SIGTERM, Duration::from_secs(20));
        assert!(
            status.success(),
            "node {id} exited {status}:\n{}",
            cluster.log(id)
        );
    }
    cluster.stop_all();
}

/// Replaces node `id`'s pair in the cluster's TLS directory with a new one
/// issued by the CA for `host` (via `certs add-node --out`).
fn rotate_node_certificate(cluster: &ServeCluster, id: u64, host: &str, scratch: &str) {
    let out = cluster.dir.path().join(scratch);
    run(
        &[
            "certs",
            "add-node",
            "--ca-dir",
            &cluster.tls_dir.display().to_string(),
            "--node",
            &format!("{id}={host}"),
            "--out",
            &out.display().to_string(),
        ],
        b"",
        RUN_WAIT,
    )
    .assert_success("certs add-node (rotation)");
    for ext in ["pem", "key"] {
        let name = format!("node-{id}.{ext}");
        // Written beside and renamed over, as an operator's deploy would.
        let staged = cluster.tls_dir.join(format!("{name}.new"));
        std::fs::copy(out.join(&name), &staged).expect("stage rotated file");
        std::fs::rename(&staged, cluster.tls_dir.join(&name)).expect("rotate file");
    }
}

fn wait_log(cluster: &ServeCluster, id: u64, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.log(id).matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "node {id} never logged {needle:?}:\n{}",
            cluster.log(id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// The certificate node `addr` presents to a new client connection now.
fn served_certificate(runtime: &tokio::runtime::Runtime, addr: &str, tls_dir: &Path) -> Vec<u8> {
    let tls = raftlog::net::ClientTls::load(tls_dir).expect("client TLS");
    runtime.block_on(async {
        let connection = tokio::time::timeout(
            Duration::from_secs(10),
            raftlog::net::connect_client(addr, &tls),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        let served = raftlog::net::tls::peer_certificate(&connection).expect("a certificate");
        connection.close(0u32.into(), b"done");
        served.to_vec()
    })
}

fn pem_certificate(path: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(path)
        .expect("certificate file")
        .to_vec()
}

/// Issue 12: SIGHUP re-reads the TLS files without a restart. A SIGHUP
/// with a broken `node-1.pem` keeps the certificate in use (and the node
/// logs why); after a new certificate for node 1 is put in place and
/// another SIGHUP, new connections get the new one, a peer that reconnects
/// links up again, every record published before and after is served by
/// node 1, and `raftlog_certificate_expiry_seconds` reports the new
/// certificate's expiry.
#[test]
fn sighup_with_a_rotated_node_certificate_keeps_the_cluster_working() {
    let mut cluster = ServeCluster::prepare(3, &[]);
    let metrics_addr = format!("127.0.0.1:{}", common::free_tcp_port());
    cluster.spawn(1, &["--metrics-listen", &metrics_addr]);
    cluster.spawn(2, &[]);
    cluster.spawn(3, &[]);
    cluster.wait_leader(LEADER_WAIT);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tls = cluster.tls_dir.display().to_string();
    let node_1 = cluster.addrs[0].1.clone();
    let old = pem_certificate(&cluster.tls_dir.join("node-1.pem"));
    assert_eq!(served_certificate(&runtime, &node_1, &cluster.tls_dir), old);
    let before = cluster.client(&["publish"], b"before-1\nbefore-2\n", RUN_WAIT);
    before.assert_success("publish before the rotation");

    // A broken file: the node keeps what it has and says why.
    std::fs::write(cluster.tls_dir.join("node-1.pem"), "not a certificate").expect("break");
    cluster.signal(1, libc::SIGHUP);
    wait_log(&cluster, 1, "keeping the ones in use", 1);
    assert_eq!(
        served_certificate(&runtime, &node_1, &cluster.tls_dir),
        old,
        "a broken file replaced the certificate in use"
    );

    // Certificates carry whole seconds: make the new one's expiry differ.
    std::thread::sleep(Duration::from_millis(1100));
    rotate_node_certificate(&cluster, 1, "127.0.0.1", "rotated");
    let new = pem_certificate(&cluster.tls_dir.join("node-1.pem"));
    assert_ne!(new, old);
    cluster.signal(1, libc::SIGHUP);
    wait_log(&cluster, 1, "reloaded the TLS files", 1);
    assert_eq!(
        served_certificate(&runtime, &node_1, &cluster.tls_dir),
        new,
        "new connections get the rotated certificate"
    );

    // A peer that reconnects after the rotation links up with node 1 again.
    let status = cluster.stop(2, libc::SIGTERM);
    assert!(status.success(), "node 2 exited {status}");
    cluster.spawn(2, &[]);
    let after = cluster.client(&["publish"], b"after-1\nafter-2\n", RUN_WAIT);
    after.assert_success("publish after the rotation");
    wait_status(&cluster, "three reachable nodes", LEADER_WAIT, |status| {
        let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
        nodes.len() == 3 && nodes.iter().all(|node| node["reachable"] == true)
    });
    wait_served(
        &node_1,
        &tls,
        "before-1\nbefore-2\nafter-1\nafter-2\n",
        "node 1",
    );

    let metrics = scrape(&metrics_addr);
    let line = metrics
        .lines()
        .find(|line| line.starts_with("raftlog_certificate_expiry_seconds{cert=\"node\"}"))
        .unwrap_or_else(|| panic!("no node certificate expiry in:\n{metrics}"));
    let seconds: i64 = line
        .rsplit(' ')
        .next()
        .and_then(|value| value.parse().ok())
        .expect("a number");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let new_not_after = raftlog::net::certs::not_after_unix(&new).expect("not after");
    let old_not_after = raftlog::net::certs::not_after_unix(&old).expect("not after");
    assert!(new_not_after > old_not_after);
    assert!(
        (now + seconds - new_not_after).abs() <= 2,
        "the metric reports the rotated certificate: {line} (now {now}, new notAfter {new_not_after}, old {old_not_after})"
    );
    assert!(metrics.contains("raftlog_certificate_expiry_seconds{cert=\"ca\"}"));
    cluster.stop_all();
}
