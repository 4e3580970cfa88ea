"""A small raftlog-client/1 client on aioquic, written from docs/protocol.md.

Only the document is the source: section numbers below are its sections.
It is deliberately independent of the Rust code (src/wire, src/net).
"""

import asyncio
import ssl
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (ConnectionTerminated, StopSendingReceived, StreamDataReceived,
                                 StreamReset)

ALPN = "raftlog-client/1"  # section 2
VERSION = 1  # section 2.2
FRAME_BYTES_MAX = 16 * 1024 * 1024 + 64 * 1024  # section 2.1

# Request types (4.2) and response types (4.3).
APPEND, CONSUME, STATUS = 0x01, 0x02, 0x03
APPENDED, RECORDS, CONSUME_END, STATUS_RESP, ADMIN, APPENDED_RUNS, ERROR = (
    0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0xFF)

# Error codes (4.5).
NOT_LEADER, UNAVAILABLE, RECORD_TOO_LARGE, TOO_MANY_RECORDS, SEQUENCE_GAP = 1, 2, 3, 4, 5
TIMEOUT, INVALID_REQUEST, CHANGE_IN_PROGRESS, SHUTTING_DOWN = 6, 7, 8, 11
UNSUPPORTED_VERSION, PAYLOAD_MISMATCH, BUSY = 13, 18, 17
RETRYABLE = {NOT_LEADER, UNAVAILABLE, TIMEOUT, CHANGE_IN_PROGRESS, SHUTTING_DOWN, BUSY}

# Consume `from` (4.2).
FROM_START, FROM_END, FROM_INDEX = 1, 2, 3


class ProtocolViolation(Exception):
    """The node sent something docs/protocol.md does not allow."""


# ------------------------------------------------------------------ codec


def frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


def encode_append(records: List[bytes], producer: Optional[Tuple[int, int]] = None,
                  version: int = VERSION) -> bytes:
    flags = 1 if producer else 0
    producer_id, sequence = producer or (0, 0)
    out = bytearray(struct.pack("<BBBQQI", version, APPEND, flags, producer_id, sequence,
                                len(records)))
    for record in records:
        out += struct.pack("<I", len(record)) + record
    return bytes(out)


def encode_consume(start: int = FROM_START, index: int = 0, follow: bool = False,
                   limit: Optional[int] = None) -> bytes:
    flags = (1 if follow else 0) | (2 if limit is not None else 0)
    return struct.pack("<BBBQBQ", VERSION, CONSUME, start, index if start == FROM_INDEX else 0,
                       flags, limit or 0)


def encode_status() -> bytes:
    return bytes([VERSION, STATUS])


class Reader:
    def __init__(self, body: bytes, offset: int = 0):
        self.body, self.at = body, offset

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.body):
            raise ProtocolViolation(f"truncated body: need {n} bytes at {self.at}")
        out = self.body[self.at:self.at + n]
        self.at += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> str:
        return self.take(self.u16()).decode("utf-8")

    def bytes32(self) -> bytes:
        return self.take(self.u32())

    def end(self):
        if self.at != len(self.body):
            raise ProtocolViolation(f"{len(self.body) - self.at} trailing bytes")  # section 1


@dataclass
class Error:
    code: int
    message: str
    fields: dict = field(default_factory=dict)

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE


@dataclass
class Response:
    type: int
    fields: dict


def decode_response(body: bytes) -> Response:
    r = Reader(body)
    version, kind = r.u8(), r.u8()
    if version != VERSION:
        raise ProtocolViolation(f"response version {version}")
    f: dict = {}
    if kind == APPENDED:
        f["first_index"], f["last_index"] = r.u64(), r.u64()
        if not 1 <= f["first_index"] <= f["last_index"]:
            raise ProtocolViolation(f"Appended {f}")
    elif kind == APPENDED_RUNS:
        f["runs"] = [(r.u64(), r.u32()) for _ in range(r.u32())]
    elif kind == RECORDS:
        f["start_index"], f["next_index"], f["commit_index"] = r.u64(), r.u64(), r.u64()
        f["records"] = [(r.u64(), r.bytes32()) for _ in range(r.u32())]
    elif kind == CONSUME_END:
        f["reason"], f["next_index"] = r.u8(), r.u64()
    elif kind == STATUS_RESP:
        f["leader"], f["term"], f["commit_index"] = r.u64(), r.u64(), r.u64()
        f["log_start"], f["last_index"] = r.u64(), r.u64()
        nodes = []
        for _ in range(r.u32()):
            node_id, role, flags, match = r.u64(), r.u8(), r.u8(), r.u64()
            nodes.append({"id": node_id, "role": role, "reachable": bool(flags & 1),
                          "repairing": bool(flags & 2),
                          "match_index": match if flags & 4 else None, "addr": r.string()})
        f["nodes"] = nodes
    elif kind == ERROR:
        code, message = r.u16(), r.string()
        ef: dict = {}
        if code == NOT_LEADER:
            flags, leader_id, addr = r.u8(), r.u64(), r.string()
            ef = {"leader_id": leader_id if flags & 1 else None,
                  "leader_addr": addr if flags & 2 else None}
        elif code == RECORD_TOO_LARGE:
            ef = {"record_bytes": r.u64(), "limit_bytes": r.u64()}
        elif code == TOO_MANY_RECORDS:
            ef = {"count": r.u64(), "limit": r.u64()}
        elif code == SEQUENCE_GAP:
            ef = {"producer_id": r.u64(), "expected": r.u64(), "got": r.u64()}
        elif code == INVALID_REQUEST:
            ef = {"reason": r.string()}
        elif code == UNSUPPORTED_VERSION:
            ef = {"requested": r.u8(), "supported": r.u8()}
        elif code == PAYLOAD_MISMATCH:
            ef = {"producer_id": r.u64(), "sequence": r.u64(), "index": r.u64()}
        elif code in (UNAVAILABLE, TIMEOUT, CHANGE_IN_PROGRESS, SHUTTING_DOWN, BUSY):
            pass
        else:
            r.at = len(body)  # 4.5: skip the fields of a code we do not know
        f["error"] = Error(code, message, ef)
    else:
        raise ProtocolViolation(f"unknown response type {kind:#x}")
    r.end()
    return Response(kind, f)


# ------------------------------------------------------------------ transport


class StreamEnded(Exception):
    pass


class StreamWasReset(Exception):
    def __init__(self, code: int):
        super().__init__(f"stream reset by the node with code {code:#x}")
        self.code = code


class HandshakeFailed(Exception):
    """The handshake failed; `closed` is the (code, reason) of the close."""

    def __init__(self, closed: Optional[Tuple[int, str]]):
        super().__init__(f"handshake failed: {closed}")
        self.closed = closed


class Stream:
    """One bidirectional stream: frames in, frames out (2.1)."""

    def __init__(self, conn: "Connection", stream_id: int):
        self.conn, self.id = conn, stream_id
        self.buffer = bytearray()
        self.fin = False
        self.reset_code: Optional[int] = None
        self.stop_sending_code: Optional[int] = None
        self.event = asyncio.Event()

    def send(self, data: bytes, end: bool = False):
        self.conn.protocol._quic.send_stream_data(self.id, data, end_stream=end)
        self.conn.protocol.transmit()

    def send_request(self, body: bytes, end: bool = True):
        self.send(frame(body), end)

    def stop_sending(self, code: int = 0):
        self.conn.protocol._quic.stop_stream(self.id, code)
        self.conn.protocol.transmit()

    def reset(self, code: int = 0):
        self.conn.protocol._quic.reset_stream(self.id, code)
        self.conn.protocol.transmit()

    async def read_frame(self, timeout: float = 10.0) -> Optional[bytes]:
        """The next frame's body; None at a clean FIN (a frame boundary)."""
        async def wait_for(n: int) -> bool:
            while len(self.buffer) < n:
                if self.reset_code is not None:
                    raise StreamWasReset(self.reset_code)
                if self.fin or self.conn.closed is not None:
                    return False
                self.event.clear()
                await self.event.wait()
            return True

        async def read():
            if not await wait_for(4):
                if self.buffer:
                    raise ProtocolViolation("stream ended inside a length prefix")
                if self.conn.closed is not None and not self.fin:
                    raise StreamEnded(f"connection closed: {self.conn.closed}")
                return None
            (length,) = struct.unpack("<I", self.buffer[:4])
            if length > FRAME_BYTES_MAX:
                raise ProtocolViolation(f"frame of {length} bytes")
            if not await wait_for(4 + length):
                raise ProtocolViolation("stream ended inside a frame")
            body = bytes(self.buffer[4:4 + length])
            del self.buffer[:4 + length]
            return body

        return await asyncio.wait_for(read(), timeout)

    async def response(self, timeout: float = 10.0) -> Response:
        body = await self.read_frame(timeout)
        if body is None:
            raise StreamEnded("stream ended before a response")
        return decode_response(body)


class _Protocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.streams: Dict[int, Stream] = {}
        self.owner: Optional["Connection"] = None
        self.terminated: Optional[Tuple[int, str]] = None

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.buffer += event.data
                stream.fin = stream.fin or event.end_stream
                stream.event.set()
        elif isinstance(event, StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.reset_code = event.error_code
                stream.event.set()
        elif isinstance(event, StopSendingReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.stop_sending_code = event.error_code
                stream.event.set()
        elif isinstance(event, ConnectionTerminated):
            self.terminated = (event.error_code, event.reason_phrase)
            if self.owner is not None:
                self.owner.closed = (event.error_code, event.reason_phrase)
            for stream in self.streams.values():
                stream.event.set()


class Connection:
    def __init__(self, protocol: _Protocol):
        self.protocol = protocol
        self.closed: Optional[Tuple[int, str]] = None
        protocol.owner = self

    def open_stream(self) -> Stream:
        stream_id = self.protocol._quic.get_next_available_stream_id()
        stream = Stream(self, stream_id)
        self.protocol.streams[stream_id] = stream
        return stream

    def open_uni_stream(self) -> Stream:
        stream_id = self.protocol._quic.get_next_available_stream_id(is_unidirectional=True)
        stream = Stream(self, stream_id)
        self.protocol.streams[stream_id] = stream
        return stream

    async def request(self, body: bytes, timeout: float = 10.0) -> Response:
        """One request on a fresh stream, FIN with it (4.1); its one answer."""
        stream = self.open_stream()
        stream.send_request(body, end=True)
        return await stream.response(timeout)


def client_configuration(ca: str, cert: Optional[str], key: Optional[str],
                         alpn: str = ALPN, server_name: Optional[str] = None,
                         verify: bool = True) -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=[alpn], idle_timeout=4.0,
                               server_name=server_name)
    if verify:
        config.load_verify_locations(cafile=ca)
    else:
        config.verify_mode = ssl.CERT_NONE
    if cert:
        config.load_cert_chain(cert, key)
    return config


def split_addr(addr: str) -> Tuple[str, int]:
    """`HOST:PORT`, IPv6 in brackets (section 2)."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class connect_node:
    """`async with connect_node(addr, config) as conn:`; the TLS server name is
    the address's host (an IP SAN for an IP host), per section 2."""

    def __init__(self, addr: str, config: QuicConfiguration, timeout: float = 5.0):
        self.host, self.port = split_addr(addr)
        self.config, self.timeout = config, timeout

    async def __aenter__(self) -> Connection:
        made: List[_Protocol] = []

        def create(*args, **kwargs):
            made.append(_Protocol(*args, **kwargs))
            return made[-1]

        self._cm = connect(self.host, self.port, configuration=self.config,
                           create_protocol=create, wait_connected=True)
        try:
            protocol = await asyncio.wait_for(self._cm.__aenter__(), self.timeout)
        except ConnectionError as error:
            closed = made[0].terminated if made else None
            raise HandshakeFailed(closed) from error
        return Connection(protocol)

    async def __aexit__(self, *exc):
        await self._cm.__aexit__(*exc)
