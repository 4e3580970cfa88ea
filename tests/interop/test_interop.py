"""raftlog-client/1 against a real 3-node cluster, from a QUIC stack (aioquic)
and a client written from docs/protocol.md alone. Run by tests/interop.rs;
by hand: RAFTLOG_BIN=target/debug/raftlog python -m pytest tests/interop."""

import asyncio
import os
import random
import re
import subprocess
import time

import pytest

import raftlog_client as rc
from conftest import RECORD_BYTES_MAX

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "protocol.md")


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def config(cluster, identity="client", **kw):
    cert = cluster.path(f"{identity}.pem") if identity else None
    key = cluster.path(f"{identity}.key") if identity else None
    return rc.client_configuration(cluster.path("ca.pem"), cert, key, **kw)


async def find_leader(cluster, deadline_s=20.0):
    """Section 5.0: a node answering Status with a non-zero leader is the
    leader; a follower answers NotLeader naming it. Returns (id, addr, via):
    via is the follower whose NotLeader redirect named the leader, if any."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        for node, addr in cluster.addrs.items():
            try:
                async with rc.connect_node(addr, config(cluster)) as conn:
                    resp = await conn.request(rc.encode_status(), timeout=2)
            except Exception as error:  # a node still starting
                last = error
                continue
            if resp.type == rc.STATUS_RESP and resp.fields["leader"] == node:
                return node, addr
            if resp.type == rc.ERROR:
                last = resp.fields["error"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no leader within {deadline_s} s: {last}")


async def append_at_leader(cluster, records, producer=None):
    """Append on any node, following NotLeader redirects (5.1)."""
    addr = cluster.addrs[1]
    for _ in range(50):
        async with rc.connect_node(addr, config(cluster)) as conn:
            resp = await conn.request(rc.encode_append(records, producer))
        if resp.type != rc.ERROR:
            return resp
        error = resp.fields["error"]
        if error.code == rc.NOT_LEADER and error.fields["leader_addr"]:
            addr = error.fields["leader_addr"]
        elif error.retryable:
            await asyncio.sleep(0.05)
        else:
            return resp
    raise AssertionError("append was redirected 50 times")


async def consume_all(conn, start=rc.FROM_START, index=0, limit=None):
    """A non-following Consume: every batch until ConsumeEnd, checking the
    batch invariants of 4.3. Returns (records, end fields, batches)."""
    stream = conn.open_stream()
    stream.send_request(rc.encode_consume(start, index, follow=False, limit=limit))
    records, batches, expected_start = [], [], None
    while True:
        resp = await stream.response()
        if resp.type == rc.CONSUME_END:
            assert await stream.read_frame() is None, "ConsumeEnd is the last frame (FIN)"
            return records, resp.fields, batches
        assert resp.type == rc.RECORDS, resp
        f = resp.fields
        check_batch(f, expected_start)
        expected_start = f["next_index"]
        batches.append(f)
        records += f["records"]


def check_batch(f, expected_start):
    assert 1 <= f["start_index"] <= f["next_index"] <= f["commit_index"] + 1, f
    if expected_start is not None:
        assert f["start_index"] >= expected_start, f
    indexes = [i for i, _ in f["records"]]
    assert indexes == sorted(set(indexes)), f
    assert all(f["start_index"] <= i < f["next_index"] for i in indexes), f


# ------------------------------------------------------------------ vectors


def doc_vectors():
    text = open(DOC, encoding="utf-8").read()
    block = re.search(r"```raftlog-test-vectors\n(.*?)```", text, re.S)
    assert block, "docs/protocol.md has no raftlog-test-vectors block"
    vectors = {}
    for line in block.group(1).splitlines():
        if line.strip():
            name, hexbytes = line.split()
            vectors[name] = bytes.fromhex(hexbytes)
    return vectors


def body_of(frame):
    (length,) = rc.struct.unpack("<I", frame[:4])
    assert length == len(frame) - 4
    return frame[4:]


def test_protocol_md_test_vectors():
    v = doc_vectors()
    encoded = {
        "append_hi_empty_producer9_seq40": rc.encode_append([b"hi", b""], (9, 40)),
        "append_one_record_no_producer": rc.encode_append([b"abc"]),
        "consume_index258_follow_limit10": rc.encode_consume(rc.FROM_INDEX, 258, True, 10),
        "consume_start_no_follow": rc.encode_consume(rc.FROM_START),
        "status_request": rc.encode_status(),
    }
    decoded = {
        "appended_256_258": (rc.APPENDED, {"first_index": 256, "last_index": 258}),
        "appended_runs_256x3_512x2": (rc.APPENDED_RUNS, {"runs": [(256, 3), (512, 2)]}),
        "records_5_7_commit9": (rc.RECORDS, {"start_index": 5, "next_index": 7,
                                             "commit_index": 9,
                                             "records": [(5, b"a"), (6, b"")]}),
        "consume_end_commit_reached_next7": (rc.CONSUME_END, {"reason": 2, "next_index": 7}),
    }
    errors = {
        "error_not_leader_2": (rc.NOT_LEADER, {"leader_id": 2,
                                               "leader_addr": "127.0.0.1:7002"}),
        "error_sequence_gap_p9_expected42_got48": (rc.SEQUENCE_GAP, {
            "producer_id": 9, "expected": 42, "got": 48}),
        "error_unsupported_version_2_1": (rc.UNSUPPORTED_VERSION, {"requested": 2,
                                                                   "supported": 1}),
    }
    assert set(v) == set(encoded) | set(decoded) | set(errors), "a vector is unchecked"
    for name, body in encoded.items():
        assert rc.frame(body) == v[name], name
    for name, (kind, fields) in decoded.items():
        resp = rc.decode_response(body_of(v[name]))
        assert (resp.type, resp.fields) == (kind, fields), name
    for name, (code, fields) in errors.items():
        resp = rc.decode_response(body_of(v[name]))
        assert resp.type == rc.ERROR and resp.fields["error"].code == code, name
        assert resp.fields["error"].fields == fields, name


def test_protocol_md_annotated_examples():
    """Section 6's annotated Append example, bytes being the leading hex pairs
    of each line, equals this client's encoding."""
    text = open(DOC, encoding="utf-8").read()
    blocks = re.findall(r"```\n(01 01 .*?)```", text, re.S)
    assert blocks, "section 6's Append example is missing"
    data = bytearray()
    for line in blocks[0].splitlines():
        for token in line.split():
            if not re.fullmatch(r"[0-9a-f]{2}", token):
                break
            data.append(int(token, 16))
    assert bytes(data) == rc.encode_append([b"hi", b""], (9, 40))


# ------------------------------------------------------------------ cluster


def test_status_from_the_leader(cluster):
    async def main():
        leader, addr = await find_leader(cluster)
        async with rc.connect_node(addr, config(cluster)) as conn:
            resp = await conn.request(rc.encode_status())
        f = resp.fields
        assert resp.type == rc.STATUS_RESP and f["leader"] == leader
        assert f["term"] >= 1 and f["log_start"] >= 1
        assert f["commit_index"] <= f["last_index"]
        assert {n["id"]: n["addr"] for n in f["nodes"]} == cluster.addrs
        roles = {n["id"]: n["role"] for n in f["nodes"]}
        assert roles[leader] == 1 and sorted(roles.values()) == [1, 2, 2]
    run(main())


def test_not_leader_redirect_names_the_leader(cluster):
    async def main():
        leader, addr = await find_leader(cluster)
        follower = next(n for n in cluster.addrs if n != leader)
        async with rc.connect_node(cluster.addrs[follower], config(cluster)) as conn:
            resp = await conn.request(rc.encode_append([b"redirected"]))
        assert resp.type == rc.ERROR
        error = resp.fields["error"]
        assert error.code == rc.NOT_LEADER, error
        # section 2: leader_addr is the leader's HOST:PORT as configured
        assert error.fields == {"leader_id": leader, "leader_addr": addr}
        async with rc.connect_node(error.fields["leader_addr"], config(cluster)) as conn:
            resp = await conn.request(rc.encode_append([b"redirected"]))
        assert resp.type == rc.APPENDED, resp
    run(main())


def test_append_with_producer_and_resend_gets_the_same_indexes(cluster):
    async def main():
        producer = random.getrandbits(63)
        batch = [b"first", b"", b"x" * 1000]
        first = await append_at_leader(cluster, batch, (producer, 0))
        assert first.type == rc.APPENDED, first
        f = first.fields
        assert f["last_index"] - f["first_index"] + 1 == len(batch)
        again = await append_at_leader(cluster, batch, (producer, 0))
        assert (again.type, again.fields) == (rc.APPENDED, f), "a re-send is answered alike"
        # a re-send of the first record plus one new one: original + new index
        more = await append_at_leader(cluster, batch + [b"new"], (producer, 0))
        assert more.type in (rc.APPENDED, rc.APPENDED_RUNS), more
        if more.type == rc.APPENDED:
            assert more.fields["first_index"] == f["first_index"]
            assert more.fields["last_index"] == f["last_index"] + 1
        else:
            runs = more.fields["runs"]
            assert runs[0] == (f["first_index"], 3) and sum(c for _, c in runs) == 4
        # every node serves them, from its log start, in order
        expected = dict(zip(range(f["first_index"], f["last_index"] + 1), batch))
        for node, addr in cluster.addrs.items():
            deadline = time.monotonic() + 10
            while True:
                async with rc.connect_node(addr, config(cluster)) as conn:
                    records, end, batches = await consume_all(conn)
                got = dict(records)
                if all(got.get(i) == data for i, data in expected.items()):
                    break
                assert time.monotonic() < deadline, f"node {node} serves {records[-5:]}"
                await asyncio.sleep(0.05)
            assert end["reason"] == 2 and batches[0]["start_index"] == 1
            assert end["next_index"] == batches[-1]["next_index"]
    run(main())


def test_follow_the_tail_on_a_follower_then_stop_sending(cluster):
    async def main():
        leader, _ = await find_leader(cluster)
        follower = next(n for n in cluster.addrs if n != leader)
        async with rc.connect_node(cluster.addrs[follower], config(cluster)) as conn:
            stream = conn.open_stream()
            stream.send_request(rc.encode_consume(rc.FROM_END, follow=True))
            first = await stream.response()
            assert first.type == rc.RECORDS, "the first batch always goes out (4.3)"
            check_batch(first.fields, None)
            cursor = first.fields["next_index"]
            sent = time.monotonic()
            appended = await append_at_leader(cluster, [b"tail-1", b"tail-2"])
            assert appended.type == rc.APPENDED
            want = {appended.fields["first_index"]: b"tail-1",
                    appended.fields["last_index"]: b"tail-2"}
            got = {}
            while not set(want) <= set(got):
                resp = await stream.response(timeout=5)
                assert resp.type == rc.RECORDS, resp
                check_batch(resp.fields, cursor)
                assert resp.fields["start_index"] == cursor
                cursor = resp.fields["next_index"]
                got.update(resp.fields["records"])
            assert {i: got[i] for i in want} == want
            assert time.monotonic() - sent < 5
            # 4.1: the client ends a Consume with STOP_SENDING; the node
            # answers with RESET_STREAM (QUIC) and streams no more.
            stream.stop_sending(5)
            with pytest.raises(rc.StreamWasReset) as reset:
                while True:
                    resp = await stream.response(timeout=5)
                    assert resp.type == rc.RECORDS
            assert reset.value.code == 5, "the node resets with the client's code"
    run(main())


def test_documented_errors(cluster):
    async def main():
        leader, addr = await find_leader(cluster)
        async with rc.connect_node(addr, config(cluster)) as conn:
            # RecordTooLarge (code 3)
            resp = await conn.request(rc.encode_append([b"x" * (RECORD_BYTES_MAX + 1)]))
            e = resp.fields["error"]
            assert (e.code, e.fields) == (rc.RECORD_TOO_LARGE, {
                "record_bytes": RECORD_BYTES_MAX + 1, "limit_bytes": RECORD_BYTES_MAX})
            assert not e.retryable and e.message
            # SequenceGap (code 5)
            producer = random.getrandbits(63)
            resp = await conn.request(rc.encode_append([b"a"], (producer, 0)))
            assert resp.type == rc.APPENDED
            resp = await conn.request(rc.encode_append([b"b"], (producer, 5)))
            e = resp.fields["error"]
            assert (e.code, e.fields) == (rc.SEQUENCE_GAP, {
                "producer_id": producer, "expected": 1, "got": 5})
            # PayloadMismatch (code 18): sequence 0 again with another payload
            resp = await conn.request(rc.encode_append([b"not a"], (producer, 0)))
            e = resp.fields["error"]
            assert e.code == rc.PAYLOAD_MISMATCH and e.fields["sequence"] == 0, e
            assert e.fields["producer_id"] == producer
            # UnsupportedVersion (code 13), answered in the node's version
            resp = await conn.request(bytes([2, rc.STATUS]))
            e = resp.fields["error"]
            assert (e.code, e.fields) == (rc.UNSUPPORTED_VERSION, {
                "requested": 2, "supported": 1})
            # malformed bodies (2.4): InvalidRequest (code 7), then the node ends the stream
            for body in (rc.encode_append([b"abc"])[:-1],      # truncated record
                         rc.encode_status() + b"\x00",          # trailing byte
                         bytes([1, 0x42]),                      # unknown request type
                         rc.encode_append([])):                 # record_count 0
                stream = conn.open_stream()
                stream.send_request(body)
                resp = await stream.response()
                e = resp.fields["error"]
                assert e.code == rc.INVALID_REQUEST and e.fields["reason"], (body, e)
                assert await stream.read_frame() is None, "the stream ends after the error"
            # a request type other than Append on an Append stream (4.1)
            stream = conn.open_stream()
            stream.send_request(rc.encode_append([b"ok"]), end=False)
            stream.send_request(rc.encode_status(), end=True)
            assert (await stream.response()).type == rc.APPENDED
            e = (await stream.response()).fields["error"]
            assert e.code == rc.INVALID_REQUEST
            assert await stream.read_frame() is None
            # the connection survives all of it
            resp = await conn.request(rc.encode_status())
            assert resp.type == rc.STATUS_RESP
    run(main())


def test_tls_server_names_and_failures(cluster, tmp_path):
    """Section 2 and 2.5: the names a client verifies, and what it sees when
    TLS fails (QUIC CRYPTO_ERROR 0x100 + TLS alert) or the node refuses."""
    other = str(tmp_path / "other-ca")
    subprocess.run([cluster.binary, "certs", "--out", other, "--node", "1=127.0.0.1"],
                      check=True, capture_output=True, timeout=30)

    async def status(addr, cfg):
        async with rc.connect_node(addr, cfg, timeout=3) as conn:
            resp = await conn.request(rc.encode_status(), timeout=3)
            await asyncio.sleep(0.05)
            return resp, conn.closed

    async def handshake_close(addr, cfg):
        with pytest.raises(rc.HandshakeFailed) as failed:
            await status(addr, cfg)
        return failed.value.closed[0]

    async def main():
        addr = cluster.addrs[1]
        # the address's host (an IP SAN here) and node-<id>.raftlog both verify
        for name in (None, "node-1.raftlog"):
            resp, _ = await status(addr, config(cluster, server_name=name))
            assert resp.type in (rc.STATUS_RESP, rc.ERROR), resp
            assert resp.type == rc.STATUS_RESP or resp.fields["error"].code == rc.NOT_LEADER
        # another node's name: the client's own check fails (bad_certificate, 42)
        assert await handshake_close(addr, config(cluster, server_name="node-2.raftlog")) \
            == 0x100 + 42
        # a CA the node's certificate is not signed by: the same, on the client
        foreign = rc.client_configuration(os.path.join(other, "ca.pem"),
                                          cluster.path("client.pem"), cluster.path("client.key"))
        assert await handshake_close(addr, foreign) == 0x100 + 42
        # an unknown ALPN: the node's TLS refuses it, no_application_protocol (120)
        assert await handshake_close(addr, config(cluster, alpn="raftlog-client/2")) \
            == 0x100 + 120
        # a client certificate of another CA: the client's handshake completes
        # (TLS 1.3), then the node closes with CRYPTO_ERROR decrypt_error (51)
        stranger = rc.client_configuration(cluster.path("ca.pem"),
                                           os.path.join(other, "client.pem"),
                                           os.path.join(other, "client.key"))
        try:
            async with rc.connect_node(addr, stranger, timeout=3) as conn:
                with pytest.raises((rc.StreamEnded, asyncio.TimeoutError)):
                    await conn.request(rc.encode_status(), timeout=3)
                closed = conn.closed
        except rc.HandshakeFailed as failed:  # the close overtook the handshake
            closed = failed.closed
        assert closed and closed[0] == 0x100 + 51, closed
        # the peer ALPN with a client certificate: application close 0x101
        async with rc.connect_node(addr, config(cluster, alpn="raftlog-peer/1")) as conn:
            for _ in range(100):
                if conn.closed:
                    break
                await asyncio.sleep(0.02)
            assert conn.closed and conn.closed[0] == 0x101, conn.closed
        # 2.6: without a client certificate the handshake finishes and every
        # request is refused (no --allow-anonymous-clients)
        resp, _ = await status(addr, config(cluster, identity=None))
        assert resp.type == rc.ERROR and resp.fields["error"].code == 16, resp
    run(main())


def test_reset_stream_ends_a_consume(cluster):
    """4.1: a client that resets its sending side of a Consume stream (the
    request sent without FIN) ends the Consume as STOP_SENDING does: the
    node resets its side and sends nothing more."""
    async def main():
        leader, addr = await find_leader(cluster)
        async with rc.connect_node(addr, config(cluster)) as conn:
            stream = conn.open_stream()
            stream.send_request(rc.encode_consume(rc.FROM_END, follow=True), end=False)
            assert (await stream.response()).type == rc.RECORDS
            stream.reset(0x7)
            # The node answers by resetting its side with the same code: the
            # Consume is over (before the fix it kept streaming new records).
            with pytest.raises(rc.StreamWasReset) as reset:
                while True:
                    resp = await stream.response(timeout=5)
                    assert resp.type == rc.RECORDS, resp
            assert reset.value.code == 0x7, "the node resets with the client's code"
            # the connection still serves
            assert (await conn.request(rc.encode_status())).type == rc.STATUS_RESP
    run(main())


def test_reset_stream_on_an_append_stream(cluster):
    """4.1: RESET_STREAM on an Append stream ends its requests: the Appends
    the node read are answered, then InvalidRequest, then FIN."""
    async def main():
        leader, addr = await find_leader(cluster)
        async with rc.connect_node(addr, config(cluster)) as conn:
            stream = conn.open_stream()
            stream.send_request(rc.encode_append([b"before reset"]), end=False)
            assert (await stream.response()).type == rc.APPENDED
            stream.reset(0x9)
            e = (await stream.response(timeout=5)).fields["error"]
            assert e.code == rc.INVALID_REQUEST, e
            assert await stream.read_frame(timeout=5) is None
    run(main())


def test_a_frame_after_a_consume_request_is_invalid(cluster):
    """4.1: a Consume stream carries one request; a further frame is answered
    InvalidRequest and ends the stream, as on an Append stream."""
    async def main():
        leader, addr = await find_leader(cluster)
        async with rc.connect_node(addr, config(cluster)) as conn:
            stream = conn.open_stream()
            stream.send_request(rc.encode_consume(rc.FROM_END, follow=True), end=False)
            assert (await stream.response()).type == rc.RECORDS
            stream.send_request(rc.encode_status(), end=True)
            resp = await stream.response(timeout=3)
            assert resp.type == rc.ERROR, resp
            assert resp.fields["error"].code == rc.INVALID_REQUEST
            assert await stream.read_frame(timeout=3) is None, "the stream ends (FIN)"
    run(main())


def test_a_status_stream_is_read_up_to_its_request(cluster):
    """4.1: a Status stream has one answer; the node reads nothing after the
    request: without FIN from the client it stops the receiving side
    (STOP_SENDING, code 0), and a frame sent after the request is never
    answered."""
    async def main():
        leader, addr = await find_leader(cluster)
        async with rc.connect_node(addr, config(cluster)) as conn:
            stream = conn.open_stream()
            stream.send_request(rc.encode_status(), end=False)
            stream.send_request(rc.encode_status(), end=False)
            assert (await stream.response()).type == rc.STATUS_RESP
            assert await stream.read_frame() is None, "one answer, then FIN"
            for _ in range(100):
                if stream.stop_sending_code is not None:
                    break
                await asyncio.sleep(0.01)
            assert stream.stop_sending_code == 0
    run(main())


def test_unidirectional_streams_are_not_granted(cluster):
    """Section 2 and 4.1: the node grants a client no unidirectional stream;
    a stack that opens one anyway breaks QUIC's stream limit and the node
    closes the connection with STREAM_LIMIT_ERROR (transport code 0x4).
    (aioquic holds such a stream back on its own; the test lifts aioquic's
    private view of the limit to send it anyway.)"""
    async def main():
        async with rc.connect_node(cluster.addrs[1], config(cluster)) as conn:
            quic = conn.protocol._quic
            assert quic._remote_max_streams_uni == 0
            quic._remote_max_streams_uni = 1
            conn.open_uni_stream().send_request(rc.encode_status())
            for _ in range(200):
                if conn.closed:
                    break
                await asyncio.sleep(0.01)
            assert conn.closed and conn.closed[0] == 0x4, conn.closed
    run(main())


def test_zz_a_following_consume_ends_with_shutting_down_at_node_stop(cluster):
    """4.1: a node stopped in order (SIGTERM) ends a following Consume with
    Error ShuttingDown (code 11) and FIN, not a bare FIN. Runs last: it stops
    a follower."""
    async def main():
        leader, _ = await find_leader(cluster)
        follower = next(n for n in cluster.addrs if n != leader)
        async with rc.connect_node(cluster.addrs[follower], config(cluster)) as conn:
            stream = conn.open_stream()
            stream.send_request(rc.encode_consume(rc.FROM_START, follow=True))
            assert (await stream.response()).type == rc.RECORDS
            await asyncio.sleep(0.1)
            stopped = asyncio.get_running_loop().run_in_executor(
                None, cluster.stop, follower)
            while True:
                body = await stream.read_frame(timeout=10)
                assert body is not None, "a bare FIN: no ShuttingDown before it"
                resp = rc.decode_response(body)
                if resp.type == rc.ERROR:
                    break
                assert resp.type == rc.RECORDS, resp
            assert resp.fields["error"].code == rc.SHUTTING_DOWN, resp
            assert resp.fields["error"].retryable
            assert await stream.read_frame() is None, "FIN after the error"
            assert await stopped == 0
    run(main())
