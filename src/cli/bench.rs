//! `raftlog bench`: the load generator people use to measure a cluster.
//!
//! P publishers, each with W appends in flight, append records of S bytes for
//! N records or T seconds. Commit latency is measured per append with an HDR
//! histogram: from the moment the append was sent, or with `--rate` from the
//! moment it was *meant* to be sent, so a cluster that falls behind the
//! offered load shows it as latency instead of hiding it (coordinated
//! omission). Then a consumer reads everything back.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::mpsc;

use super::args::{BenchArgs, FsyncPolicy, OutputFormat};
use crate::client::{
    AppendTicket, ClientConfig, Consumer, ConsumerOptions, Publisher, PublisherOptions, StartFrom,
};
use crate::server::config::Fsync;
use crate::server::stages::{AppendStages, StageSummary};
use crate::types::{LogIndex, NodeId};

/// Records appended when neither --records nor --seconds is given.
pub const BENCH_RECORDS_DEFAULT: u64 = 100_000;
/// Latencies above this are clamped into the histogram's top bucket.
const LATENCY_US_MAX: u64 = 600_000_000;
/// Publishers and in-flight appends allowed; far above what one client needs.
const PUBLISHERS_MAX: usize = 1024;
const INFLIGHT_MAX: usize = 4096;

/// What one run measured.
#[derive(Debug)]
pub struct BenchReport {
    pub records: u64,
    pub record_bytes: usize,
    pub seconds: f64,
    pub latency_us: Histogram<u64>,
    pub consume_records: u64,
    pub consume_seconds: f64,
    /// Per node, where appends spent their time (`--breakdown`).
    pub breakdown: Vec<NodeBreakdown>,
}

/// One node's stage timings over the measured part of a run.
#[derive(Debug)]
pub struct NodeBreakdown {
    pub node: NodeId,
    pub leader: bool,
    pub stages: Vec<StageSummary>,
}

impl NodeBreakdown {
    fn to_json(&self) -> serde_json::Value {
        let stages: serde_json::Map<String, serde_json::Value> = self
            .stages
            .iter()
            .map(|s| {
                (
                    s.stage.name().to_string(),
                    json!({
                        "samples": s.samples,
                        "p50_us": s.p50_us,
                        "p90_us": s.p90_us,
                        "p99_us": s.p99_us,
                        "mean_us": s.mean_us.round(),
                    }),
                )
            })
            .collect();
        json!({ "node": self.node, "leader": self.leader, "stages": stages })
    }

    fn to_text(&self) -> String {
        let role = if self.leader { "leader" } else { "follower" };
        let mut text = format!("node {} ({role}), µs p50 / p90 / p99 (samples):", self.node);
        for s in &self.stages {
            text.push_str(&format!(
                "\n  {:<13} {:>7} / {:>7} / {:>7}  ({})",
                s.stage.name(),
                s.p50_us,
                s.p90_us,
                s.p99_us,
                s.samples
            ));
        }
        text
    }
}

impl BenchReport {
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.records_per_sec() * self.record_bytes as f64 / 1e6
    }

    pub fn consume_records_per_sec(&self) -> f64 {
        self.consume_records as f64 / self.consume_seconds.max(f64::MIN_POSITIVE)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let latency = &self.latency_us;
        let mut report = json!({
            "records": self.records,
            "size": self.record_bytes,
            "seconds": self.seconds,
            "records_per_sec": self.records_per_sec(),
            "mb_per_sec": self.mb_per_sec(),
            "latency_us": {
                "p50": latency.value_at_quantile(0.50),
                "p90": latency.value_at_quantile(0.90),
                "p95": latency.value_at_quantile(0.95),
                "p99": latency.value_at_quantile(0.99),
                "p999": latency.value_at_quantile(0.999),
                "max": latency.max(),
            },
            "consume_records": self.consume_records,
            "consume_seconds": self.consume_seconds,
            "consume_records_per_sec": self.consume_records_per_sec(),
        });
        if !self.breakdown.is_empty() {
            report["breakdown"] = self.breakdown.iter().map(NodeBreakdown::to_json).collect();
        }
        report
    }

    pub fn to_text(&self) -> String {
        let latency = &self.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let mut text = format!(
            "appended {} records of {} bytes in {:.2} s: {:.0} records/s, {:.2} MB/s\n\
             commit latency: p50 {:.3} ms, p90 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms\n\
             read back {} records in {:.2} s: {:.0} records/s",
            self.records,
            self.record_bytes,
            self.seconds,
            self.records_per_sec(),
            self.mb_per_sec(),
            ms(latency.value_at_quantile(0.50)),
            ms(latency.value_at_quantile(0.90)),
            ms(latency.value_at_quantile(0.95)),
            ms(latency.value_at_quantile(0.99)),
            ms(latency.value_at_quantile(0.999)),
            ms(latency.max()),
            self.consume_records,
            self.consume_seconds,
            self.consume_records_per_sec(),
        );
        for node in &self.breakdown {
            text.push('\n');
            text.push_str(&node.to_text());
        }
        text
    }
}

/// When to stop appending.
#[derive(Clone, Copy, Debug)]
enum Goal {
    Records(u64),
    Duration(Duration),
}

struct Shared {
    records_claimed: AtomicU64,
    records_committed: AtomicU64,
    stop: AtomicBool,
    /// Latencies of the current one-second interval (for the interval
    /// lines and `--csv`), swapped out by the reporter every second.
    interval_latency_us: std::sync::Mutex<Histogram<u64>>,
    /// One entry per second of the run so far.
    series: std::sync::Mutex<Vec<IntervalStats>>,
}

impl Shared {
    fn new() -> anyhow::Result<Shared> {
        Ok(Shared {
            records_claimed: AtomicU64::new(0),
            records_committed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            interval_latency_us: std::sync::Mutex::new(new_histogram()?),
            series: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn series_push(&self, stats: IntervalStats) {
        self.series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(stats);
    }

    fn series(&self) -> Vec<IntervalStats> {
        self.series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn record_interval_latency(&self, micros: u64) {
        // A poisoned lock only means a reporter panicked mid-swap; the
        // histogram inside is whole.
        self.interval_latency_us
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .saturating_record(micros);
    }

    /// The interval's latencies so far, leaving an empty histogram.
    fn take_interval_latency(&self) -> Option<Histogram<u64>> {
        let fresh = new_histogram().ok()?;
        let mut current = self
            .interval_latency_us
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(std::mem::replace(&mut *current, fresh))
    }
}

impl Shared {
    /// Claims up to `batch` more records to send; 0 when the goal is reached.
    fn claim(&self, goal: Goal, batch: u64, started: Instant) -> u64 {
        if self.stop.load(Ordering::Relaxed) {
            return 0;
        }
        match goal {
            Goal::Duration(duration) => {
                if started.elapsed() >= duration {
                    0
                } else {
                    self.records_claimed.fetch_add(batch, Ordering::Relaxed);
                    batch
                }
            }
            Goal::Records(total) => {
                let mut claimed = self.records_claimed.load(Ordering::Relaxed);
                loop {
                    let take = batch.min(total.saturating_sub(claimed));
                    if take == 0 {
                        return 0;
                    }
                    match self.records_claimed.compare_exchange(
                        claimed,
                        claimed + take,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return take,
                        Err(now) => claimed = now,
                    }
                }
            }
        }
    }
}

/// One publisher's results: its latency histogram and the index range it wrote.
struct PublisherResult {
    latency_us: Histogram<u64>,
    records: u64,
    first_index: Option<LogIndex>,
    last_index: Option<LogIndex>,
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).context("cannot create latency histogram")
}

#[allow(clippy::too_many_arguments)]
async fn run_publisher(
    config: ClientConfig,
    goal: Goal,
    record_bytes: usize,
    batch: usize,
    inflight: usize,
    interval: Option<Duration>,
    shared: Arc<Shared>,
    started: Instant,
) -> anyhow::Result<PublisherResult> {
    let mut publisher = Publisher::connect(
        config,
        PublisherOptions {
            producer_id: None,
            first_sequence: 0,
            inflight_max: inflight,
        },
    )
    .await?;
    let payload = Bytes::from(vec![b'x'; record_bytes]);
    // Tickets are awaited in send order by a second task, so a slow append never
    // stops the sender from filling the window.
    let (ticket_tx, mut ticket_rx) = mpsc::channel::<(AppendTicket, Instant, u64)>(inflight);
    let collector_shared = shared.clone();
    let collector = tokio::spawn(async move {
        let mut result = PublisherResult {
            latency_us: new_histogram()?,
            records: 0,
            first_index: None,
            last_index: None,
        };
        while let Some((ticket, intended, count)) = ticket_rx.recv().await {
            let indexes = ticket.await?;
            let micros = intended
                .elapsed()
                .as_micros()
                .clamp(1, LATENCY_US_MAX as u128) as u64;
            result.latency_us.saturating_record(micros);
            collector_shared.record_interval_latency(micros);
            result.records += count;
            if let Some((low, high)) = indexes.bounds() {
                result.first_index = Some(result.first_index.map_or(low, |first| first.min(low)));
                result.last_index = Some(result.last_index.map_or(high, |last| last.max(high)));
            }
            collector_shared
                .records_committed
                .fetch_add(count, Ordering::Relaxed);
        }
        anyhow::Ok(result)
    });
    let mut sent: u32 = 0;
    loop {
        let count = shared.claim(goal, batch as u64, started);
        if count == 0 {
            break;
        }
        // With --rate, latency runs from the intended send time, so a
        // cluster that falls behind shows it (coordinated omission). In
        // closed loop it runs from when the append is handed to the
        // connection: `send` first waits for a free slot in the window, and
        // counting that wait would count the previous append's latency twice.
        let intended = match interval {
            Some(interval) => {
                let at = started + interval * sent;
                tokio::time::sleep_until(at.into()).await;
                Some(at)
            }
            None => None,
        };
        sent = sent.saturating_add(1);
        let records = vec![payload.clone(); count as usize];
        let ticket = publisher.send(records).await?;
        let intended = intended.unwrap_or_else(Instant::now);
        if ticket_tx.send((ticket, intended, count)).await.is_err() {
            break; // the collector failed; its error is reported below
        }
    }
    drop(ticket_tx);
    let result = collector.await.context("latency collector panicked")?;
    publisher.close().await;
    if result.is_err() {
        shared.stop.store(true, Ordering::Relaxed);
    }
    result
}

/// How long reading back may wait for the next record.
const READ_BACK_STALL_MAX: Duration = Duration::from_secs(30);

async fn read_back(
    config: ClientConfig,
    first_index: LogIndex,
    last_index: LogIndex,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    // Follow until the last appended record: the node read from may not
    // have heard the latest commit index yet, and stopping at its end would
    // miss the newest records.
    let mut consumer = Consumer::connect(
        config,
        ConsumerOptions {
            from: StartFrom::Index(first_index),
            follow: true,
        },
    )
    .await?;
    let mut records = 0u64;
    'read: loop {
        let batch = tokio::time::timeout(READ_BACK_STALL_MAX, consumer.next_batch())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "reading back stalled: no record for {READ_BACK_STALL_MAX:?} after {records} of {}",
                    last_index.saturating_sub(first_index) + 1
                )
            })??;
        let Some(batch) = batch else { break };
        for record in batch {
            if record.index > last_index {
                break 'read;
            }
            records += 1;
            if record.index == last_index {
                break 'read;
            }
        }
    }
    Ok((records, started.elapsed().as_secs_f64()))
}

/// Runs the benchmark against `config`. `stages` are the nodes' stage
/// timers when the cluster is embedded: reset when the warm-up ends, so the
/// breakdown covers the measured records only.
pub async fn measure(
    config: ClientConfig,
    args: &BenchArgs,
    stages: &[AppendStages],
) -> anyhow::Result<BenchReport> {
    if args.publishers == 0 || args.publishers > PUBLISHERS_MAX {
        anyhow::bail!("--publishers must be between 1 and {PUBLISHERS_MAX}");
    }
    if args.inflight == 0 || args.inflight > INFLIGHT_MAX {
        anyhow::bail!("--inflight must be between 1 and {INFLIGHT_MAX}");
    }
    if args.batch == 0 || args.batch > crate::wire::client::RECORDS_PER_APPEND_MAX {
        anyhow::bail!(
            "--batch must be between 1 and {}",
            crate::wire::client::RECORDS_PER_APPEND_MAX
        );
    }
    let goal = match (args.records, args.seconds) {
        (Some(records), _) => Goal::Records(records),
        (None, Some(seconds)) if seconds > 0.0 && seconds.is_finite() => {
            Goal::Duration(Duration::from_secs_f64(seconds))
        }
        (None, Some(seconds)) => anyhow::bail!("--seconds must be positive, got {seconds}"),
        (None, None) => Goal::Records(BENCH_RECORDS_DEFAULT),
    };
    let interval = match args.rate {
        None => None,
        Some(rate) if rate > 0.0 && rate.is_finite() => {
            // Each publisher offers rate / publishers records/s, in batches.
            let appends_per_sec = rate / args.publishers as f64 / args.batch as f64;
            Some(Duration::from_secs_f64(1.0 / appends_per_sec))
        }
        Some(rate) => anyhow::bail!("--rate must be positive, got {rate}"),
    };
    if args.warmup_records > 0 {
        // Connections, page cache and the leader's pipelines warm up on
        // records nobody counts.
        let warmup = Arc::new(Shared::new()?);
        run_publishers(
            &config,
            args,
            Goal::Records(args.warmup_records),
            interval,
            warmup,
            Instant::now(),
        )
        .await?;
    }
    for timers in stages {
        timers.reset();
    }
    let shared = Arc::new(Shared::new()?);
    let progress = progress_bar(goal, args.output);
    let ticker = progress.clone().map(|bar| {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(shared.records_committed.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let started = Instant::now();
    let series = spawn_interval_reporter(
        shared.clone(),
        started,
        args.output == OutputFormat::Text && std::io::stderr().is_terminal(),
        progress.clone(),
    );
    let outcome = run_publishers(&config, args, goal, interval, shared.clone(), started).await;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    series.abort();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let (latency_us, records, first_index, last_index) =
        outcome.map_err(|error| error.context("an append failed"))?;
    if let Some(path) = &args.csv {
        write_csv(path, &shared)?;
    }
    let (consume_records, consume_seconds) = if records == 0 {
        (0, 0.0)
    } else {
        read_back(config, first_index, last_index).await?
    };
    Ok(BenchReport {
        records,
        record_bytes: args.size,
        seconds,
        latency_us,
        consume_records,
        consume_seconds,
        breakdown: Vec::new(),
    })
}

/// Runs `args.publishers` publishers to `goal`; their merged latencies,
/// records, and the index range they wrote.
async fn run_publishers(
    config: &ClientConfig,
    args: &BenchArgs,
    goal: Goal,
    interval: Option<Duration>,
    shared: Arc<Shared>,
    started: Instant,
) -> anyhow::Result<(Histogram<u64>, u64, LogIndex, LogIndex)> {
    let mut publishers = Vec::new();
    for _ in 0..args.publishers {
        publishers.push(tokio::spawn(run_publisher(
            config.clone(),
            goal,
            args.size,
            args.batch,
            args.inflight,
            interval,
            shared.clone(),
            started,
        )));
    }
    let mut latency_us = new_histogram()?;
    let mut records = 0u64;
    let mut first_index = LogIndex::MAX;
    let mut last_index = 0;
    let mut first_error = None;
    for publisher in publishers {
        match publisher.await.context("publisher task panicked")? {
            Ok(result) => {
                latency_us
                    .add(&result.latency_us)
                    .context("cannot merge latency histograms")?;
                records += result.records;
                first_index = first_index.min(result.first_index.unwrap_or(LogIndex::MAX));
                last_index = last_index.max(result.last_index.unwrap_or(0));
            }
            Err(error) => {
                shared.stop.store(true, Ordering::Relaxed);
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok((latency_us, records, first_index, last_index)),
    }
}

/// One second of a run: records committed in it and its latency quantiles.
#[derive(Clone, Copy, Debug)]
struct IntervalStats {
    second: u64,
    records: u64,
    p50_us: u64,
    p99_us: u64,
}

/// Every second: the interval's figures into the series (for `--csv`), and
/// on a terminal a line `N s: X records/s, p50 .. ms, p99 .. ms` above the
/// progress bar (kafka-producer-perf-test and `nats bench` print the same).
fn spawn_interval_reporter(
    shared: Arc<Shared>,
    started: Instant,
    print: bool,
    bar: Option<indicatif::ProgressBar>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut committed_before = 0u64;
        let mut second = 0u64;
        loop {
            second += 1;
            tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
            let committed = shared.records_committed.load(Ordering::Relaxed);
            let Some(latency) = shared.take_interval_latency() else {
                continue;
            };
            let stats = IntervalStats {
                second,
                records: committed.saturating_sub(committed_before),
                p50_us: latency.value_at_quantile(0.50),
                p99_us: latency.value_at_quantile(0.99),
            };
            committed_before = committed;
            shared.series_push(stats);
            if print {
                let line = format!(
                    "{second:>4} s: {} records/s, p50 {:.3} ms, p99 {:.3} ms",
                    stats.records,
                    stats.p50_us as f64 / 1000.0,
                    stats.p99_us as f64 / 1000.0
                );
                match &bar {
                    Some(bar) => bar.println(line),
                    None => eprintln!("{line}"),
                }
            }
        }
    })
}

/// `--csv FILE`: one line per second of the measured run.
fn write_csv(path: &std::path::Path, shared: &Shared) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let series = shared.series();
    let mut text = String::from("second,records_per_sec,p50_us,p99_us\n");
    for stats in series {
        let _ = writeln!(
            text,
            "{},{},{},{}",
            stats.second, stats.records, stats.p50_us, stats.p99_us
        );
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn progress_bar(goal: Goal, output: OutputFormat) -> Option<indicatif::ProgressBar> {
    if output == OutputFormat::Json || !std::io::stdout().is_terminal() {
        return None;
    }
    let bar = match goal {
        Goal::Records(total) => indicatif::ProgressBar::new(total),
        Goal::Duration(_) => indicatif::ProgressBar::new_spinner(),
    };
    let template = "{spinner} {elapsed_precise} [{bar:30}] {pos} records committed, {per_sec}";
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

/// Finds `count` consecutive free UDP ports on 127.0.0.1 for an embedded cluster.
fn free_port_range(count: u64) -> anyhow::Result<u16> {
    // Differs between processes started at the same moment (pid) and
    // between the attempts of one process (time).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::from(elapsed.subsec_nanos()))
        .unwrap_or(0);
    let seed = (u64::from(std::process::id()) << 32) ^ nanos;
    for probe in 0..200u64 {
        let base =
            20_000 + (seed.wrapping_mul(2654435761).wrapping_add(probe * 7919) % 40_000) as u16;
        let all_free = (0..count)
            .all(|offset| std::net::UdpSocket::bind(("127.0.0.1", base + offset as u16)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    anyhow::bail!("found no {count} consecutive free UDP ports on 127.0.0.1")
}

/// Starts an embedded cluster in `dir` on free ports.
///
/// Ports are probed and released before the nodes bind them, so another
/// process may take one in between (CI saw two benches started at once
/// meet): a start that fails on a port in use is retried on other ports.
async fn start_embedded_cluster(
    dir: &std::path::Path,
    nodes: u64,
    fsync: Fsync,
) -> anyhow::Result<super::dev::LocalCluster> {
    const ATTEMPTS: u64 = 5;
    let mut attempt = 0;
    loop {
        let cluster_dir = dir.join(format!("cluster-{attempt}"));
        let base_port = free_port_range(nodes)?;
        match super::dev::start_local_cluster(&cluster_dir, nodes, base_port, fsync).await {
            Ok(cluster) => return Ok(cluster),
            Err(error) if attempt + 1 < ATTEMPTS && is_port_in_use(&error) => {
                let _ = std::fs::remove_dir_all(&cluster_dir);
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Whether `error` comes from binding a port another socket holds.
fn is_port_in_use(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// How long a fresh embedded cluster may take to elect its first leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);

async fn wait_for_leader(config: &ClientConfig) -> anyhow::Result<()> {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        match crate::client::status(config).await {
            Ok(status) if status.leader.is_some() => return Ok(()),
            _ if Instant::now() >= deadline => {
                anyhow::bail!("the embedded cluster elected no leader within {LEADER_WAIT:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let report = if args.embedded {
        let dir = tempfile::Builder::new()
            .prefix("raftlog-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let fsync = match args.fsync {
            FsyncPolicy::Always => Fsync::Always,
            FsyncPolicy::Never => Fsync::Never,
        };
        let cluster = start_embedded_cluster(dir.path(), args.nodes, fsync).await?;
        let config = ClientConfig {
            cluster: cluster.addrs.clone(),
            tls_dir: cluster.tls_dir.clone(),
            request_timeout: timeout,
        };
        // Time the cluster, not its first election.
        let timers: Vec<AppendStages> = cluster
            .nodes
            .iter()
            .map(|node| node.metrics().stages.clone())
            .collect();
        let report = match wait_for_leader(&config).await {
            Ok(()) => measure(config, &args, &timers).await,
            Err(error) => Err(error),
        };
        let report = report.map(|mut report| {
            if args.breakdown {
                report.breakdown = cluster
                    .nodes
                    .iter()
                    .map(|node| NodeBreakdown {
                        node: node.id(),
                        leader: node.metrics().is_leader.get() == 1,
                        stages: node.metrics().stages.summary(),
                    })
                    .collect();
            }
            report
        });
        let stopped = cluster.shutdown().await;
        let report = report?;
        stopped?;
        report
    } else {
        let tls_dir = args
            .tls_dir
            .clone()
            .context("--tls-dir is required without --embedded")?;
        let config = ClientConfig {
            cluster: args.cluster.clone(),
            tls_dir,
            request_timeout: timeout,
        };
        measure(config, &args, &[]).await?
    };
    match args.output {
        OutputFormat::Json => println!("{}", report.to_json()),
        OutputFormat::Text => println!("{}", report.to_text()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_held_by_another_socket_is_recognised_through_the_start_error() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let port = held.local_addr().expect("local addr").port();
        let dir = tempfile::tempdir().expect("temp dir");
        let error =
            match super::super::dev::start_local_cluster(dir.path(), 1, port, Fsync::Never).await {
                Ok(_) => panic!("a node started on a port another socket holds"),
                Err(error) => error,
            };
        assert!(
            is_port_in_use(&error),
            "not seen as a port in use: {error:#}"
        );

        let refused = super::super::dev::start_local_cluster(dir.path(), 0, port, Fsync::Never)
            .await
            .err()
            .expect("zero nodes is refused");
        assert!(!is_port_in_use(&refused), "{refused:#}");
    }
}
