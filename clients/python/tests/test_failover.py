"""A follow consumer and a publisher across a leadership transfer."""

import threading
import time

import raftlog


def wait_leader_is(client, node, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.status()["leader"] == node:
                return
        except raftlog.UnavailableError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"node {node} did not become leader within {timeout} s")


def transfer(admin, target, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin.transfer_leader(target)
        except raftlog.RaftlogError as error:
            # Another change in progress, or no leader for a moment: retry.
            if not error.retryable or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_follow_consumer_across_a_leadership_transfer(cluster, client):
    status = client.status()
    leader = status["leader"]
    target = next(node["id"] for node in status["nodes"] if node["id"] != leader)
    got, failures = [], []
    with client.publisher() as pub:
        start = pub.append(b"ft-start")

        def follow():
            try:
                for record in client.consume(start=start, follow=True, limit=2001):
                    got.append(record)
            except Exception as error:  # reported by the main thread
                failures.append(error)

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        futures = [pub.append_nowait(b"ft-a-%04d" % i) for i in range(1000)]
        membership = transfer(cluster.client(admin=True), target)
        assert {node["id"] for node in membership} == set(cluster.addrs)
        futures += [pub.append_nowait(b"ft-b-%04d" % i) for i in range(1000)]
        indexes = [future.result(timeout=60) for future in futures]
    wait_leader_is(client, target)
    thread.join(60)
    assert not thread.is_alive(), f"the follow consumer got {len(got)} of 2001 records"
    assert failures == []
    assert [r.data for r in got] == [b"ft-start"] + [b"ft-a-%04d" % i for i in range(1000)] + [
        b"ft-b-%04d" % i for i in range(1000)]
    assert [r.index for r in got[1:]] == indexes
