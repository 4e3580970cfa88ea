"""raftlog: the Python client of a raftlog cluster.

Built on raftlog's Rust client (leader discovery, retries, exactly-once
publishing, resuming consumers)::

    import raftlog
    client = raftlog.Client(cluster="127.0.0.1:7001,127.0.0.1:7002",
                            tls_dir="./raftlog-dev/tls")
    with client.publisher() as pub:
        index = pub.append(b"one record")
    for record in client.consume(start="start"):
        print(record.index, record.data)
"""

import atexit as _atexit

from ._aio import AsyncConsumer
from ._errors import (
    AbandonedError,
    ClosedError,
    ConfigError,
    InvalidInputError,
    PermissionDeniedError,
    ProtocolError,
    RaftlogError,
    RecordTooLargeError,
    SequenceError,
    TlsError,
    UnavailableError,
)
from ._raftlog import (
    AsyncPublisher,
    Client,
    Consumer,
    Publisher,
    Record,
    __version__,
    _shutdown,
)

# Results still on their way when the interpreter exits are dropped instead
# of being handed to an interpreter that is going away.
_atexit.register(_shutdown)

__all__ = [
    "AbandonedError",
    "AsyncConsumer",
    "AsyncPublisher",
    "Client",
    "ClosedError",
    "ConfigError",
    "Consumer",
    "InvalidInputError",
    "PermissionDeniedError",
    "ProtocolError",
    "Publisher",
    "RaftlogError",
    "Record",
    "RecordTooLargeError",
    "SequenceError",
    "TlsError",
    "UnavailableError",
    "__version__",
]
