"""Type stubs of the extension module (re-exported by ``raftlog``)."""

import concurrent.futures
import os
from types import TracebackType
from typing import (
    Any,
    Awaitable,
    Dict,
    Iterable,
    Iterator,
    List,
    Literal,
    Optional,
    Sequence,
    Type,
    Union,
    final,
)

from ._aio import AsyncConsumer

__all__ = [
    "Client",
    "Publisher",
    "AsyncPublisher",
    "Consumer",
    "AsyncStream",
    "Record",
    "_shutdown",
    "_live_consumers",
    "__version__",
]

__version__: str

_Bytes = Union[bytes, bytearray, memoryview]
_Start = Union[Literal["start", "end"], int]

@final
class Record:
    """A committed record."""

    @property
    def index(self) -> int: ...
    @property
    def data(self) -> bytes: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Client:
    """A handle on a raftlog cluster; publishers and consumers made from it
    share its connections."""

    def __new__(
        cls,
        cluster: Optional[Union[str, Sequence[str]]] = None,
        tls_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
        *,
        timeout: float = 10.0,
        admin: bool = False,
    ) -> "Client": ...
    @property
    def cluster(self) -> List[str]: ...
    @property
    def tls_dir(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def admin(self) -> bool: ...
    def publisher(
        self,
        producer_id: Optional[int] = None,
        *,
        first_sequence: int = 0,
        max_in_flight: int = 1024,
    ) -> "Publisher": ...
    def async_publisher(
        self,
        producer_id: Optional[int] = None,
        *,
        first_sequence: int = 0,
        max_in_flight: int = 1024,
    ) -> "AsyncPublisher": ...
    def consume(
        self,
        start: _Start = "start",
        follow: bool = False,
        limit: Optional[int] = None,
    ) -> "Consumer": ...
    def async_consume(
        self,
        start: _Start = "start",
        follow: bool = False,
        limit: Optional[int] = None,
    ) -> AsyncConsumer: ...
    def status(self) -> Dict[str, Any]: ...
    def async_status(self) -> Awaitable[Dict[str, Any]]: ...
    def transfer_leader(self, node_id: int) -> List[Dict[str, Any]]: ...
    def add_node(self, node_id: int, addr: str) -> List[Dict[str, Any]]: ...
    def remove_node(self, node_id: int) -> List[Dict[str, Any]]: ...

@final
class Publisher:
    """Exactly-once, ordered publisher (a context manager)."""

    @property
    def producer_id(self) -> int: ...
    @property
    def next_sequence(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def append(self, data: _Bytes) -> int: ...
    def append_many(self, records: Iterable[_Bytes]) -> List[int]: ...
    def append_nowait(self, data: _Bytes) -> "concurrent.futures.Future[int]": ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Publisher": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class AsyncPublisher:
    """The asyncio publisher (an async context manager)."""

    @property
    def producer_id(self) -> int: ...
    @property
    def next_sequence(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def connect(self) -> Awaitable["AsyncPublisher"]: ...
    def append(self, data: _Bytes) -> Awaitable[int]: ...
    def append_many(self, records: Iterable[_Bytes]) -> Awaitable[List[int]]: ...
    def flush(self) -> Awaitable[None]: ...
    def close(self) -> Awaitable[None]: ...
    def __aenter__(self) -> Awaitable["AsyncPublisher"]: ...
    def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Awaitable[None]: ...

@final
class Consumer:
    """Iterator of committed records in index order (a context manager)."""

    def __iter__(self) -> Iterator[Record]: ...
    def __next__(self) -> Record: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Consumer": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class AsyncStream:
    def next_ready(self) -> Optional[Record]: ...
    def wait_ready(self) -> Awaitable[None]: ...
    def close(self) -> None: ...

def _shutdown() -> None: ...
def _live_consumers() -> int: ...
