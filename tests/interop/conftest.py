"""A real local 3-node cluster of `raftlog serve` processes for the interop
test: certificates from `raftlog certs`, free UDP ports on 127.0.0.1, one
data directory and log file per node under a temp dir. The binary is
$RAFTLOG_BIN (tests/interop.rs passes the one cargo built)."""

import os
import random
import socket
import subprocess
import tempfile
import time

import pytest

RECORD_BYTES_MAX = 64 * 1024  # --max-record-bytes of every node


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

    def path(self, name):
        return os.path.join(self.tls, name)

    def start(self, node):
        args = [self.binary, "serve", "--id", str(node), "--listen", self.addrs[node],
                "--data-dir", os.path.join(self.root, f"node-{node}"), "--tls-dir", self.tls,
                "--max-record-bytes", str(RECORD_BYTES_MAX)]
        for peer, addr in self.addrs.items():
            if peer != node:
                args += ["--peer", f"{peer}={addr}"]
        log = open(os.path.join(self.root, f"node-{node}.log"), "ab")
        self.procs[node] = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=log)

    def stop(self, node, sig=15, timeout=10):
        proc = self.procs.pop(node)
        proc.send_signal(sig)
        return proc.wait(timeout)

    def log(self, node):
        with open(os.path.join(self.root, f"node-{node}.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def close(self):
        for proc in self.procs.values():
            proc.kill()
            proc.wait()
        self.procs.clear()


@pytest.fixture(scope="session")
def cluster():
    binary = os.environ.get("RAFTLOG_BIN")
    if not binary:
        pytest.fail("RAFTLOG_BIN must name the raftlog binary (tests/interop.rs sets it)")
    with tempfile.TemporaryDirectory(prefix="raftlog-interop-") as root:
        c = Cluster(binary, root)
        for node in c.addrs:
            c.start(node)
        time.sleep(0.2)
        try:
            yield c
        finally:
            c.close()
