//! Running the built `raftlog` binary: bounded runs with captured output,
//! and guards that kill a long-running child (a `serve` or `dev`) on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test, built by cargo for this test profile.
pub const RAFTLOG: &str = env!("CARGO_BIN_EXE_raftlog");

/// A finished run: exit status and everything it printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// stdout as text (lossy) and as the raw bytes.
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
}

impl Finished {
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Fails the test unless the run exited 0.
    pub fn assert_success(&self, what: &str) -> &Finished {
        assert!(
            self.status.success(),
            "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Checks the CLI contract for a failure: a non-zero exit, exactly one
    /// `error: ...` line on stderr, and no Rust panic or debug formatting.
    /// Returns the error line.
    pub fn assert_clean_failure(&self, what: &str) -> String {
        assert!(
            !self.status.success(),
            "{what} should fail but exited 0\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        let error_lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|line| line.starts_with("error:"))
            .collect();
        assert_eq!(
            error_lines.len(),
            1,
            "{what}: expected exactly one `error:` line on stderr, got:\n{}",
            self.stderr
        );
        for forbidden in ["panicked", "RUST_BACKTRACE", "Error {", "Os {"] {
            assert!(
                !self.stderr.contains(forbidden),
                "{what}: stderr shows `{forbidden}` (a panic or debug formatting):\n{}",
                self.stderr
            );
        }
        error_lines[0].to_string()
    }
}

fn drain<R: Read + Send + 'static>(mut reader: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs `raftlog args...` with `stdin` as its input; kills it and fails the
/// test if it runs longer than `timeout`.
pub fn run(args: &[&str], stdin: &[u8], timeout: Duration) -> Finished {
    let mut command = Command::new(RAFTLOG);
    command.args(args);
    run_command(command, stdin, timeout)
}

/// Runs `command` (stdin fed with `stdin`, output captured), bounded by `timeout`.
pub fn run_command(mut command: Command, stdin: &[u8], timeout: Duration) -> Finished {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let description = format!("{command:?}");
    let mut child = ChildGuard::spawn(command);
    let mut input = child.child.stdin.take().expect("stdin piped");
    let stdin = stdin.to_vec();
    // A writer thread, so a child that does not read cannot block the test.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let stdout = drain(child.child.stdout.take().expect("stdout piped"));
    let stderr = drain(child.child.stderr.take().expect("stderr piped"));
    let Some(status) = child.wait_timeout(timeout) else {
        child.kill();
        let stderr = stderr.join().unwrap_or_default();
        panic!(
            "{description} did not finish within {timeout:?}; stderr:\n{}",
            String::from_utf8_lossy(&stderr)
        )
    };
    let _ = writer.join();
    let stdout_bytes = stdout.join().unwrap_or_default();
    Finished {
        status,
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stdout_bytes,
        stderr: String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned(),
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    pub child: Child,
    reaped: bool,
}

impl ChildGuard {
    pub fn spawn(mut command: Command) -> ChildGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
        ChildGuard {
            child,
            reaped: false,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to the child.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) only sends a signal; the pid is our unreaped child,
        // so it cannot name another process.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "cannot signal pid {}", self.pid());
    }

    /// The exit status if the child exits within `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = true;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return None,
                Err(error) => panic!("cannot wait for pid {}: {error}", self.pid()),
            }
        }
    }

    /// Sends `signal` and waits (bounded) for the exit status.
    pub fn stop_with(&mut self, signal: i32, timeout: Duration) -> ExitStatus {
        self.signal(signal);
        match self.wait_timeout(timeout) {
            Some(status) => status,
            None => panic!(
                "pid {} did not exit within {timeout:?} after signal {signal}",
                self.pid()
            ),
        }
    }

    pub fn kill(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Lines of a child's stdout, read on a thread so they can be awaited with
/// a deadline.
pub struct LineReader {
    lines: mpsc::Receiver<String>,
}

impl LineReader {
    pub fn new(stdout: ChildStdout) -> LineReader {
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        LineReader { lines }
    }

    /// The next line, or `None` if none comes within `timeout` (or the
    /// stream ended).
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next `count` lines; fails the test if they do not all come
    /// within `timeout`.
    pub fn take(&self, count: usize, timeout: Duration, what: &str) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::with_capacity(count);
        while lines.len() < count {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(remaining) {
                Ok(line) => lines.push(line),
                Err(_) => panic!(
                    "{what}: got {} of {count} lines within {timeout:?}: {lines:?}",
                    lines.len()
                ),
            }
        }
        lines
    }
}

/// Three (or N) `raftlog serve` processes on free ports of 127.0.0.1, with
/// certificates from `raftlog certs`, each logging to a file in the temp
/// dir. Dropping it kills every process still running.
pub struct ServeCluster {
    pub dir: tempfile::TempDir,
    pub tls_dir: std::path::PathBuf,
    /// `ID=ADDR` of every node, in id order.
    pub addrs: Vec<(u64, String)>,
    extra_flags: Vec<String>,
    processes: std::collections::BTreeMap<u64, ChildGuard>,
}

impl ServeCluster {
    /// Writes certificates and starts `node_count` nodes; `extra_flags`
    /// go to every `serve` (e.g. `--segment-bytes`).
    pub fn start(node_count: u64, extra_flags: &[&str]) -> ServeCluster {
        let mut cluster = ServeCluster::prepare(node_count, extra_flags);
        for id in 1..=node_count {
            cluster.spawn(id, &[]);
        }
        cluster
    }

    /// Writes certificates and picks ports; starts nothing (see [`ServeCluster::spawn`]).
    pub fn prepare(node_count: u64, extra_flags: &[&str]) -> ServeCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls_dir = dir.path().join("tls");
        let ports = super::free_udp_ports(node_count as usize);
        let addrs: Vec<(u64, String)> = (1..=node_count)
            .zip(ports)
            .map(|(id, port)| (id, format!("127.0.0.1:{port}")))
            .collect();
        let mut certs = vec!["certs".to_string(), "--out".to_string()];
        certs.push(tls_dir.display().to_string());
        for (id, _) in &addrs {
            certs.push("--node".to_string());
            certs.push(format!("{id}=127.0.0.1"));
        }
        let certs: Vec<&str> = certs.iter().map(String::as_str).collect();
        run(&certs, b"", Duration::from_secs(30)).assert_success("raftlog certs");
        ServeCluster {
            dir,
            tls_dir,
            addrs,
            extra_flags: extra_flags.iter().map(|flag| flag.to_string()).collect(),
            processes: std::collections::BTreeMap::new(),
        }
    }

    pub fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn log_path(&self, id: u64) -> std::path::PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    /// The stderr of node `id` so far (for failure messages).
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// The process id of node `id`, while it runs (e.g. to read its
    /// `/proc/<pid>/status`).
    pub fn pid(&self, id: u64) -> Option<i32> {
        self.processes.get(&id).map(ChildGuard::pid)
    }

    /// Starts node `id` with the cluster's flags plus `more_flags`.
    pub fn spawn(&mut self, id: u64, more_flags: &[&str]) {
        assert!(!self.processes.contains_key(&id), "node {id} runs already");
        let listen = &self
            .addrs
            .iter()
            .find(|(node, _)| *node == id)
            .expect("known node")
            .1;
        let mut command = Command::new(RAFTLOG);
        command
            .arg("serve")
            .args(["--id", &id.to_string(), "--listen", listen])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .arg("--tls-dir")
            .arg(&self.tls_dir);
        for (peer, addr) in self.addrs.iter().filter(|(peer, _)| *peer != id) {
            command.args(["--peer", &format!("{peer}={addr}")]);
        }
        command.args(&self.extra_flags).args(more_flags);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("node log file");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        self.processes.insert(id, ChildGuard::spawn(command));
    }

    /// `--cluster A,B,C --tls-dir DIR`, ready to append to a client command.
    pub fn client_flags(&self) -> Vec<String> {
        vec![
            "--cluster".to_string(),
            self.cluster_arg(),
            "--tls-dir".to_string(),
            self.tls_dir.display().to_string(),
        ]
    }

    pub fn cluster_arg(&self) -> String {
        self.addrs
            .iter()
            .map(|(_, addr)| addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs a client subcommand against this cluster: `raftlog SUB <args> --cluster .. --tls-dir ..`.
    pub fn client(&self, args: &[&str], stdin: &[u8], timeout: Duration) -> Finished {
        let mut all: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        all.extend(self.client_flags());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run(&all, stdin, timeout)
    }

    /// Waits (bounded) until `status --output json` names a leader; returns the status.
    pub fn wait_leader(&self, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            let status = self.client(
                &["status", "--output", "json", "--timeout-ms", "2000"],
                b"",
                Duration::from_secs(30),
            );
            if status.status.success() {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&status.stdout) {
                    if json["leader"].is_u64() {
                        return json;
                    }
                }
                last = status.stdout;
            } else {
                last = status.stderr;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "no leader within {timeout:?}; last status: {last}\nnode 1 log:\n{}",
            self.log(1)
        );
    }

    /// Sends `signal` to node `id` without waiting (e.g. SIGHUP).
    pub fn signal(&self, id: u64, signal: i32) {
        self.processes
            .get(&id)
            .expect("running node")
            .signal(signal);
    }

    /// Sends `signal` to node `id` and waits (bounded) for its exit status.
    pub fn stop(&mut self, id: u64, signal: i32) -> ExitStatus {
        let mut process = self.processes.remove(&id).expect("running node");
        process.stop_with(signal, Duration::from_secs(20))
    }

    /// SIGTERMs every node and checks each exits 0.
    pub fn stop_all(&mut self) {
        let ids: Vec<u64> = self.processes.keys().copied().collect();
        for id in ids {
            let status = self.stop(id, libc::SIGTERM);
            assert!(
                status.success(),
                "node {id} exited with {status} on SIGTERM; log:\n{}",
                self.log(id)
            );
        }
    }
}
