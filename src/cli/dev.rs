//! `raftlog dev`: the embedded default, a local cluster in the foreground.
//!
//! Every node runs in this one process (same code as `serve`, one tokio
//! runtime), on 127.0.0.1 ports base-port, base-port+1, ... Certificates and
//! data live under `--dir` and are reused, so a second run resumes the data.
//! The nodes require client certificates as `serve` does by default; the
//! printed commands use `--dir`/tls, which holds the client and the admin
//! identity.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::args::DevArgs;
use crate::server::config::{self as defaults, Fsync, ServerConfig};
use crate::server::{Node, NodeHandle};
use crate::types::NodeId;

/// Largest local cluster `dev` starts (Raft clusters are 3, 5 or 7 nodes).
pub const DEV_NODES_MAX: u64 = 9;

/// A local cluster of `nodes` nodes whose files live under `dir`.
pub struct LocalCluster {
    pub nodes: Vec<NodeHandle>,
    pub tls_dir: PathBuf,
    pub addrs: Vec<String>,
}

/// The configuration of node `id` of a local cluster, as `serve` would build it.
pub fn local_node_config(
    dir: &Path,
    id: NodeId,
    addrs: &BTreeMap<NodeId, String>,
    fsync: Fsync,
) -> anyhow::Result<ServerConfig> {
    let listen_text = addrs
        .get(&id)
        .with_context(|| format!("node {id} has no address"))?;
    Ok(ServerConfig {
        id,
        listen: super::config::resolve_addr("listen", listen_text)?,
        peers: addrs.clone(),
        data_dir: dir.join(format!("node-{id}")),
        tls_dir: dir.join("tls"),
        election_timeout_min: defaults::ELECTION_TIMEOUT_MIN_DEFAULT,
        election_timeout_max: defaults::ELECTION_TIMEOUT_MAX_DEFAULT,
        heartbeat_interval: defaults::HEARTBEAT_INTERVAL_DEFAULT,
        fsync,
        segment_bytes: defaults::SEGMENT_BYTES_DEFAULT,
        retention_bytes: None,
        retention: None,
        allow_anonymous_clients: false,
        join: false,
        record_bytes_max: defaults::RECORD_BYTES_MAX_DEFAULT,
        producer_expiry: defaults::PRODUCER_EXPIRY_DEFAULT,
        metrics_listen: None,
    })
}

/// Writes certificates (first run only) and starts every node.
pub async fn start_local_cluster(
    dir: &Path,
    node_count: u64,
    base_port: u16,
    fsync: Fsync,
) -> anyhow::Result<LocalCluster> {
    if node_count == 0 || node_count > DEV_NODES_MAX {
        anyhow::bail!("--nodes must be between 1 and {DEV_NODES_MAX}, got {node_count}");
    }
    let last_port = u64::from(base_port) + node_count - 1;
    if base_port == 0 || last_port > u64::from(u16::MAX) {
        anyhow::bail!("--base-port {base_port} leaves no room for {node_count} nodes");
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let addrs: BTreeMap<NodeId, String> = (1..=node_count)
        .map(|id| (id, format!("127.0.0.1:{}", u64::from(base_port) + id - 1)))
        .collect();
    let tls_dir = dir.join("tls");
    if !tls_dir.join("ca.pem").exists() {
        let hosts: Vec<(NodeId, String)> = addrs
            .keys()
            .map(|&id| (id, "127.0.0.1".to_string()))
            .collect();
        crate::net::certs::generate(&tls_dir, &hosts)
            .with_context(|| format!("cannot write certificates to {}", tls_dir.display()))?;
    } else {
        // A directory from before client roles: add the client and admin
        // identities the CLI now presents.
        crate::net::certs::ensure_identities(&tls_dir)
            .with_context(|| format!("cannot add identities to {}", tls_dir.display()))?;
    }
    let mut nodes = Vec::new();
    for &id in addrs.keys() {
        let config = local_node_config(dir, id, &addrs, fsync)?;
        match Node::start(config).await {
            Ok(node) => nodes.push(node),
            Err(error) => {
                for node in nodes {
                    let _ = node.shutdown().await;
                }
                return Err(error).with_context(|| format!("cannot start node {id}"));
            }
        }
    }
    Ok(LocalCluster {
        nodes,
        tls_dir,
        addrs: addrs.into_values().collect(),
    })
}

impl LocalCluster {
    pub fn cluster_arg(&self) -> String {
        self.addrs.join(",")
    }

    pub async fn shutdown(self) -> anyhow::Result<()> {
        let mut first_error = None;
        for node in self.nodes {
            if let Err(error) = node.shutdown().await {
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let cluster = start_local_cluster(&args.dir, args.nodes, args.base_port, Fsync::Always).await?;
    let exe = std::env::args()
        .next()
        .filter(|path| Path::new(path).is_absolute())
        .unwrap_or_else(|| "raftlog".to_string());
    let flags = format!(
        "--cluster {} --tls-dir {}",
        cluster.cluster_arg(),
        cluster.tls_dir.display()
    );
    // Status lines go to stderr; stdout keeps only the copy-paste commands.
    eprintln!(
        "raftlog dev: {} nodes on {} (data in {}); Ctrl-C stops them",
        cluster.nodes.len(),
        cluster.cluster_arg(),
        args.dir.display()
    );
    println!("# publish lines from stdin:");
    println!("printf 'hello\\nworld\\n' | {exe} publish {flags}");
    println!("# read everything, then follow new records:");
    println!("{exe} consume {flags} --from start --follow");
    println!("# who leads, and how far each node is:");
    println!("{exe} status {flags}");
    if cluster.nodes.len() > 1 {
        println!("# membership changes and transfers present the admin identity (admin.pem):");
        println!("{exe} admin transfer-leader 2 {flags}");
    }
    wait_for_stop_signal().await?;
    eprintln!("raftlog dev: stopping");
    tokio::time::timeout(Duration::from_secs(10), cluster.shutdown())
        .await
        .context("nodes did not stop within 10 s")??;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
