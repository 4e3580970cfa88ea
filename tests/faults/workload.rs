//! The clients: publishers with producer ids that retry through faults,
//! consumers that follow the tail (library and CLI), and scans from the
//! start. Each records what it did and saw in the [`Recorder`].

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use raftlog::client::{
    ClientConfig, ClientError, Consumer, ConsumerOptions, Publisher, PublisherOptions, StartFrom,
};
use raftlog::types::AppendedIndexes;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::cluster::CLIENT_REQUEST_TIMEOUT;
use super::history::{payload, LogIndex, NodeId, Op, Recorder};

/// Batches a publisher has in flight at once.
pub const PUBLISH_WINDOW: usize = 4;
/// Records per append: 1 to this many.
pub const BATCH_RECORDS_MAX: u64 = 4;
/// How long publishers keep retrying their unacknowledged batches after
/// the run stopped sending (every fault is healed by then).
pub const DRAIN_WAIT: Duration = Duration::from_secs(60);
/// Pause between reconnect attempts of the suite's client loops.
pub const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Bound on one scan from the start.
pub const SCAN_WAIT: Duration = Duration::from_secs(20);

/// The current members' addresses, kept up to date by the nemesis (nodes
/// come and go), so a client that reconnects finds the cluster as it is now.
#[derive(Clone)]
pub struct Members {
    addrs: Arc<RwLock<Vec<String>>>,
    /// Bumped by every `set`, so a long-lived CLI consumer can restart
    /// with the new list before every node it knows has left.
    version: Arc<AtomicU64>,
    tls_dir: PathBuf,
}

impl Members {
    pub fn new(addrs: Vec<String>, tls_dir: PathBuf) -> Members {
        Members {
            addrs: Arc::new(RwLock::new(addrs)),
            version: Arc::new(AtomicU64::new(0)),
            tls_dir,
        }
    }

    pub fn set(&self, addrs: Vec<String>) {
        *self
            .addrs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = addrs;
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// The members, starting at the `rotate`-th (so clients spread out).
    pub fn addrs(&self, rotate: usize) -> Vec<String> {
        let mut addrs = self
            .addrs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if !addrs.is_empty() {
            let by = rotate % addrs.len();
            addrs.rotate_left(by);
        }
        addrs
    }

    pub fn config(&self, rotate: usize) -> ClientConfig {
        ClientConfig {
            cluster: self.addrs(rotate),
            tls_dir: self.tls_dir.clone(),
            request_timeout: CLIENT_REQUEST_TIMEOUT,
        }
    }

    pub fn cli_flags(&self, rotate: usize) -> Vec<String> {
        vec![
            "--cluster".into(),
            self.addrs(rotate).join(","),
            "--tls-dir".into(),
            self.tls_dir.display().to_string(),
        ]
    }
}

/// Stops every client task: `true` once the run is over.
pub type Stop = watch::Receiver<bool>;

async fn stopped(stop: &mut Stop) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

fn is_stopped(stop: &Stop) -> bool {
    *stop.borrow()
}

/// One publisher: `producer_id`, sequences from 0, a new batch of 1 to
/// [`BATCH_RECORDS_MAX`] records every `pace`, at most [`PUBLISH_WINDOW`]
/// in flight. After any failure it reconnects with the same producer id
/// and resends every unacknowledged batch, as a restarted client would
/// (`--producer-id` with `--first-seq`). Returns the number of records
/// still unacknowledged when it gave up (0 normally).
pub fn spawn_publisher(
    members: Members,
    producer_id: u64,
    pace: Duration,
    recorder: Recorder,
    mut stop: Stop,
) -> JoinHandle<usize> {
    tokio::spawn(async move {
        let mut next_sequence = 0u64;
        // Batches not yet acknowledged, oldest first: (first sequence, records).
        let mut unacked: VecDeque<(u64, Vec<Bytes>)> = VecDeque::new();
        let mut drain_deadline = None;
        loop {
            if is_stopped(&stop) {
                let deadline =
                    *drain_deadline.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_WAIT);
                if unacked.is_empty() || tokio::time::Instant::now() >= deadline {
                    return unacked.iter().map(|(_, records)| records.len()).sum();
                }
            }
            let first_sequence = unacked.front().map_or(next_sequence, |(first, _)| *first);
            let options = PublisherOptions {
                producer_id: Some(producer_id),
                first_sequence,
                inflight_max: PUBLISH_WINDOW,
            };
            let config = members.config(producer_id as usize);
            let mut publisher = match Publisher::connect(config, options).await {
                Ok(publisher) => publisher,
                Err(_) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            let mut window: VecDeque<JoinHandle<Result<AppendedIndexes, ClientError>>> =
                VecDeque::new();
            let mut failed = false;
            for (first, records) in unacked.clone() {
                match send(&mut publisher, producer_id, first, records, &recorder).await {
                    Some(handle) => window.push_back(handle),
                    None => failed = true,
                }
            }
            while !failed {
                // Collect what was answered, oldest first.
                while window.front().is_some_and(|handle| handle.is_finished()) {
                    let Some(handle) = window.pop_front() else {
                        break;
                    };
                    match handle.await {
                        Ok(Ok(_)) => {
                            unacked.pop_front();
                        }
                        _ => failed = true,
                    }
                }
                if failed {
                    break;
                }
                let stopping = is_stopped(&stop);
                if window.len() >= PUBLISH_WINDOW || (stopping && !window.is_empty()) {
                    // Wait for the oldest answer.
                    let Some(handle) = window.pop_front() else {
                        break;
                    };
                    match handle.await {
                        Ok(Ok(_)) => {
                            unacked.pop_front();
                        }
                        _ => failed = true,
                    }
                    continue;
                }
                if stopping {
                    break; // drained
                }
                tokio::select! {
                    _ = tokio::time::sleep(pace) => {}
                    _ = stopped(&mut stop) => continue,
                }
                let count = 1 + (next_sequence * 7 + producer_id) % BATCH_RECORDS_MAX;
                let records: Vec<Bytes> = (next_sequence..next_sequence + count)
                    .map(|sequence| payload(producer_id, sequence))
                    .collect();
                recorder.record_all(records.iter().enumerate().map(|(offset, data)| Op::Invoke {
                    id: (producer_id, next_sequence + offset as u64),
                    data: data.clone(),
                }));
                unacked.push_back((next_sequence, records.clone()));
                let first = next_sequence;
                next_sequence += count;
                match send(&mut publisher, producer_id, first, records, &recorder).await {
                    Some(handle) => window.push_back(handle),
                    None => failed = true,
                }
            }
            // The publisher's task ended with the failure; the handles left
            // in the window record their own failures.
            drop(publisher);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    })
}

/// Sends one batch; the returned task records its acknowledgement (or
/// failure) the moment it comes, so availability is timed exactly.
async fn send(
    publisher: &mut Publisher,
    producer_id: u64,
    first_sequence: u64,
    records: Vec<Bytes>,
    recorder: &Recorder,
) -> Option<JoinHandle<Result<AppendedIndexes, ClientError>>> {
    let count = records.len() as u64;
    let ids = move || (first_sequence..first_sequence + count).map(move |seq| (producer_id, seq));
    let ticket = match publisher.send(records).await {
        Ok(ticket) => ticket,
        Err(error) => {
            let reason = error.to_string();
            recorder.record_all(ids().map(|id| Op::Fail {
                id,
                reason: reason.clone(),
            }));
            return None;
        }
    };
    let recorder = recorder.clone();
    Some(tokio::spawn(async move {
        let result = ticket.await;
        match &result {
            Ok(range) => recorder.record_all(
                ids()
                    .zip(range.clone())
                    .map(|(id, index)| Op::Ack { id, index }),
            ),
            Err(error) => {
                let reason = error.to_string();
                recorder.record_all(ids().map(|id| Op::Fail {
                    id,
                    reason: reason.clone(),
                }))
            }
        }
        result
    }))
}

fn record_batch(
    recorder: &Recorder,
    name: &str,
    consumer: &Consumer,
    addrs: &BTreeMap<String, NodeId>,
    records: Vec<raftlog::client::Record>,
) {
    let node = consumer
        .node()
        .and_then(|addr| addrs.get(addr).copied())
        .unwrap_or(0);
    let skip = consumer.skipped().map(|range| Op::Skip {
        consumer: name.to_string(),
        node,
        first: *range.start(),
        last: *range.end(),
    });
    recorder.record_all(
        skip.into_iter()
            .chain(records.into_iter().map(|record| Op::Read {
                consumer: name.to_string(),
                node,
                index: record.index,
                data: record.data,
            })),
    );
}

/// A library consumer following the tail from the start, trying the
/// members in order from the `rotate`-th (so it reads from that one while
/// it lives).
/// After an error it reconnects from its cursor: one consumer, one history.
pub fn spawn_follower(
    name: String,
    members: Members,
    rotate: usize,
    addrs: Arc<BTreeMap<String, NodeId>>,
    recorder: Recorder,
    mut stop: Stop,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut cursor = StartFrom::Start;
        while !is_stopped(&stop) {
            let options = ConsumerOptions {
                from: cursor,
                follow: true,
            };
            let mut consumer = match Consumer::connect(members.config(rotate), options).await {
                Ok(consumer) => consumer,
                Err(_) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            loop {
                let batch = tokio::select! {
                    batch = consumer.next_batch() => batch,
                    _ = stopped(&mut stop) => return,
                };
                match batch {
                    Ok(Some(records)) => record_batch(&recorder, &name, &consumer, &addrs, records),
                    Ok(None) | Err(_) => break,
                }
            }
            cursor = consumer.cursor();
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    })
}

/// Reads node `id`'s log from its start up to the commit index it has now
/// (non-following), recording every record under `name`; returns the
/// number of records read, or why it stopped.
pub async fn scan(
    name: &str,
    config: ClientConfig,
    addrs: &BTreeMap<String, NodeId>,
    recorder: &Recorder,
) -> Result<Vec<LogIndex>, String> {
    let read = async {
        let options = ConsumerOptions {
            from: StartFrom::Start,
            follow: false,
        };
        let mut consumer = Consumer::connect(config, options)
            .await
            .map_err(|error| error.to_string())?;
        let mut indexes = Vec::new();
        while let Some(records) = consumer
            .next_batch()
            .await
            .map_err(|error| error.to_string())?
        {
            indexes.extend(records.iter().map(|record| record.index));
            record_batch(recorder, name, &consumer, addrs, records);
        }
        Ok(indexes)
    };
    tokio::time::timeout(SCAN_WAIT, read)
        .await
        .map_err(|_| format!("no end within {SCAN_WAIT:?}"))?
}

/// Reads a node's whole log without recording it (to wait for it to catch up).
pub async fn scan_quietly(config: ClientConfig) -> Result<Vec<raftlog::client::Record>, String> {
    let read = async {
        let options = ConsumerOptions {
            from: StartFrom::Start,
            follow: false,
        };
        let mut consumer = Consumer::connect(config, options)
            .await
            .map_err(|error| error.to_string())?;
        let mut all = Vec::new();
        while let Some(records) = consumer
            .next_batch()
            .await
            .map_err(|error| error.to_string())?
        {
            all.extend(records);
        }
        Ok(all)
    };
    tokio::time::timeout(SCAN_WAIT, read)
        .await
        .map_err(|_| format!("no end within {SCAN_WAIT:?}"))?
}

/// `raftlog consume --follow --output json` as a child process, restarted
/// from the index after its last record whenever it exits. The CLI does
/// not say which node a record came from: node 0.
pub fn spawn_cli_follower(
    name: String,
    members: Members,
    recorder: Recorder,
    mut stop: Stop,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut next: Option<LogIndex> = None;
        while !is_stopped(&stop) {
            let from = next.map_or("start".to_string(), |index| index.to_string());
            let version = members.version();
            let mut command = tokio::process::Command::new(super::cluster::RAFTLOG);
            command
                .args(["consume", "--from", &from, "--follow", "--output", "json"])
                // Leave a dead node as quickly as the library clients do.
                .args(["--timeout-ms", "2000"])
                .args(members.cli_flags(0))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            let Ok(mut child) = command.spawn() else {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            };
            let Some(stdout) = child.stdout.take() else {
                continue;
            };
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let mut check = tokio::time::interval(Duration::from_millis(500));
            loop {
                let line = tokio::select! {
                    line = lines.next_line() => line,
                    _ = stopped(&mut stop) => return, // kill_on_drop ends the child
                    _ = check.tick() => {
                        if members.version() != version {
                            break; // restart with the current members
                        }
                        continue;
                    }
                };
                let Ok(Some(line)) = line else { break };
                let Ok(object) = serde_json::from_str::<serde_json::Value>(&line) else {
                    recorder.record(Op::Violation {
                        reason: format!(
                            "{name}: consume printed a line that is not JSON: {line:?}"
                        ),
                    });
                    continue;
                };
                let (Some(index), Some(data)) = (object["index"].as_u64(), object["data"].as_str())
                else {
                    recorder.record(Op::Violation {
                        reason: format!("{name}: consume printed {line:?}"),
                    });
                    continue;
                };
                next = Some(index + 1);
                recorder.record(Op::Read {
                    consumer: name.clone(),
                    node: 0,
                    index,
                    data: Bytes::from(data.to_string()),
                });
            }
            let _ = child.kill().await;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    })
}

/// `raftlog publish --producer-id P --output json` as one long-lived child
/// process, fed a record every `pace` on stdin and read back one index per
/// record, as a user's `tail -f app.log | raftlog publish` runs. Faults are
/// routine events for it: the process must neither exit nor lose a record
/// through them, so an early or failed exit is a violation. It is replaced
/// (stdin closed, exit 0 awaited, a new one from the next sequence) only
/// when the members change, as an operator would roll its `--cluster`.
/// Returns the records still unacknowledged at the end (0 normally).
pub fn spawn_cli_publisher(
    members: Members,
    producer_id: u64,
    pace: Duration,
    recorder: Recorder,
    mut stop: Stop,
) -> JoinHandle<usize> {
    use tokio::io::AsyncWriteExt;
    tokio::spawn(async move {
        let mut next_sequence = 0u64;
        // Sequences written to the current process and not yet acknowledged.
        let mut unacked: VecDeque<u64> = VecDeque::new();
        loop {
            let version = members.version();
            let mut command = tokio::process::Command::new(super::cluster::RAFTLOG);
            command
                .args(["publish", "--producer-id", &producer_id.to_string()])
                .args(["--first-seq", &next_sequence.to_string()])
                .args([
                    "--output",
                    "json",
                    "--inflight",
                    &PUBLISH_WINDOW.to_string(),
                ])
                .args(members.cli_flags(producer_id as usize))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let Ok(mut child) = command.spawn() else {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            };
            let (Some(stdin), Some(stdout), Some(mut stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return unacked.len();
            };
            let stderr_text = tokio::spawn(async move {
                let mut text = String::new();
                let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
                text
            });
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let mut tick = tokio::time::interval(pace);
            let mut closing = false;
            // Dropped to close the pipe (tokio's shutdown of a child's stdin
            // does not close it, so the process would never see the end).
            let mut stdin = Some(stdin);
            // Set when closing starts: how long the process may take to
            // commit what it read and exit.
            let mut drain_deadline: Option<tokio::time::Instant> = None;
            let outcome = loop {
                if closing && drain_deadline.is_none() {
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_WAIT);
                }
                if closing {
                    // Closing stdin asks the process to finish: it exits once
                    // every record it read is committed.
                    stdin = None;
                }
                tokio::select! {
                    line = lines.next_line() => match line {
                        Ok(Some(line)) => {
                            let index = serde_json::from_str::<serde_json::Value>(&line)
                                .ok()
                                .and_then(|object| object["index"].as_u64());
                            match (index, unacked.pop_front()) {
                                (Some(index), Some(sequence)) => recorder.record(Op::Ack {
                                    id: (producer_id, sequence),
                                    index,
                                }),
                                _ => recorder.record(Op::Violation {
                                    reason: format!(
                                        "cli publisher {producer_id} printed {line:?} with {} records unacknowledged",
                                        unacked.len()
                                    ),
                                }),
                            }
                        }
                        // stdout closed: the process is exiting.
                        _ => break child.wait().await.ok(),
                    },
                    _ = tick.tick(), if !closing => {
                        if is_stopped(&stop) || members.version() != version {
                            closing = true;
                            continue;
                        }
                        let data = payload(producer_id, next_sequence);
                        recorder.record(Op::Invoke {
                            id: (producer_id, next_sequence),
                            data: data.clone(),
                        });
                        let mut line = data.to_vec();
                        line.push(b'\n');
                        let written = match stdin.as_mut() {
                            Some(pipe) => pipe.write_all(&line).await.is_ok() && pipe.flush().await.is_ok(),
                            None => false,
                        };
                        if !written {
                            // The process is gone; its exit is judged below.
                            closing = true;
                        }
                        unacked.push_back(next_sequence);
                        next_sequence += 1;
                    }
                    _ = stopped(&mut stop), if !closing => closing = true,
                    _ = tokio::time::sleep_until(drain_deadline.unwrap_or_else(tokio::time::Instant::now)), if drain_deadline.is_some() => {
                        let _ = child.kill().await;
                        break None;
                    }
                }
            };
            let stderr = stderr_text.await.unwrap_or_default();
            let clean = outcome.is_some_and(|status| status.success()) && unacked.is_empty();
            if !clean {
                let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
                recorder.record(Op::Violation {
                    reason: format!(
                        "cli publisher {producer_id} ended with {outcome:?} and {} records unacknowledged (a routine fault must not end it): {}",
                        unacked.len(),
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                });
            }
            if is_stopped(&stop) {
                return unacked.len();
            }
            // Unacknowledged records of a process that died are resent by
            // the next one from their sequence: the cluster answers those it
            // has with their original indexes.
            if let Some(&first) = unacked.front() {
                next_sequence = first;
            }
            unacked.clear();
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    })
}
