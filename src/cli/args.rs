//! The command-line grammar: every subcommand, flag and default of the CLI
//! contract (`../shared/CLI.md`). Parsing only; the commands live beside it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use super::units::{ByteSize, HumanDuration};
use crate::types::NodeId;

#[derive(Debug, Parser)]
#[command(
    name = "raftlog",
    version,
    about = "A replicated, append-only log service built on Raft",
    long_about = "A replicated, append-only log service built on Raft.\n\n\
        Start a local 3-node cluster with `raftlog dev`; it prints the publish, \
        consume and status commands that work against it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node of a cluster.
    Serve(Box<ServeArgs>),
    /// Start a local cluster on 127.0.0.1 in the foreground (the embedded default).
    Dev(DevArgs),
    /// Write a new cluster CA and certificates for nodes, a client and an admin; issue more from it.
    Certs(CertsArgs),
    /// Append records read from stdin, one per line; print each committed index.
    Publish(PublishArgs),
    /// Print committed records from a cursor.
    Consume(ConsumeArgs),
    /// Show the cluster as the leader sees it.
    Status(StatusArgs),
    /// Membership changes and leadership transfer.
    Admin(AdminArgs),
    /// Load generator: append throughput and commit latency, then read-back.
    Bench(Box<BenchArgs>),
    /// Check a node's data directory offline.
    Verify(VerifyArgs),
    /// Print the entries stored in a node's data directory, offline.
    Dump(DumpArgs),
    /// Print a shell completion script (e.g. `raftlog completions bash > /etc/bash_completion.d/raftlog`).
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// An entry counts toward a majority only once its node has synced it.
    #[default]
    Always,
    /// Never fsync: fast, but a machine crash can lose acknowledged records.
    Never,
}

/// `ID=ADDR`, as in `--peer 2=127.0.0.1:7002`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddr {
    pub id: NodeId,
    pub addr: String,
}

impl std::str::FromStr for NodeAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<NodeAddr, String> {
        let (id, addr) = text
            .split_once('=')
            .ok_or_else(|| format!("expected ID=ADDR, got `{text}`"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("node id `{id}` is not a number"))?;
        if id == 0 {
            return Err("node id 0 is reserved; ids start at 1".to_string());
        }
        let addr = addr.trim();
        if addr.is_empty() {
            return Err(format!("node {id} has an empty address"));
        }
        Ok(NodeAddr {
            id,
            addr: addr.to_string(),
        })
    }
}

/// `MIN..MAX` in milliseconds, as in `--election-timeout-ms 150..300`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct MillisRange {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl std::str::FromStr for MillisRange {
    type Err = String;

    fn from_str(text: &str) -> Result<MillisRange, String> {
        let (min, max) = text
            .split_once("..")
            .ok_or_else(|| format!("expected MIN..MAX in milliseconds, got `{text}`"))?;
        let parse = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{s}` is not a number of milliseconds"))
        };
        let range = MillisRange {
            min_ms: parse(min)?,
            max_ms: parse(max)?,
        };
        if range.min_ms == 0 || range.min_ms >= range.max_ms {
            return Err(format!(
                "election timeout range must satisfy 0 < MIN < MAX, got {}..{}",
                range.min_ms, range.max_ms
            ));
        }
        Ok(range)
    }
}

impl TryFrom<String> for MillisRange {
    type Error = String;
    fn try_from(text: String) -> Result<MillisRange, String> {
        text.parse()
    }
}

/// Read by every client command when `--cluster` is not given, so a shell
/// (or a systemd unit) names its cluster once; the flag wins (CLI.md).
pub const CLUSTER_ENV: &str = "RAFTLOG_CLUSTER";
/// As [`CLUSTER_ENV`], for `--tls-dir`.
pub const TLS_DIR_ENV: &str = "RAFTLOG_TLS_DIR";

/// Where to reach a cluster and how to trust it; shared by every client command.
#[derive(Clone, Debug, Args)]
pub struct ClusterArgs {
    /// Addresses of any subset of the cluster's nodes (HOST:PORT, comma separated).
    #[arg(long, value_delimiter = ',', required = true, env = CLUSTER_ENV)]
    pub cluster: Vec<String>,
    /// Directory written by `raftlog certs` (uses ca.pem, and presents client.pem/client.key, or admin.pem/admin.key for `admin`).
    #[arg(long, env = TLS_DIR_ENV)]
    pub tls_dir: PathBuf,
    /// How long to wait for the cluster to answer a request before giving up.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML file with any of the options below (keys as the flags, with `_` for `-`); flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id (a number >= 1).
    #[arg(long)]
    pub id: Option<NodeId>,
    /// UDP address serving peers and clients (HOST:PORT).
    #[arg(long)]
    pub listen: Option<String>,
    /// Another voter of the initial cluster, ID=ADDR; repeat for each.
    #[arg(long = "peer")]
    pub peers: Vec<NodeAddr>,
    /// Directory holding this node's log and state.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Directory written by `raftlog certs`, or the node's bundle node-ID/ (uses ca.pem, node-ID.pem, node-ID.key; re-read on SIGHUP).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Randomized election timeout range in milliseconds [default: 150..300].
    #[arg(long)]
    pub election_timeout_ms: Option<MillisRange>,
    /// Leader heartbeat interval in milliseconds [default: 50].
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// `always`: sync before an entry counts toward a majority; `never`: trade durability for speed [default: always].
    #[arg(long)]
    pub fsync: Option<FsyncPolicy>,
    /// Size of each preallocated log segment file, at least 4096; a larger record gets a segment of its own (bytes, or with a unit: 64MiB) [default: 64MiB].
    #[arg(long, value_name = "SIZE")]
    pub segment_bytes: Option<ByteSize>,
    /// Drop the oldest whole segments once the log is larger than this (bytes, or with a unit: 10GiB) [default: keep everything].
    #[arg(long, value_name = "SIZE")]
    pub retention_bytes: Option<ByteSize>,
    /// Drop whole segments whose newest entry is older than this many milliseconds [default: keep everything].
    #[arg(long, conflicts_with = "retention")]
    pub retention_ms: Option<u64>,
    /// As --retention-ms, with a unit: 7d, 12h, 30m, 90s, 500ms, 2w.
    #[arg(long, value_name = "DURATION")]
    pub retention: Option<HumanDuration>,
    /// Refuse clients that do not present a certificate signed by the cluster CA (the default; kept for compatibility).
    #[arg(long)]
    pub require_client_cert: bool,
    /// Serve publish, consume and status to callers without a client certificate (never admin requests).
    #[arg(long, conflicts_with = "require_client_cert")]
    pub allow_anonymous_clients: bool,
    /// Join a running cluster: bootstrap nothing and wait for `admin add-node`.
    #[arg(long)]
    pub join: bool,
    /// Largest record a publisher may append (bytes, or with a unit: 1MiB) [default: 1MiB].
    #[arg(long, value_name = "SIZE")]
    pub max_record_bytes: Option<ByteSize>,
    /// Forget a producer id's exactly-once state after this long idle [default: 600000].
    #[arg(long)]
    pub producer_expiry_ms: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics, and the probes /healthz and /readyz.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// `text` for people (coloured only on a terminal), `json` (one object per line) for log shippers [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// How `serve` writes its log lines to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Number of nodes in the local cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Directory for certificates and every node's data (reused on the next run).
    #[arg(long, default_value = "./raftlog-dev")]
    pub dir: PathBuf,
    /// UDP port of node 1; node N listens on base-port + N - 1.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CertsArgs {
    /// Directory to write ca.pem/ca.key, node-ID.pem/.key, the bundles node-ID/, client.pem/.key and admin.pem/.key into.
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// A node as ID=HOST (HOST is an IP or DNS name put in its certificate); repeat for each.
    #[arg(long = "node", required = true)]
    pub nodes: Vec<NodeAddr>,
    #[command(subcommand)]
    pub action: Option<CertsAction>,
}

#[derive(Debug, Subcommand)]
pub enum CertsAction {
    /// Issue a certificate for a new node from an existing CA (ca.pem, ca.key).
    AddNode {
        /// Directory holding the CA (ca.pem, ca.key), as written by `raftlog certs`.
        #[arg(long)]
        ca_dir: PathBuf,
        /// The new node as ID=HOST (HOST is an IP or DNS name put in its certificate).
        #[arg(long)]
        node: NodeAddr,
        /// Write only the node's bundle (ca.pem, node-ID.pem, node-ID.key) here [default: node-ID.pem/.key in --ca-dir and the bundle --ca-dir/node-ID/].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Issue another client identity (or, with --admin, an admin identity) from an existing CA.
    Client {
        /// Directory holding the CA (ca.pem, ca.key), as written by `raftlog certs`.
        #[arg(long)]
        ca_dir: PathBuf,
        /// Name of the identity (1-64 characters of [a-z0-9._-]), put in the certificate's subject.
        #[arg(long)]
        name: String,
        /// Give the identity the admin role (writes admin.pem/admin.key instead of client.pem/client.key).
        #[arg(long)]
        admin: bool,
        /// Directory to write ca.pem and the pair into, usable as --tls-dir [default: --ca-dir/clients/NAME].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Producer id for exactly-once retries (a u64 chosen by the publisher).
    #[arg(long)]
    pub producer_id: Option<u64>,
    /// Sequence number of the first input record (with --producer-id).
    #[arg(long, default_value_t = 0)]
    pub first_seq: u64,
    /// Records per append request.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Append requests outstanding at once.
    #[arg(long, default_value_t = 8)]
    pub inflight: usize,
    /// `text`: one index per line; `json`: {"index":N} per line.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// `lines`: each stdin line is a record; `json`: each line is {"data":"..."} or {"data_b64":"..."}, as `consume --output json` prints.
    #[arg(long, value_enum, default_value_t = InputFormat::Lines)]
    pub input: InputFormat,
}

/// How `publish` turns a stdin line into a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// The line itself, without its newline.
    #[default]
    Lines,
    /// A JSON object with `data` (UTF-8) or `data_b64` (standard base64).
    Json,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where to start: an index, `start` or `end`.
    #[arg(long, default_value = "start")]
    pub from: String,
    /// Keep waiting for new records instead of stopping at the commit index seen at start.
    #[arg(long)]
    pub follow: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub limit: Option<u64>,
    /// `text`: the record and a newline; `json`: {"index":N,"data":"..."} per line.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub action: AdminAction,
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Add a node (it catches up as a learner, then becomes a voter).
    AddNode {
        /// The new node as ID=ADDR.
        node: NodeAddr,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove a node from the cluster (the leader too: it steps down after).
    RemoveNode {
        id: NodeId,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        id: NodeId,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Cluster to load (not needed with --embedded).
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "embedded",
        env = CLUSTER_ENV
    )]
    pub cluster: Vec<String>,
    /// Directory written by `raftlog certs` (not needed with --embedded).
    #[arg(long, required_unless_present = "embedded", env = TLS_DIR_ENV)]
    pub tls_dir: Option<PathBuf>,
    /// Start a local cluster in temporary directories first, and remove it after.
    #[arg(long)]
    pub embedded: bool,
    /// Nodes of the embedded cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Append this many records [default: 100000 unless --seconds is given].
    #[arg(long, conflicts_with = "seconds")]
    pub records: Option<u64>,
    /// Append for this many seconds.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Bytes per record.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Append requests in flight per publisher.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Records per append request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Offered load in records/s across all publishers (latency counted from the intended send time).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Append this many records first, uncounted (connections and caches warm up).
    #[arg(long, default_value_t = 0)]
    pub warmup_records: u64,
    /// Write the per-second series (records/s, p50, p99) of the run to FILE.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Fsync policy of the embedded cluster.
    /// Print where appends spend their time, stage by stage, on the leader
    /// and the followers (embedded clusters only: it reads the nodes' own timers).
    #[arg(long, requires = "embedded")]
    pub breakdown: bool,
    #[arg(long, value_enum, default_value_t = FsyncPolicy::Always)]
    pub fsync: FsyncPolicy,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// How long to wait for the cluster to answer one request.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A node's --data-dir.
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// A node's --data-dir.
    pub data_dir: PathBuf,
    /// First index to print [default: the log start].
    #[arg(long)]
    pub from: Option<u64>,
    /// `json` (one object per line) is the only format; `text` prints the same.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn peer_flag_parses_id_equals_addr_and_refuses_id_zero() {
        let peer: NodeAddr = "2=127.0.0.1:7002".parse().unwrap();
        assert_eq!(peer.id, 2);
        assert_eq!(peer.addr, "127.0.0.1:7002");
        assert!("0=127.0.0.1:1".parse::<NodeAddr>().is_err());
        assert!("x=127.0.0.1:1".parse::<NodeAddr>().is_err());
        assert!("3".parse::<NodeAddr>().is_err());
    }

    #[test]
    fn election_timeout_range_requires_min_below_max() {
        let range: MillisRange = "150..300".parse().unwrap();
        assert_eq!((range.min_ms, range.max_ms), (150, 300));
        assert!("300..150".parse::<MillisRange>().is_err());
        assert!("0..10".parse::<MillisRange>().is_err());
        assert!("150".parse::<MillisRange>().is_err());
    }
}
