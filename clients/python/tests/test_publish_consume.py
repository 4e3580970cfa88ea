"""Publishing and consuming through the Rust client: the 100,000-record
round trip, the blocking and non-blocking appends, status."""

import concurrent.futures
import json
import time

import raftlog
from conftest import read_back


def test_round_trip_of_100000_records(client):
    records = [b"rt-%06d" % i for i in range(100_000)]
    with client.publisher() as pub:
        futures = [pub.append_nowait(record) for record in records[:50_000]]
        indexes = [future.result(timeout=120) for future in futures]
        indexes += pub.append_many(records[50_000:])
    assert len(indexes) == 100_000
    assert indexes == sorted(set(indexes)), "one index per record, increasing in append order"
    got = read_back(client, indexes[0], 100_000)
    assert [record.index for record in got] == indexes
    assert [record.data for record in got] == records


def test_append_returns_the_committed_index(client):
    with client.publisher() as pub:
        assert isinstance(pub, raftlog.Publisher)
        assert pub.producer_id & 1 == 1, "a random producer id"
        first = pub.append(b"one record")
        assert isinstance(first, int) and first >= 1
        many = pub.append_many([b"a", bytearray(b"b"), memoryview(b"c")])
        assert len(many) == 3 and first < many[0] < many[1] < many[2]
        assert pub.append_many([]) == []
        future = pub.append_nowait(b"d")
        assert isinstance(future, concurrent.futures.Future)
        assert future.cancel() is False, "a queued record cannot be taken back"
        last = future.result(timeout=30)
        assert last > many[2]
        assert pub.next_sequence == 5
    assert pub.closed
    got = read_back(client, first, 5)
    assert [(r.index, r.data) for r in got] == [
        (first, b"one record"), (many[0], b"a"), (many[1], b"b"), (many[2], b"c"), (last, b"d")]
    assert repr(got[0]) == f"Record(index={first}, data=b'one record')"
    assert got[0] == got[0] and got[0] != got[1]


def test_flush_resolves_every_future(client):
    with client.publisher() as pub:
        futures = [pub.append_nowait(b"fl-%d" % i) for i in range(2_000)]
        pub.flush()
        assert all(future.done() for future in futures)
        assert [f.result() for f in futures] == sorted(f.result() for f in futures)


def test_threads_may_share_a_publisher(client):
    with client.publisher() as pub:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: pub.append(b"th-%d" % i), range(200)))
    assert len(set(results)) == 200


def test_consume_without_follow_ends_at_the_commit_index(client):
    with client.publisher() as pub:
        pub.append(b"end-marker")
    assert list(client.consume(start="end")) == []
    with client.consume(start="start", limit=3) as consumer:
        assert len(list(consumer)) == 3
    consumer = client.consume(start="start", follow=True)
    next(consumer)
    consumer.close()
    assert list(consumer) == []


def test_status_is_the_cli_json(cluster, client):
    # Both views of a quiet cluster agree; retry while it is not quiet yet.
    for _ in range(20):
        status = client.status()
        run = cluster.cli("status", "--output", "json")
        assert run.returncode == 0, run.stderr
        if status == json.loads(run.stdout):
            break
        time.sleep(0.2)
    assert status == json.loads(run.stdout)
    assert status["leader"] in [node["id"] for node in status["nodes"]]
    assert set(status) == {"leader", "term", "commit_index", "log_start", "last_index", "nodes"}


def test_environment_gives_the_defaults(cluster, monkeypatch):
    monkeypatch.setenv("RAFTLOG_CLUSTER", cluster.cluster)
    monkeypatch.setenv("RAFTLOG_TLS_DIR", cluster.tls)
    client = raftlog.Client()
    assert client.cluster == list(cluster.addrs.values())
    assert client.status()["leader"] is not None


def wait_live_consumers(count, timeout=10):
    from raftlog import _raftlog

    deadline = time.monotonic() + timeout
    while _raftlog._live_consumers() != count:
        assert time.monotonic() < deadline, (
            f"{_raftlog._live_consumers()} consumers hold a stream, expected {count}")
        time.sleep(0.02)


def test_a_dropped_consumer_closes_its_stream(client):
    import asyncio
    import gc

    wait_live_consumers(0)
    consumer = client.consume(start="end", follow=True)
    wait_live_consumers(1)
    del consumer  # waiting for records that never come
    gc.collect()
    wait_live_consumers(0)

    async def dropped_while_waiting():
        records = client.async_consume(start="end", follow=True)
        try:
            await asyncio.wait_for(records.__anext__(), 0.2)
        except asyncio.TimeoutError:
            pass
        wait_live_consumers(1)

    asyncio.run(dropped_while_waiting())
    gc.collect()
    wait_live_consumers(0)
