"""asyncio helpers of the extension (internal).

The extension resolves asyncio futures from its own threads with
``loop.call_soon_threadsafe(set_result, future, value)``: these run on the
loop and leave a future that was cancelled meanwhile alone.
"""

from asyncio import get_running_loop

__all__ = ["AsyncConsumer", "get_running_loop", "set_exception", "set_result"]


def set_result(future, value):
    if not future.done():
        future.set_result(value)


def set_exception(future, exception):
    if not future.done():
        future.set_exception(exception)


class AsyncConsumer:
    """``async for record in client.async_consume(...)``: records in index
    order. Cancelling a waiting ``__anext__`` loses no record: records are
    buffered by the stream and only taken by ``next_ready``."""

    __slots__ = ("_stream",)

    def __init__(self, stream):
        self._stream = stream

    def __aiter__(self):
        return self

    async def __anext__(self):
        stream = self._stream
        while True:
            record = stream.next_ready()
            if record is not None:
                return record
            await stream.wait_ready()

    async def aclose(self):
        """Closes the stream (also done when the consumer is dropped)."""
        self._stream.close()

    def close(self):
        self._stream.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        self._stream.close()
