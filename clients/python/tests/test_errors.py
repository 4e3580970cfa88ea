"""Errors are exceptions under raftlog.RaftlogError."""

import os
import subprocess
import time

import pytest

import raftlog
from conftest import RECORD_BYTES_MAX, free_udp_ports


def test_a_record_over_the_node_limit_is_refused(client):
    with client.publisher() as pub:
        with pytest.raises(raftlog.RecordTooLargeError) as raised:
            pub.append(b"x" * (RECORD_BYTES_MAX + 1))
        assert raised.value.code == 3
        assert isinstance(raised.value, ValueError)
        assert str(RECORD_BYTES_MAX) in str(raised.value)


def test_a_record_over_the_protocol_limit_is_refused_before_sending(client):
    with client.publisher() as pub:
        with pytest.raises(raftlog.RecordTooLargeError):
            pub.append(b"x" * (8 * 1024 * 1024 + 1))
        with pytest.raises(TypeError):
            pub.append("text is not bytes")
        with pytest.raises(TypeError):
            pub.append_many(b"one record is not a list")
        # Nothing was sent: the publisher goes on.
        assert pub.append(b"still fine") >= 1


def test_admin_requests_need_the_admin_identity(client):
    with pytest.raises(raftlog.PermissionDeniedError) as raised:
        client.transfer_leader(1)
    assert raised.value.code == 16 and not raised.value.retryable


def test_a_tls_dir_without_certificates_is_refused(cluster, tmp_path):
    with pytest.raises(raftlog.TlsError):
        raftlog.Client(cluster=cluster.cluster, tls_dir=str(tmp_path))


def test_certificates_of_another_ca_reach_no_node(cluster, tmp_path):
    other = tmp_path / "other-ca"
    subprocess.run([cluster.binary, "certs", "--out", str(other), "--node", "1=127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    client = raftlog.Client(cluster=cluster.cluster, tls_dir=other, timeout=1.0)
    with pytest.raises(raftlog.UnavailableError):
        client.publisher()


def test_an_unreachable_cluster_is_unavailable_within_the_timeout(cluster):
    client = raftlog.Client(cluster=f"127.0.0.1:{free_udp_ports(1)[0]}", tls_dir=cluster.tls,
                            timeout=0.5)
    for attempt in (client.publisher, client.status, client.consume):
        started = time.monotonic()
        with pytest.raises(raftlog.UnavailableError) as raised:
            attempt()
        assert raised.value.retryable
        assert time.monotonic() - started < 10, f"{attempt.__name__} waited too long"


def test_bad_arguments(cluster, client, monkeypatch):
    monkeypatch.delenv("RAFTLOG_CLUSTER", raising=False)
    monkeypatch.delenv("RAFTLOG_TLS_DIR", raising=False)
    with pytest.raises(raftlog.ConfigError, match="RAFTLOG_CLUSTER"):
        raftlog.Client(tls_dir=cluster.tls)
    with pytest.raises(raftlog.ConfigError, match="RAFTLOG_TLS_DIR"):
        raftlog.Client(cluster=cluster.cluster)
    with pytest.raises(raftlog.ConfigError):
        raftlog.Client(cluster="nonsense", tls_dir=cluster.tls).publisher()
    with pytest.raises(ValueError):
        raftlog.Client(cluster=cluster.cluster, tls_dir=cluster.tls, timeout=-1)
    with pytest.raises(raftlog.InvalidInputError):
        client.consume(start="middle")
    with pytest.raises(raftlog.InvalidInputError):
        client.consume(start=0)
    with pytest.raises(raftlog.InvalidInputError):
        client.publisher(max_in_flight=0)
    assert issubclass(raftlog.UnavailableError, raftlog.RaftlogError)
