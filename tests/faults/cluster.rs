//! Real `raftlog serve` processes, one per loopback address.
//!
//! Node `id` listens on `127.A.B.(10 + id)`: a /24 of its own per test
//! process (A.B from the pid), so the iptables rules of two suites running
//! at once on one machine never cut each other's nodes apart. Certificates
//! for every slot are written once, up front (`raftlog certs` makes a new
//! CA per call); an id is never reused after its node left the cluster.
//!
//! Dropping the cluster kills (SIGKILL) and reaps every process it started,
//! also when the test panics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use raftlog::client::ClientConfig;

use super::history::NodeId;

pub const RAFTLOG: &str = env!("CARGO_BIN_EXE_raftlog");

/// How long a node gets to exit after SIGTERM (a leader hands over first).
pub const TERMINATE_WAIT: Duration = Duration::from_secs(20);
/// Request timeout of the suite's clients: a dead or paused node is left
/// after this long, so it bounds what availability can measure.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one CLI call (admin, consume).
pub const CLI_WAIT: Duration = Duration::from_secs(45);

pub struct Node {
    pub id: NodeId,
    pub ip: String,
    pub addr: String,
    child: Option<Child>,
    paused: bool,
}

pub struct Cluster {
    /// Removed on drop unless [`Cluster::keep_files`] was called.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    pub tls_dir: PathBuf,
    nodes: BTreeMap<NodeId, Node>,
    flags: Vec<String>,
}

/// The /24 of this test process: `127.A.B`.
fn subnet() -> String {
    let pid = std::process::id();
    // A in 100..=227 keeps clear of 127.0.0.x, where everything else lives.
    format!("127.{}.{}", 100 + (pid >> 8) % 128, pid % 256)
}

impl Cluster {
    /// Certificates and addresses for `slot_count` nodes; starts nothing.
    pub fn prepare(slot_count: u64, flags: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls_dir = dir.path().join("tls");
        let subnet = subnet();
        let mut nodes = BTreeMap::new();
        let mut certs = Command::new(RAFTLOG);
        certs.arg("certs").arg("--out").arg(&tls_dir);
        for id in 1..=slot_count {
            assert!(id + 10 < 255, "at most 244 node slots");
            let ip = format!("{subnet}.{}", 10 + id);
            certs.arg("--node").arg(format!("{id}={ip}"));
            let addr = format!("{ip}:{}", crate::common::free_port_on(&ip));
            nodes.insert(
                id,
                Node {
                    id,
                    ip,
                    addr,
                    child: None,
                    paused: false,
                },
            );
        }
        let output = certs.output().expect("run raftlog certs");
        assert!(
            output.status.success(),
            "raftlog certs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Cluster {
            root: dir.path().to_path_buf(),
            dir: Some(dir),
            tls_dir,
            nodes,
            flags: flags.iter().map(|flag| flag.to_string()).collect(),
        }
    }

    pub fn slot_count(&self) -> u64 {
        self.nodes.len() as u64
    }

    pub fn ip(&self, id: NodeId) -> &str {
        &self.node(id).ip
    }

    pub fn addr(&self, id: NodeId) -> &str {
        &self.node(id).addr
    }

    /// Address to id, for client tasks that outlive a borrow of the cluster.
    pub fn addr_map(&self) -> BTreeMap<String, NodeId> {
        self.nodes
            .values()
            .map(|node| (node.addr.clone(), node.id))
            .collect()
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node slot {id}"))
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node slot {id}"))
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.root.join(format!("node-{id}"))
    }

    pub fn log_path(&self, id: NodeId) -> PathBuf {
        self.root.join(format!("node-{id}.log"))
    }

    /// Keeps every file (node logs, data dirs) after the test, for triage.
    pub fn keep_files(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.root.clone()
    }

    /// The last `lines` lines of node `id`'s stderr.
    pub fn log_tail(&self, id: NodeId, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn is_running(&self, id: NodeId) -> bool {
        self.node(id).child.is_some()
    }

    pub fn is_paused(&self, id: NodeId) -> bool {
        self.node(id).paused
    }

    /// Starts node `id` on its data dir. `peers` are the `--peer` flags: the
    /// initial voters for a bootstrap, some current members for `join`.
    pub fn start(&mut self, id: NodeId, peers: &[NodeId], join: bool) {
        assert!(!self.is_running(id), "node {id} runs already");
        let mut command = Command::new(RAFTLOG);
        command
            .arg("serve")
            .args(["--id", &id.to_string(), "--listen", self.addr(id)])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .arg("--tls-dir")
            .arg(&self.tls_dir);
        for &peer in peers.iter().filter(|&&peer| peer != id) {
            command.args(["--peer", &format!("{peer}={}", self.addr(peer))]);
        }
        if join {
            command.arg("--join");
        }
        command.args(&self.flags);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("node log file");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "raftlog=info".into()),
            );
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start node {id}: {error}"));
        let node = self.node_mut(id);
        node.child = Some(child);
        node.paused = false;
    }

    fn signal(&self, id: NodeId, signal: i32) {
        if let Some(child) = &self.node(id).child {
            // SAFETY: kill(2) only sends a signal; the pid is our child, not
            // yet reaped, so it cannot name another process.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// kill -9 and reap (a stopped process dies of SIGKILL too).
    pub fn kill(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// SIGTERM, then the exit status within [`TERMINATE_WAIT`]; SIGKILL
    /// and `None` if it did not exit in time.
    pub fn terminate(&mut self, id: NodeId) -> Option<ExitStatus> {
        if self.is_paused(id) {
            self.resume(id);
        }
        self.signal(id, libc::SIGTERM);
        let deadline = Instant::now() + TERMINATE_WAIT;
        let node = self.node_mut(id);
        let mut child = node.child.take()?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    pub fn pause(&mut self, id: NodeId) {
        self.signal(id, libc::SIGSTOP);
        self.node_mut(id).paused = true;
    }

    pub fn resume(&mut self, id: NodeId) {
        self.signal(id, libc::SIGCONT);
        self.node_mut(id).paused = false;
    }

    /// Nodes that exited although nobody stopped them, with their status
    /// (they are reaped and count as not running after this).
    pub fn exited(&mut self) -> Vec<(NodeId, ExitStatus)> {
        let mut exited = Vec::new();
        for node in self.nodes.values_mut() {
            if let Some(child) = &mut node.child {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push((node.id, status));
                    node.child = None;
                    node.paused = false;
                }
            }
        }
        exited
    }

    /// A client that knows the nodes `ids`, in that order.
    pub fn client_config(&self, ids: &[NodeId]) -> ClientConfig {
        ClientConfig {
            cluster: ids.iter().map(|&id| self.addr(id).to_string()).collect(),
            tls_dir: self.tls_dir.clone(),
            request_timeout: CLIENT_REQUEST_TIMEOUT,
        }
    }

    /// `--cluster A,B --tls-dir DIR` for the CLI.
    pub fn cli_flags(&self, ids: &[NodeId]) -> Vec<String> {
        let addrs: Vec<&str> = ids.iter().map(|&id| self.addr(id)).collect();
        vec![
            "--cluster".into(),
            addrs.join(","),
            "--tls-dir".into(),
            self.tls_dir.display().to_string(),
        ]
    }

    /// Runs `raftlog args... <cli_flags(ids)>`, bounded by [`CLI_WAIT`];
    /// stdout on success, else why not.
    pub async fn cli(&self, args: &[&str], ids: &[NodeId]) -> Result<String, String> {
        let mut command = tokio::process::Command::new(RAFTLOG);
        command
            .args(args)
            .args(self.cli_flags(ids))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let description = format!("raftlog {}", args.join(" "));
        match tokio::time::timeout(CLI_WAIT, command.output()).await {
            Err(_) => Err(format!("{description}: no answer within {CLI_WAIT:?}")),
            Ok(Err(error)) => Err(format!("{description}: {error}")),
            Ok(Ok(output)) if output.status.success() => {
                Ok(String::from_utf8_lossy(&output.stdout).into_owned())
            }
            Ok(Ok(output)) => Err(format!(
                "{description}: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
