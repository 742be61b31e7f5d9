"""aprendiz.services.generator.stream_batching: a stream's first chunk and a chunk after a pause go
at once, chunks that flow are batched per window, nothing is reordered, lost or held back by the
consumer; Ray's fixed-window batcher is the contrast (its first chunk waits the window)."""

from __future__ import annotations

import asyncio
import time

import pytest

from aprendiz.services.generator.stream_batching import AdaptiveBatcher, batch_stream
from aprendiz.services.raycompat import Batcher

WINDOW_MS = 200.0  # wide, so that a loaded machine's scheduling noise stays far below it


async def timed_source(gaps_s: list[float], produced: list[float]):
    """Yields 0, 1, ... after each gap, noting when each was produced."""
    for i, gap in enumerate(gaps_s):
        await asyncio.sleep(gap)
        produced.append(time.monotonic())
        yield i


async def consume(stream) -> list[tuple[float, list[int]]]:
    return [(time.monotonic(), batch) async for batch in stream]


def run(mode: str, gaps_s: list[float]) -> tuple[list[float], list[tuple[float, list[int]]]]:
    produced: list[float] = []

    async def main():
        return await consume(batch_stream(timed_source(gaps_s, produced), mode, WINDOW_MS, fixed=Batcher))

    return produced, asyncio.run(main())


def delays_ms(produced: list[float], received: list[tuple[float, list[int]]]) -> dict[int, float]:
    return {i: (at - produced[i]) * 1000 for at, batch in received for i in batch}


@pytest.mark.timeout(30)
def test_the_first_chunk_goes_at_once_where_the_fixed_window_holds_it():
    gaps = [0.05] + [0.01] * 30
    produced, received = run("adaptive", gaps)
    assert delays_ms(produced, received)[0] < WINDOW_MS / 4
    assert received[0][1] == [0]
    produced, received = run("fixed", gaps)  # Ray's batcher: the first chunk waits for the window's end
    assert delays_ms(produced, received)[0] > WINDOW_MS / 2


@pytest.mark.timeout(30)
def test_a_chunk_after_a_pause_goes_at_once():
    gaps = [0.0, 0.01, 0.01, 2 * WINDOW_MS / 1000, 0.01]  # chunk 3 comes after a pause of two windows
    produced, received = run("adaptive", gaps)
    delays = delays_ms(produced, received)
    assert delays[3] < WINDOW_MS / 4, delays
    assert any(batch[0] == 3 for _, batch in received)  # it opened a batch of its own


@pytest.mark.timeout(30)
def test_flowing_chunks_are_batched_per_window_in_order_and_complete():
    gaps = [0.0] + [0.01] * 99  # 100 chunks over about 1 s (more on a slow machine)
    produced, received = run("adaptive", gaps)
    assert [i for _, batch in received for i in batch] == list(range(100))  # order and content unchanged
    span_s = produced[-1] - produced[0]
    assert len(received) <= span_s / (WINDOW_MS / 1000) + 3  # at most one message per window, about
    assert max(len(batch) for _, batch in received) > 5  # so batched, not one by one
    assert max(delays_ms(produced, received).values()) < WINDOW_MS * 1.5  # nothing held past its window
    produced, received = run("off", gaps)
    assert [batch for _, batch in received] == [[i] for i in range(100)]


@pytest.mark.timeout(30)
def test_the_source_error_comes_after_the_chunks_before_it():
    async def failing():
        yield "a"
        await asyncio.sleep(0.01)
        yield "b"
        raise RuntimeError("engine died")

    async def main():
        got = []
        with pytest.raises(RuntimeError, match="engine died"):
            async for batch in AdaptiveBatcher(failing(), WINDOW_MS / 1000).stream():
                got += batch
        return got

    assert asyncio.run(main()) == ["a", "b"]


@pytest.mark.timeout(30)
def test_closing_the_stream_cancels_the_source():
    """A client that goes away closes the stream: the engine's generator is cancelled (vLLM aborts
    the request), not left running."""
    async def main():
        state = {"closed": False}

        async def endless():
            try:
                while True:
                    await asyncio.sleep(0.005)
                    yield 1
            finally:
                state["closed"] = True

        stream = AdaptiveBatcher(endless(), WINDOW_MS / 1000).stream()
        await stream.__anext__()
        await stream.aclose()
        await asyncio.sleep(0.05)
        return state["closed"]

    assert asyncio.run(main())


def test_the_window_must_be_positive():
    with pytest.raises(ValueError, match="interval_s must be positive"):
        AdaptiveBatcher(timed_source([], []), 0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["adaptive", "fixed", "off"])
def test_the_generator_server_streams_in_its_models_mode(mode):
    """GeneratorServer takes LLMServer's batching hook over: a streamed chat answer, one word every
    10 ms from the engine, reaches the caller in lists as the mode says, words unchanged."""
    from ray.serve.llm.openai_api_models import ChatCompletionRequest

    from aprendiz.config import GeneratorModel
    from aprendiz.services.generator.deployment import GeneratorServer, llm_config
    from tests.unit.ingress_support import EchoEngine

    class PacedEngine(EchoEngine):
        async def chat(self, request, raw_request_info=None):
            async for item in self._answer(request, chat=True):
                await asyncio.sleep(0.01)
                yield item

    model = GeneratorModel(id="tiny", source="/models/tiny", stream_batching=mode,
                           stream_batching_interval_ms=WINDOW_MS)
    words = " ".join(f"w{i}" for i in range(30))

    async def main():
        server = GeneratorServer.__new__(GeneratorServer)
        await server.__init__(llm_config(model), engine_cls=PacedEngine, stream_batching=model.stream_batching)
        request = ChatCompletionRequest(model="tiny", messages=[{"role": "user", "content": words}], stream=True,
                                        max_completion_tokens=64)
        begin = time.monotonic()
        return [(time.monotonic() - begin, batch) async for batch in await server.chat(request)]

    received = asyncio.run(main())
    chunks = [chunk for _, batch in received for chunk in batch]
    assert len(chunks) == 32 and chunks[-1] == "data: [DONE]\n\n"  # "eco:", 30 words, [DONE]
    assert "".join(chunks).count('"content"') == 31
    first_s, first = received[0]
    if mode == "off":
        assert all(len(batch) == 1 for _, batch in received)
    elif mode == "adaptive":
        assert len(first) == 1 and first_s < WINDOW_MS / 1000 / 2  # the first word at once
        assert len(received) < len(chunks) / 3  # the rest batched
    else:
        assert first_s > WINDOW_MS / 1000 / 2 and len(first) > 1  # the first word waits for the window
