"""How a generator replica groups a stream's chunks before sending them on.

Each chunk a replica sends costs a hop through Ray (an object, a gRPC message) and the
ingress's work; gathering the chunks of a flowing stream into one message per window saves
that cost, and Ray Serve LLM's own batcher does so with a fixed window: it sends whatever
arrived every ``interval`` (50 ms by default). Its price is paid where a user looks: the first
token waits for the window, and so does the first token after a pause.

The adaptive batcher is Nagle's rule turned around for latency: a chunk that finds the stream
quiet (nothing sent for a whole window: the first chunk, or the first after a pause) goes at
once; the chunks that follow within the window wait for its end and go together. So a flowing
stream still sends at most one message per window, as the fixed one does, and the first chunk
and a chunk after a pause are never delayed.

Modes (``stream_batching`` on a generator): ``adaptive`` (this module's :class:`AdaptiveBatcher`),
``fixed`` (Ray's batcher, as shipped), ``off`` (every chunk at once, alone). The module needs
asyncio only; the generator's server (``GeneratorServer``) puts it where Ray's batcher was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

StreamBatching = Literal["adaptive", "fixed", "off"]


class AdaptiveBatcher(Generic[T]):
    """Lists of ``source``'s items, in order: an item that finds nothing sent for ``interval_s``
    at once, the items behind it together at the end of the window.

    A reader task drains ``source`` into a queue while the stream waits out a window, so the
    engine is never held back by the consumer; closing the stream (the client went away)
    cancels the reader, and with it ``source``. An exception of ``source`` is raised after the
    items it yielded before it."""

    def __init__(self, source: AsyncIterator[T], interval_s: float, *, clock=time.monotonic):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self._source = source
        self._interval_s = interval_s
        self._clock = clock
        self._items: list[T] = []
        self._arrived = asyncio.Event()  # set when an item arrives or the source ends
        self._ended = asyncio.Event()
        self._reader: asyncio.Task | None = None

    async def _read(self) -> None:
        try:
            async for item in self._source:
                self._items.append(item)
                self._arrived.set()
        finally:
            self._ended.set()
            self._arrived.set()

    async def stream(self) -> AsyncGenerator[list[T], None]:
        self._reader = asyncio.create_task(self._read())
        last_sent = float("-inf")
        try:
            while True:
                await self._arrived.wait()
                wait_s = last_sent + self._interval_s - self._clock()
                if wait_s > 0 and not self._ended.is_set():  # flowing: the rest of the window
                    try:
                        await asyncio.wait_for(self._ended.wait(), timeout=wait_s)
                    except asyncio.TimeoutError:
                        pass
                batch, self._items = self._items, []
                self._arrived.clear()
                if self._ended.is_set():
                    if batch:
                        yield batch
                    self._reader.result()  # the source's exception, if it raised one
                    return
                last_sent = self._clock()
                yield batch
        finally:
            if not self._reader.done():
                self._reader.cancel()


async def _one_by_one(source: AsyncIterator[T]) -> AsyncGenerator[list[T], None]:
    async for item in source:
        yield [item]


def batch_stream(source: AsyncIterator[T], mode: StreamBatching, interval_ms: float, *,
                 fixed: type) -> AsyncGenerator[list[T], None]:
    """The stream of lists a replica sends: ``mode`` over ``interval_ms``. ``fixed``: the class of
    the fixed-window batcher (Ray's ``Batcher``, which takes ``(source, interval_ms=)``)."""
    if mode == "off" or interval_ms <= 0:
        return _one_by_one(source)
    if mode == "fixed":
        return fixed(source, interval_ms=interval_ms).stream()
    return AdaptiveBatcher(source, interval_ms / 1000).stream()
