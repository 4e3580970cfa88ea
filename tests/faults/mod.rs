//! The multi-process fault suite (issue 7): real `raftlog serve` processes,
//! clients that record a history, a nemesis that breaks things from one
//! seed, and a checker that judges the history.

pub mod checker;
pub mod cluster;
pub mod firewall;
pub mod history;
pub mod nemesis;
pub mod workload;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftlog::raft::SplitMix64;
use tokio::sync::watch;

use cluster::Cluster;
use firewall::Firewall;
use history::{LogIndex, Recorder};
use nemesis::{FaultKind, Nemesis};
use workload::Members;

/// Concurrent publishers, each with its own producer id.
pub const PUBLISHERS: u64 = 3;
/// The producer id of the `raftlog publish` process (after the library ones).
pub const CLI_PRODUCER_ID: u64 = PUBLISHERS + 1;
/// Each publisher starts a new batch this often: a few hundred records per
/// second in all, enough to fill segments without starving 2 cores.
pub const PUBLISH_PACE: Duration = Duration::from_millis(15);
/// Small segments and retention, so the log start moves every second and
/// a stopped follower falls behind it within about 15 s. Retention must
/// still outlast a tail consumer's longest reconnect (a few request
/// timeouts), or it legitimately skips records, which the CLI consumer
/// cannot report.
pub const SEGMENT_BYTES: &str = "65536";
pub const RETENTION_BYTES: &str = "1048576";
/// Bound on the final reads reaching everything anybody read or was told.
pub const FINAL_WAIT: Duration = Duration::from_secs(90);
/// Every so often a scan reads some node's whole log from the start.
pub const SCAN_EVERY: Duration = Duration::from_secs(4);

pub struct SuiteOptions {
    pub seed: u64,
    pub nodes: u64,
    /// Run exactly these faults (in this order), or random ones until
    /// `minutes` passed.
    pub schedule: Schedule,
    pub hold_ms: (u64, u64),
}

pub enum Schedule {
    Fixed(Vec<FaultKind>),
    Random { minutes: f64 },
}

/// Every fault kind once, in an order drawn from `seed`.
pub fn every_kind_once(seed: u64) -> Vec<FaultKind> {
    let mut rng = SplitMix64::new(seed ^ 0x5eed_0fde_f417);
    let mut kinds = FaultKind::ALL.to_vec();
    for i in (1..kinds.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        kinds.swap(i, j);
    }
    kinds
}

/// Only one suite runs at a time in this process: they share the chain.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs the suite and panics (after printing everything) if the checker
/// or the nemesis found a violation.
pub fn run(options: SuiteOptions) {
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    eprintln!(
        "[faults] seed {} ({} nodes); replay: RAFTLOG_FAULT_SEED={} cargo test --profile ci --test fault_suite",
        options.seed, options.nodes, options.seed
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run_async(options));
}

async fn run_async(options: SuiteOptions) {
    let firewall = match Firewall::install() {
        Ok(firewall) => Some(firewall),
        Err(reason) => {
            eprintln!(
                "[faults] SKIPPING every partition fault: iptables cannot be used here ({reason})"
            );
            None
        }
    };
    let fresh_slots = match &options.schedule {
        Schedule::Fixed(kinds) => kinds.len() as u64,
        Schedule::Random { minutes } => (minutes * 4.0).ceil() as u64,
    };
    let slot_count = (options.nodes + fresh_slots).min(200);
    let mut cluster = Cluster::prepare(
        slot_count,
        &[
            "--segment-bytes",
            SEGMENT_BYTES,
            "--retention-bytes",
            RETENTION_BYTES,
        ],
    );
    let initial: Vec<u64> = (1..=options.nodes).collect();
    for &id in &initial {
        cluster.start(id, &initial, false);
    }
    let recorder = Recorder::new();
    let members = Members::new(
        initial
            .iter()
            .map(|&id| cluster.addr(id).to_string())
            .collect(),
        cluster.tls_dir.clone(),
    );
    let addrs = Arc::new(cluster.addr_map());
    let mut nemesis = Nemesis {
        cluster: &mut cluster,
        firewall,
        recorder: recorder.clone(),
        rng: SplitMix64::new(options.seed),
        members: initial.iter().copied().collect::<BTreeSet<_>>(),
        client_members: members.clone(),
        next_slot: options.nodes + 1,
        hold_ms: options.hold_ms,
        done: Default::default(),
        skipped: Default::default(),
        notes: Vec::new(),
    };
    if let Err(error) = nemesis.leader().await {
        panic!(
            "the cluster did not elect a first leader: {error}\nnode 1 log:\n{}",
            nemesis.cluster.log_tail(1, 40)
        );
    }

    let (stop_tx, stop) = watch::channel(false);
    let publishers: Vec<_> = (1..=PUBLISHERS)
        .map(|producer| {
            workload::spawn_publisher(
                members.clone(),
                producer,
                PUBLISH_PACE,
                recorder.clone(),
                stop.clone(),
            )
        })
        .collect();
    // One more producer as a long-lived `raftlog publish` process.
    let mut publishers = publishers;
    publishers.push(workload::spawn_cli_publisher(
        members.clone(),
        CLI_PRODUCER_ID,
        PUBLISH_PACE,
        recorder.clone(),
        stop.clone(),
    ));
    let mut consumers: Vec<_> = (0..options.nodes as usize)
        .map(|position| {
            workload::spawn_follower(
                format!("follow-{}", position + 1),
                members.clone(),
                position,
                addrs.clone(),
                recorder.clone(),
                stop.clone(),
            )
        })
        .collect();
    consumers.push(workload::spawn_cli_follower(
        "cli-follow".into(),
        members.clone(),
        recorder.clone(),
        stop.clone(),
    ));
    consumers.push(spawn_scanner(
        members.clone(),
        addrs.clone(),
        recorder.clone(),
        options.seed,
        stop.clone(),
    ));
    // Let the load start before the first fault.
    let load_deadline = Instant::now() + Duration::from_secs(30);
    while recorder.acked().0 < 200 && Instant::now() < load_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    let mut kinds_run = Vec::new();
    match &options.schedule {
        Schedule::Fixed(kinds) => {
            for &kind in kinds {
                run_one(&mut nemesis, kind).await;
                kinds_run.push(kind);
            }
        }
        Schedule::Random { minutes } => {
            let until = started + Duration::from_secs_f64(minutes * 60.0);
            // Bounded in count too: no fault takes less than a second.
            let faults_max = (minutes * 60.0) as usize + 1;
            while Instant::now() < until && kinds_run.len() < faults_max {
                let kind = FaultKind::pick(&mut nemesis.rng);
                run_one(&mut nemesis, kind).await;
                kinds_run.push(kind);
            }
        }
    }
    let fault_time = started.elapsed();
    nemesis.heal_all();

    // The end: stop sending, let publishers finish their retries, then
    // read every member's whole log.
    let _ = stop_tx.send(true);
    let mut unacked = 0;
    for publisher in publishers {
        unacked += publisher.await.unwrap_or(0);
    }
    let (_, acked_max) = recorder.acked();
    let read_max = recorder
        .snapshot()
        .events
        .iter()
        .filter_map(|event| match event.op {
            history::Op::Read { index, .. } => Some(index),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let target = acked_max.max(read_max);
    let member_ids: Vec<u64> = nemesis.members.iter().copied().collect();
    for &id in &member_ids {
        final_read(&nemesis, id, target, &recorder).await;
    }
    for consumer in consumers {
        let _ = consumer.await;
    }
    let exited = nemesis.cluster.exited();
    for (id, status) in exited {
        recorder.record(history::Op::Violation {
            reason: format!("node {id} exited on its own with {status}"),
        });
    }
    for &id in &member_ids {
        if let Some(status) = nemesis.cluster.terminate(id) {
            if !status.success() {
                recorder.record(history::Op::Violation {
                    reason: format!("node {id} exited with {status} on SIGTERM at the end"),
                });
            }
        }
    }
    for id in 1..=nemesis.cluster.slot_count() {
        let log = std::fs::read_to_string(nemesis.cluster.log_path(id)).unwrap_or_default();
        if let Some(line) = log.lines().find(|line| line.contains("panicked")) {
            recorder.record(history::Op::Violation {
                reason: format!("node {id} panicked: {line}"),
            });
        }
    }

    let history = recorder.snapshot();
    let report = checker::check(&history);
    let done = nemesis.done.clone();
    let skipped = nemesis.skipped.clone();
    let notes = nemesis.notes.clone();
    drop(nemesis);
    eprintln!("[faults] ===== seed {} =====", options.seed);
    eprintln!(
        "[faults] {} faults in {:.1} min: {done:?}",
        kinds_run.len(),
        fault_time.as_secs_f64() / 60.0
    );
    if !skipped.is_empty() {
        eprintln!("[faults] skipped: {skipped:?}");
    }
    for note in &notes {
        eprintln!("[faults] note: {note}");
    }
    eprintln!("[faults] {unacked} records still unacknowledged when publishers gave up");
    print_availability(&history);
    eprintln!("[faults] {}", report.summary());
    if !report.is_ok() {
        // Keep the nodes' logs for triage.
        let kept = cluster.keep_files();
        panic!(
            "the fault suite found {} violation(s) with seed {} (node logs kept in {}); \
             replay: RAFTLOG_FAULT_SEED={} cargo test --profile ci --test fault_suite -- --nocapture",
            report.violations.len(),
            options.seed,
            kept.display(),
            options.seed
        );
    }
}

async fn run_one(nemesis: &mut Nemesis<'_>, kind: FaultKind) {
    if let Err(reason) = nemesis.run(kind).await {
        eprintln!("[faults] skipped {}: {reason}", kind.name());
        *nemesis.skipped.entry(kind.name()).or_default() += 1;
        nemesis.heal_all();
    }
    // A moment of calm between faults, so each one starts from a cluster
    // with a leader and a flowing log.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn print_availability(history: &history::History) {
    let figures = checker::availability(history);
    let mut by_kind: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    let mut none = 0;
    for (kind, recovered) in &figures {
        match recovered {
            Some(duration) => by_kind.entry(kind).or_default().push(*duration),
            None => none += 1,
        }
    }
    let all: Vec<Duration> = by_kind.values().flatten().copied().collect();
    for (kind, durations) in by_kind.iter().chain([(&"all leader losses", &all)]) {
        if let Some((median, max)) = checker::median_and_max(durations) {
            eprintln!(
                "[faults] availability {kind}: {} trials, fault to next new commit median {:.0} ms, max {:.0} ms",
                durations.len(),
                median.as_secs_f64() * 1000.0,
                max.as_secs_f64() * 1000.0
            );
        }
    }
    if none > 0 {
        eprintln!("[faults] availability: {none} leader losses with no later commit");
    }
}

/// Scans a random member's log from the start every [`SCAN_EVERY`].
fn spawn_scanner(
    members: Members,
    addrs: Arc<std::collections::BTreeMap<String, u64>>,
    recorder: Recorder,
    seed: u64,
    mut stop: workload::Stop,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = SplitMix64::new(seed ^ 0x5ca9);
        for scan in 0u64.. {
            tokio::select! {
                _ = tokio::time::sleep(SCAN_EVERY) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let candidates = members.addrs(0);
            if candidates.is_empty() {
                continue;
            }
            let addr = candidates[rng.range(0, candidates.len() as u64) as usize].clone();
            let mut config = members.config(0);
            config.cluster = vec![addr];
            // A scan of a dead or cut-off node fails: what it read counts.
            let _ = workload::scan(&format!("scan-{scan}"), config, &addrs, &recorder).await;
        }
    })
}

/// Reads node `id`'s whole log once it reaches `target`, as a final read.
async fn final_read(nemesis: &Nemesis<'_>, id: u64, target: LogIndex, recorder: &Recorder) {
    let config = nemesis.cluster.client_config(&[id]);
    let deadline = Instant::now() + FINAL_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match workload::scan_quietly(config.clone()).await {
            Ok(records) if records.last().is_some_and(|record| record.index >= target) => {
                let name = format!("final-node-{id}");
                recorder.mark_final(&name);
                recorder.record_all(records.into_iter().map(|record| history::Op::Read {
                    consumer: name.clone(),
                    node: id,
                    index: record.index,
                    data: record.data,
                }));
                return;
            }
            Ok(records) => {
                last = format!(
                    "it serves up to index {:?}",
                    records.last().map(|record| record.index)
                )
            }
            Err(error) => last = error,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    recorder.record(history::Op::Violation {
        reason: format!(
            "node {id} did not serve its log up to index {target} within {FINAL_WAIT:?} \
             after every fault healed; last: {last}"
        ),
    });
}
