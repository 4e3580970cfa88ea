#!/usr/bin/env python3
"""Throughput of the Python client: ``append_nowait`` with N records in
flight, then ``consume`` of what was appended (and, for comparison,
blocking ``append_many`` calls of N records each).

Against a running cluster (``--cluster``/``--tls-dir``, or
``RAFTLOG_CLUSTER``/``RAFTLOG_TLS_DIR``), or, with ``--raftlog BIN``, against
a ``raftlog dev`` cluster it starts in a temp dir and stops at the end:

    python clients/python/bench.py --raftlog target/release/raftlog

Compare with ``raftlog bench --embedded --nodes 3 --size 100`` on the same
machine (same cluster shape: 3 local nodes, fsync always).
"""

import argparse
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

import raftlog


def free_base_port(count):
    """A port P with P..P+count-1 all free for UDP on 127.0.0.1."""
    for _ in range(100):
        base = random.randint(20000, 60000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise SystemExit("no free run of UDP ports on 127.0.0.1")


class DevCluster:
    """``raftlog dev`` in a temp dir, stopped (SIGINT, then SIGKILL) on exit."""

    def __init__(self, binary, nodes):
        self.dir = tempfile.TemporaryDirectory(prefix="raftlog-bench-py-")
        base = free_base_port(nodes)
        self.cluster = ",".join(f"127.0.0.1:{base + i}" for i in range(nodes))
        self.tls_dir = os.path.join(self.dir.name, "tls")
        self.log = open(os.path.join(self.dir.name, "dev.log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "dev", "--nodes", str(nodes), "--dir", self.dir.name,
             "--base-port", str(base)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)

    def wait_leader(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"raftlog dev exited with {self.proc.returncode}")
            try:
                if os.path.exists(os.path.join(self.tls_dir, "admin.key")):
                    client = raftlog.Client(self.cluster, self.tls_dir, timeout=1.0)
                    if client.status()["leader"] is not None:
                        return
            except raftlog.RaftlogError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"no leader within {timeout} s")

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.dir.cleanup()


def publish(client, records, size, in_flight):
    payload = os.urandom(size)
    pending = collections.deque()
    first = None
    started = time.perf_counter()
    with client.publisher(max_in_flight=in_flight) as pub:
        for n in range(records):
            if len(pending) >= in_flight:
                index = pending.popleft().result()
                if first is None:
                    first = index
            pending.append(pub.append_nowait(payload))
        while pending:
            index = pending.popleft().result()
            if first is None:
                first = index
    return first, time.perf_counter() - started


def publish_many(client, records, size, batch):
    """append_many in batches of `batch`, one at a time (for comparison)."""
    payload = os.urandom(size)
    started = time.perf_counter()
    with client.publisher() as pub:
        for start in range(0, records, batch):
            pub.append_many([payload] * min(batch, records - start))
    return time.perf_counter() - started


def consume(client, first, records):
    count = size = 0
    started = time.perf_counter()
    # Follows with a limit: a follower may learn of the last commit a
    # moment after the publisher did.
    for record in client.consume(start=first, follow=True, limit=records):
        count += 1
        size += len(record.data)
    elapsed = time.perf_counter() - started
    if count != records:
        raise SystemExit(f"consumed {count} of {records} records")
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raftlog", help="start `BIN dev` and benchmark against it")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--cluster", default=os.environ.get("RAFTLOG_CLUSTER"))
    parser.add_argument("--tls-dir", default=os.environ.get("RAFTLOG_TLS_DIR"))
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100, help="bytes per record")
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--output", choices=["text", "json"], default="text")
    args = parser.parse_args()

    dev = None
    if args.raftlog:
        dev = DevCluster(args.raftlog, args.nodes)
        cluster, tls_dir = dev.cluster, dev.tls_dir
    elif args.cluster and args.tls_dir:
        cluster, tls_dir = args.cluster, args.tls_dir
    else:
        parser.error("give --raftlog BIN, or --cluster and --tls-dir")
    try:
        if dev:
            dev.wait_leader()
        client = raftlog.Client(cluster, tls_dir)
        first, publish_seconds = publish(client, args.records, args.size, args.in_flight)
        consume_seconds = consume(client, first, args.records)
        many_seconds = publish_many(client, args.records, args.size, args.in_flight)
    finally:
        if dev:
            dev.close()
    mb = args.records * args.size / 1e6
    result = {
        "records": args.records,
        "size": args.size,
        "in_flight": args.in_flight,
        "publish_seconds": round(publish_seconds, 3),
        "publish_records_per_sec": round(args.records / publish_seconds),
        "publish_mb_per_sec": round(mb / publish_seconds, 2),
        "consume_seconds": round(consume_seconds, 3),
        "consume_records_per_sec": round(args.records / consume_seconds),
        "consume_mb_per_sec": round(mb / consume_seconds, 2),
        "append_many_batch": args.in_flight,
        "append_many_records_per_sec": round(args.records / many_seconds),
        "python": sys.version.split()[0],
    }
    if args.output == "json":
        print(json.dumps(result))
    else:
        print(f"append_nowait: {result['publish_records_per_sec']:,} records/s "
              f"({result['publish_mb_per_sec']} MB/s), {args.records:,} records of "
              f"{args.size} B with {args.in_flight} in flight, {publish_seconds:.2f} s")
        print(f"consume:       {result['consume_records_per_sec']:,} records/s "
              f"({result['consume_mb_per_sec']} MB/s), {consume_seconds:.2f} s")
        print(f"append_many:   {result['append_many_records_per_sec']:,} records/s in blocking "
              f"batches of {args.in_flight}, {many_seconds:.2f} s")


if __name__ == "__main__":
    main()
