"""The exceptions of raftlog: every one is a ``RaftlogError``."""

__all__ = [
    "AbandonedError",
    "ClosedError",
    "ConfigError",
    "InvalidInputError",
    "PermissionDeniedError",
    "ProtocolError",
    "RaftlogError",
    "RecordTooLargeError",
    "SequenceError",
    "TlsError",
    "UnavailableError",
]


class RaftlogError(Exception):
    """Base class of every raftlog error.

    ``code`` is the node's error code (docs/protocol.md) when a node refused
    the request, else None; ``retryable`` is True when the same request may
    succeed later.
    """

    def __init__(self, message, code=None, retryable=False):
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable


class UnavailableError(RaftlogError):
    """No node answered, or no leader took the request, within the retry
    budget (``timeout`` for one request; 30 s of retries for an append)."""


class RecordTooLargeError(RaftlogError, ValueError):
    """A record is over the cluster's ``--max-record-bytes`` (or the
    protocol's 8 MiB), or an append carries too many records."""


class PermissionDeniedError(RaftlogError):
    """The presented certificate does not allow the request (admin requests
    need ``Client(..., admin=True)`` and the admin identity)."""


class TlsError(RaftlogError):
    """The TLS directory lacks a file or holds an unreadable one."""


class ConfigError(RaftlogError, ValueError):
    """No cluster or TLS directory given, or a bad address."""


class InvalidInputError(RaftlogError, ValueError):
    """An argument the client refuses before sending anything."""


class SequenceError(RaftlogError):
    """Exactly-once refused a sequence: a gap, or a sequence re-sent with
    another payload (use new sequences or another producer id)."""


class ClosedError(RaftlogError):
    """The publisher or consumer is closed, or stopped after an error."""


class AbandonedError(RaftlogError):
    """Not sent because an earlier append of the same publisher failed."""


class ProtocolError(RaftlogError):
    """A node sent an answer this client does not understand."""
