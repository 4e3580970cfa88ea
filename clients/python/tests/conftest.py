"""A real local 3-node cluster of `raftlog serve` processes for the client
tests: certificates from `raftlog certs`, free UDP ports on 127.0.0.1, one
data directory and log file per node under a temp dir. The binary is
$RAFTLOG_BIN (tests/python_client.rs passes the one cargo built). Every
wait is bounded, and every process is stopped when the session ends, also
after a failure."""

import json
import os
import random
import socket
import subprocess
import tempfile
import time

import pytest

import raftlog

RECORD_BYTES_MAX = 64 * 1024  # --max-record-bytes of every node
LEADER_WAIT = 30.0  # seconds, generous for a loaded 2-core CI machine


def free_udp_ports(count):
    """`count` distinct ports free on 127.0.0.1 (UDP and TCP), from below the
    kernel's ephemeral range: a port read from a bind to port 0 can become a
    client's source port (clients bind 0.0.0.0:0) before a node binds it or
    while a stopped node is down. Same rule as tests/common/mod.rs."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_start, ephemeral_end = (int(b) for b in f.read().split()[:2])
    except (OSError, ValueError):
        ephemeral_start, ephemeral_end = 32768, 60999
    if ephemeral_start > 21000:
        low, high = 20000, ephemeral_start
    else:  # no room below the ephemeral range: above it
        low, high = max(ephemeral_end + 1, 20000), 65535
    if high - low < 1000:
        raise RuntimeError(f"the ephemeral range {ephemeral_start}..={ephemeral_end} leaves no ports")
    start = random.Random(os.getpid() ^ time.time_ns()).randrange(low, high)
    ports = []
    for offset in range(high - low):
        port = low + (start - low + offset) % (high - low)
        if all(_bindable(kind, port) for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"no {count} free ports on 127.0.0.1 in {low}..{high}")


def _bindable(kind, port):
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class Cluster:
    def __init__(self, binary, root, count=3):
        self.binary, self.root = binary, root
        self.tls = os.path.join(root, "tls")
        self.addrs = {i + 1: f"127.0.0.1:{port}" for i, port in enumerate(free_udp_ports(count))}
        self.procs = {}
        args = [binary, "certs", "--out", self.tls]
        for node in self.addrs:
            args += ["--node", f"{node}=127.0.0.1"]
        subprocess.run(args, check=True, capture_output=True, timeout=30)

    @property
    def cluster(self):
        return ",".join(self.addrs.values())

    def client(self, **kwargs):
        return raftlog.Client(cluster=self.cluster, tls_dir=self.tls, **kwargs)

    def start(self, node):
        args = [self.binary, "serve", "--id", str(node), "--listen", self.addrs[node],
                "--data-dir", os.path.join(self.root, f"node-{node}"), "--tls-dir", self.tls,
                "--max-record-bytes", str(RECORD_BYTES_MAX)]
        for peer, addr in self.addrs.items():
            if peer != node:
                args += ["--peer", f"{peer}={addr}"]
        with open(os.path.join(self.root, f"node-{node}.log"), "ab") as log:
            self.procs[node] = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=log)

    def cli(self, *args, timeout=30):
        """Runs a raftlog client subcommand against the cluster."""
        return subprocess.run([self.binary, *args, "--cluster", self.cluster, "--tls-dir", self.tls],
                              capture_output=True, timeout=timeout)

    def wait_leader(self, timeout=LEADER_WAIT):
        """The status once a leader is known (bounded)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            run = self.cli("status", "--output", "json", "--timeout-ms", "2000")
            if run.returncode == 0:
                status = json.loads(run.stdout)
                if status["leader"] is not None:
                    return status
            last = run.stderr.decode(errors="replace").strip()
            time.sleep(0.1)
        pytest.fail(f"no leader within {timeout} s; last: {last}\n{self.logs()}")

    def logs(self):
        out = []
        for node in self.addrs:
            path = os.path.join(self.root, f"node-{node}.log")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    tail = f.read()[-2000:].decode("utf-8", "replace")
                out.append(f"--- node {node} log (tail)\n{tail}")
        return "\n".join(out)

    def close(self):
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


@pytest.fixture(scope="session")
def cluster():
    binary = os.environ.get("RAFTLOG_BIN")
    if not binary:
        pytest.fail("RAFTLOG_BIN must name the raftlog binary (tests/python_client.rs sets it)")
    with tempfile.TemporaryDirectory(prefix="raftlog-python-") as root:
        c = Cluster(binary, root)
        try:
            for node in c.addrs:
                c.start(node)
            c.wait_leader()
            yield c
        finally:
            c.close()


@pytest.fixture
def client(cluster):
    return cluster.client()


def read_back(client, start, count, timeout=60.0):
    """The `count` records from index `start` on, with a bounded wait.

    It follows (with a limit) instead of stopping at the commit index: a
    consumer reads from any node, and a follower may learn of the last
    commit a moment after the publisher was told."""
    import threading

    got, failures = [], []

    def read():
        try:
            for record in client.consume(start=start, follow=True, limit=count):
                got.append(record)
        except Exception as error:  # re-raised below, in the test's thread
            failures.append(error)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout)
    if failures:
        raise failures[0]
    assert not thread.is_alive(), f"read {len(got)} of {count} records within {timeout} s"
    return got
