"""Exactly-once re-sends with the same producer id and sequences (as in
tests/cluster_exactly_once.rs, through the Python API)."""

import pytest

import raftlog
from conftest import read_back


def test_resend_with_the_same_producer_id_and_sequence_is_exactly_once(client):
    producer_id = 0x5EED_0001
    batch = [b"eo-%04d" % i for i in range(500)]
    with client.publisher(producer_id=producer_id) as pub:
        first = pub.append_many(batch)
        assert pub.next_sequence == 500
    # A restart that does not know what was committed sends everything again,
    # from the same sequence: every record keeps its index.
    with client.publisher(producer_id=producer_id, first_sequence=0) as pub:
        again = [future.result(timeout=60) for future in [pub.append_nowait(r) for r in batch]]
    assert again == first
    # The same 500 plus 100 new: the old keep their indexes, the new follow.
    more_records = batch + [b"eo-new-%03d" % i for i in range(100)]
    with client.publisher(producer_id=producer_id, first_sequence=0) as pub:
        more = pub.append_many(more_records)
    assert more[:500] == first
    assert min(more[500:]) > max(first) and more[500:] == sorted(more[500:])
    # Nothing else appends meanwhile: the next 600 records are these.
    got = read_back(client, first[0], len(more_records))
    assert [r.data for r in got] == more_records, "no duplicate in the log"
    assert [r.index for r in got] == more


def test_a_sequence_resent_with_another_payload_is_refused(client):
    producer_id = 0x5EED_0002
    with client.publisher(producer_id=producer_id) as pub:
        pub.append(b"original")
    with client.publisher(producer_id=producer_id, first_sequence=0) as pub:
        with pytest.raises(raftlog.SequenceError) as raised:
            pub.append(b"another payload")
        assert raised.value.code == 18 and not raised.value.retryable
        # The publisher stops after an error no retry fixes, and says why.
        with pytest.raises(raftlog.ClosedError, match="earlier error"):
            pub.append(b"next")
