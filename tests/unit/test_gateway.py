"""aprendiz.services.gateway: admission, limits, metering, rented upstreams and fallback (fast tier:
a fake clock, an in-process provider on httpx's mock transport, fake hosted backends)."""

from __future__ import annotations

import asyncio
import json
import os
import time

import httpx
import numpy as np
import pytest

from aprendiz.config import RentedModel
from aprendiz.errors import (
    AuthenticationError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
    to_response,
)
from aprendiz.keys import KeyFile
from aprendiz.services.gateway.accrual import hosted_share_usd
from aprendiz.services.gateway.auth import ANONYMOUS, Gatekeeper, Principal, Refusal
from aprendiz.services.gateway.backends import Answer, BackendUnavailableError
from aprendiz.services.gateway.gateway import COST, SERVED_BY, Admission, Gateway
from aprendiz.services.gateway.limits import Buckets, Limiter
from aprendiz.services.gateway.metering import StreamRecord, TokenCounter, Usage, metered
from aprendiz.services.gateway.rented import RentedUpstream
from aprendiz.services.gateway.routes import ModelRoute, RouteTable

UPSTREAM_KEY = "sk-provider-secret-0123456789"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- admission ---------------------------------------------------------------------------
def test_without_a_key_file_everyone_is_anonymous():
    gate = Gatekeeper(None)
    assert not gate.enabled
    assert asyncio.run(gate.authenticate(None)) is ANONYMOUS
    gate.authorize(ANONYMOUS, "anything")


def test_keys_are_checked_reloaded_on_change_and_fail_closed(tmp_path):
    path = tmp_path / "keys.yaml"
    keys = KeyFile(path)
    key, _ = keys.create("team-a", models=["tiny"])
    clock = Clock()
    gate = Gatekeeper(str(path), reload_s=5, clock=clock)

    def refusal(header):
        with pytest.raises(Refusal) as info:
            asyncio.run(gate.authenticate(header))
        return info.value

    assert asyncio.run(gate.authenticate(f"Bearer {key}")).name == "team-a"
    assert refusal(None).reason == "missing_key"
    assert refusal(f"Basic {key}").reason == "missing_key"
    wrong = refusal("Bearer apz_00000000_" + "x" * 43)
    assert wrong.reason == "invalid_key" and isinstance(wrong.error, AuthenticationError)
    principal = asyncio.run(gate.authenticate(f"Bearer {key}"))
    with pytest.raises(Refusal) as denied:
        gate.authorize(principal, "other-model")
    assert denied.value.reason == "model_not_allowed" and isinstance(denied.value.error, PermissionDeniedError)
    assert gate.visible(principal, "tiny") and not gate.visible(principal, "other-model")

    keys.revoke("team-a")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime, whatever the clock's grain
    assert asyncio.run(gate.authenticate(f"Bearer {key}")).name == "team-a"  # not re-read yet
    clock.now += 6
    assert refusal(f"Bearer {key}").reason == "invalid_key"

    path.unlink()
    clock.now += 6
    fresh, _ = KeyFile(tmp_path / "other.yaml").create("team-b")
    assert refusal(f"Bearer {fresh}").reason == "invalid_key"  # no file: every key refused


def test_a_key_file_that_breaks_fails_closed_is_logged_once_and_counted_each_check(tmp_path, caplog):
    """A rewrite that cannot be read or is not valid refuses every key (a revoked key must not live on
    in the old ring); each check that finds the file broken is counted, the log says it once."""
    path = tmp_path / "keys.yaml"
    keys = KeyFile(path)
    key, _ = keys.create("team-a")
    good = path.read_text()
    clock, errors = Clock(), []
    gate = Gatekeeper(str(path), reload_s=5, clock=clock, on_error=errors.append)

    def check(text: str | None = None, *, mkdir: bool = False):
        if mkdir:
            path.unlink()
            path.mkdir()
        elif text is not None:
            if path.is_dir():
                path.rmdir()
            path.write_text(text)
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9 * int(clock.now)))
        clock.now += 6
        try:
            return asyncio.run(gate.authenticate(f"Bearer {key}")).name
        except Refusal as refusal:
            return refusal.reason

    assert check() == "team-a"
    with caplog.at_level("ERROR", logger="aprendiz.gateway"):
        assert check("keys: null\n") == "invalid_key"
        assert check() == "invalid_key"
    assert errors == ["invalid", "invalid"]
    assert len([r for r in caplog.records if "not valid" in r.getMessage()]) == 1
    assert check(good) == "team-a"
    assert check(mkdir=True) == "invalid_key"
    assert errors[-1] == "unreadable"
    assert check(good) == "team-a"
    path.unlink()
    assert check() == "invalid_key" and errors[-1] == "unreadable"
    assert errors.count("unreadable") == 2


def test_too_many_wrong_secrets_for_a_key_id_are_a_429_with_retry_after(tmp_path):
    from aprendiz.errors import RateLimitedError
    from aprendiz.keys import MAX_FAILURES

    path = tmp_path / "keys.yaml"
    _, record = KeyFile(path).create("team-a")
    gate = Gatekeeper(str(path), reload_s=60)
    reasons = []
    for i in range(MAX_FAILURES + 1):
        try:
            asyncio.run(gate.authenticate(f"Bearer apz_{record.id}_" + f"{i:q>43}"))
        except Refusal as refusal:
            reasons.append(refusal)
    assert [r.reason for r in reasons] == ["invalid_key"] * MAX_FAILURES + ["failed_attempts"]
    last = reasons[-1].error
    assert isinstance(last, RateLimitedError) and int(last.headers["Retry-After"]) >= 1
    assert reasons[-1].key == "unknown"  # the tenant is not named to whoever guesses its key id


def test_a_key_seen_before_is_checked_on_the_event_loop_without_scrypt(tmp_path, monkeypatch):
    """scrypt (tens of milliseconds) runs on a thread once per key; after that the check is a
    dictionary lookup on the event loop, with no thread hop."""
    from aprendiz.services.gateway import auth

    keys = KeyFile(tmp_path / "keys.yaml")
    key, _ = keys.create("team-a")
    gate = Gatekeeper(str(tmp_path / "keys.yaml"))
    hops = []
    real_to_thread = asyncio.to_thread

    async def counted(fn, *args):
        hops.append(fn.__name__)
        return await real_to_thread(fn, *args)

    monkeypatch.setattr(auth.asyncio, "to_thread", counted)
    for _ in range(3):
        assert asyncio.run(gate.authenticate(f"Bearer {key}")).name == "team-a"
    assert hops == ["authenticate"]
    keys.revoke("team-a")
    gate._reload()
    with pytest.raises(Refusal):
        asyncio.run(gate.authenticate(f"Bearer {key}"))  # a revoked key is refused, cache or not


def test_refusals_answer_401_403_429_with_their_headers():
    from aprendiz.errors import RateLimitedError

    unauth = to_response(AuthenticationError("no key"))
    assert unauth.status_code == 401 and unauth.headers["www-authenticate"].startswith("Bearer")
    assert to_response(PermissionDeniedError("no")).status_code == 403
    limited = to_response(RateLimitedError("slow down", retry_after_s=2.2))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    unavailable = to_response(ServiceUnavailableError("full"))
    assert unavailable.status_code == 503 and unavailable.headers["retry-after"] == "1"
    assert to_response(UpstreamError("down")).status_code == 502
    assert to_response(UpstreamTimeoutError("slow")).status_code == 504


# -- limits ------------------------------------------------------------------------------
def test_requests_per_minute_is_a_bucket_that_refills():
    clock = Clock()
    buckets = Buckets(clock)
    assert [buckets.admit("k", 3, None)[0] for _ in range(3)] == [None, None, None]
    reason, wait = buckets.admit("k", 3, None)
    assert reason == "requests_per_minute" and wait == pytest.approx(20.0)
    clock.now += 20
    assert buckets.admit("k", 3, None) == (None, 0.0)
    assert buckets.admit("other", 3, None) == (None, 0.0)  # per key


def test_the_buckets_admit_no_more_than_the_limit_from_many_threads():
    """Serve runs the RateLimiter's sync methods on a thread pool: admit's check and take must be
    one step, or threads switching in between admit more than the bucket holds."""
    import sys
    import threading

    buckets, limit, admitted = Buckets(lambda: 1000.0), 2000, []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race shows at once
    try:
        def client():
            admitted.append(sum(buckets.admit("k", limit, None)[0] is None for _ in range(500)))

        threads = [threading.Thread(target=client) for _ in range(16)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        sys.setswitchinterval(switch)
    assert sum(admitted) == limit


class Handle:
    """A RateLimiter deployment handle that answers after ``delay_s`` (None: never) or raises ``fail``."""

    def __init__(self, delay_s: float | None = 0.0, fail: Exception | None = None):
        self.delay_s, self.fail, self.calls = delay_s, fail, []
        for method in ("admit", "charge"):
            setattr(self, method, type("Method", (), {"remote": staticmethod(self._call(method))}))

    def _call(self, method):
        def remote(*args):
            self.calls.append(method)

            async def answer():
                if self.fail is not None:
                    raise self.fail
                await asyncio.sleep(3600 if self.delay_s is None else self.delay_s)
                return (None, 0.0) if method == "admit" else None

            return answer()

        return remote


LIMITED = Principal("team-a", "0123abcd", requests_per_minute=10, tokens_per_minute=100)


@pytest.mark.parametrize("handle, reason", [(Handle(delay_s=None), "timeout"),
                                            (Handle(fail=RuntimeError("replica died")), "unreachable")])
def test_a_limiter_that_hangs_or_fails_lets_the_request_through_in_time_and_counts_it(handle, reason, caplog):
    """Fail open (the limits protect capacity, not secrets), within ``timeout_s``, counted each time
    and logged at most once a minute."""
    failures = []
    limiter = Limiter(handle, timeout_s=0.2, on_fail_open=lambda call, why: failures.append((call, why)))

    async def go():
        started = time.perf_counter()
        for _ in range(3):
            await limiter.admit(LIMITED)
        await limiter.charge(LIMITED, 50)
        return time.perf_counter() - started

    with caplog.at_level("WARNING", logger="aprendiz.gateway"):
        elapsed = asyncio.run(go())
    assert elapsed < 4 * 0.2 + 0.5
    assert failures == [("admit", reason)] * 3 + [("charge", reason)]
    assert len([r for r in caplog.records if "rate limiter" in r.getMessage()]) == 1


def test_a_limiter_that_answers_in_time_is_obeyed():
    failures: list = []
    limiter = Limiter(Handle(delay_s=0.01), timeout_s=1.0, on_fail_open=lambda *a: failures.append(a))
    asyncio.run(limiter.admit(LIMITED))
    assert failures == []


def test_tokens_per_minute_refuses_once_the_bucket_is_spent():
    clock = Clock()
    buckets = Buckets(clock)
    assert buckets.admit("k", None, 600) == (None, 0.0)
    buckets.charge("k", 900, 600)  # a request may overdraw: its size is known only after it
    reason, wait = buckets.admit("k", None, 600)
    assert reason == "tokens_per_minute" and wait == pytest.approx(301 / 10)
    clock.now += 31
    assert buckets.admit("k", None, 600) == (None, 0.0)


# -- metering ----------------------------------------------------------------------------
def _data(chunk) -> str:
    return chunk if isinstance(chunk, str) else json.dumps(chunk)


def _events(*chunks):
    """A backend's stream that brings one chunk at a time."""
    async def gen():
        for chunk in chunks:
            yield [_data(chunk)]

    return gen()


def _batches(*batches):
    """A backend's stream that brings its chunks in batches (a replica's batched packets)."""
    async def gen():
        for batch in batches:
            yield [_data(chunk) for chunk in batch]

    return gen()


async def _drain(stream):
    return [e async for e in stream]


def test_the_stream_passes_through_with_usage_noted_and_the_cost_before_done():
    finished = []

    async def finish(record):
        finished.append(record.usage)
        return 0.25

    chunks = (
        {"choices": [{"delta": {"content": "Ho"}}]},
        {"choices": [{"delta": {"content": "la"}}]},
        {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}},
        "[DONE]",
    )
    record = StreamRecord(started=time.perf_counter())
    out = asyncio.run(_drain(metered(_events(*chunks), record, keep_usage=False, collect_text=True, finish=finish)))
    assert len(out) == 3 and all(e.endswith("\n\n") for e in out)
    assert '"usage"' not in "".join(out)  # the client did not ask for the usage chunk
    assert out[-1] == ": x-aprendiz-cost-usd=0.2500000000\n\ndata: [DONE]\n\n"
    assert finished == [Usage(7, 2, True)] and "".join(record.text) == "Hola"
    assert record.first_token_at is not None

    kept = asyncio.run(_drain(metered(_events(*chunks), StreamRecord(0.0), keep_usage=True, collect_text=False,
                                      finish=finish)))
    assert sum('"usage"' in e for e in kept) == 1


def test_chunks_that_arrive_together_go_to_the_client_in_one_write():
    """A replica's packet of several chunks is one write to the client (one pass through the ASGI
    stack and one socket write, not one per token), framed and in order, usage still noted."""
    async def finish(record):
        return 0.5

    batches = (
        [{"choices": [{"delta": {"content": "a"}}]}, {"choices": [{"delta": {"content": "b"}}]}],
        [{"choices": [{"delta": {"content": "c"}}]}],
        [{"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 3}}, "[DONE]"],
    )
    record = StreamRecord(0.0)
    out = asyncio.run(_drain(metered(_batches(*batches), record, keep_usage=False, collect_text=False, finish=finish)))
    assert out == [
        'data: {"choices": [{"delta": {"content": "a"}}]}\n\ndata: {"choices": [{"delta": {"content": "b"}}]}\n\n',
        'data: {"choices": [{"delta": {"content": "c"}}]}\n\n',
        ": x-aprendiz-cost-usd=0.5000000000\n\ndata: [DONE]\n\n",
    ]
    assert record.usage == Usage(1, 3, True) and record.sent_text() == "abc"


def test_a_stream_the_client_leaves_is_still_metered_once():
    calls = []

    async def finish(record):
        calls.append(record)
        return 0.0

    async def run():
        stream = metered(_events({"choices": [{"delta": {"content": "a"}}]}, "[DONE]"), StreamRecord(0.0),
                         keep_usage=False, collect_text=False, finish=finish)
        await stream.__anext__()
        await stream.aclose()

    asyncio.run(run())
    assert len(calls) == 1


def test_a_hosted_stream_the_client_leaves_bills_the_tokens_it_was_sent(recording_metrics):
    """The usage comes in the last chunk: a client leaving before it must not get the tokens it
    read for free (a way around tokens-per-minute limits)."""
    async def tokens():
        for word in ("uno ", "dos ", "tres ", "cuatro "):
            yield [json.dumps({"choices": [{"delta": {"content": word}}]})]
        yield [json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})]
        yield ["[DONE]"]

    class StreamingHosted(FakeHosted):
        async def generate(self, model, route, payload, *, first_chunk_s, headers):
            return Answer(model, "hosted", events=tokens())

    gateway, metrics, routes = _gateway(_provider_ok, recording_metrics(), hosted=StreamingHosted())
    admission = Admission(ANONYMOUS, {r.id: r for r in routes.generators()}["hosted"], "hosted")

    async def run():
        response = await gateway.generate(admission, "chat", {"model": "hosted", "messages": [], "stream": True}, {})
        body = response.body_iterator
        for _ in range(3):
            await body.__anext__()
        await body.aclose()  # the client went away after three tokens

    asyncio.run(run())
    (generation,) = metrics.generations
    assert generation["completion_tokens"] >= 3


def test_tokens_are_counted_when_a_backend_reports_none(tmp_path):
    counter = TokenCounter()
    usage = counter.usage({"messages": [{"role": "user", "content": "x" * 40}]}, "y" * 9)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reported) == (10, 3, False)
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"hola": 0, "mundo": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    counted = TokenCounter(str(tmp_path)).usage({"prompt": "hola mundo hola"}, "mundo")
    assert (counted.prompt_tokens, counted.completion_tokens) == (3, 1)


def test_a_hosted_request_costs_its_share_of_the_replica_hour():
    assert hosted_share_usd(3.6, 10.0, 1) == pytest.approx(0.01)
    assert hosted_share_usd(3.6, 10.0, 4) == pytest.approx(0.0025)


# -- rented upstreams ----------------------------------------------------------------------
RENTED = RentedModel(id="rented", base_url="https://provider.example/v1", upstream_model="big-model",
                     api_key_env="PROVIDER_KEY", input_usd_per_million=2.0, output_usd_per_million=8.0, timeout_s=3)


def _upstream(handler) -> RentedUpstream:
    return RentedUpstream(RENTED, UPSTREAM_KEY, httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def test_requests_reach_the_provider_with_its_key_and_model():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(url=str(request.url), auth=request.headers["authorization"], body=json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 3}})

    answer = asyncio.run(_upstream(handler).call("chat", {"model": "big-model", "messages": []}))
    assert answer.body["choices"][0]["message"]["content"] == "hi"
    assert seen == {"url": "https://provider.example/v1/chat/completions", "auth": f"Bearer {UPSTREAM_KEY}",
                    "body": {"model": "big-model", "messages": []}}


@pytest.mark.parametrize(
    "status, error, text",
    [
        (400, InvalidRequestError, "refused the request: max_tokens is too large"),
        (401, UpstreamError, "refused the platform's configuration (401)"),
        (429, ServiceUnavailableError, "rate limiting"),
        (500, UpstreamError, "failed (500)"),
        (504, UpstreamTimeoutError, "timed out"),
    ],
)
def test_provider_errors_become_clear_errors_without_the_key(status, error, text):
    def handler(request):
        return httpx.Response(status, json={"error": {"message": f"max_tokens is too large (key {UPSTREAM_KEY})"}})

    with pytest.raises(error) as info:
        asyncio.run(_upstream(handler).call("chat", {"model": "big-model"}))
    assert text in info.value.message and UPSTREAM_KEY not in info.value.message


@pytest.mark.parametrize(
    "exc, error", [(httpx.ConnectError("refused"), UpstreamError), (httpx.ReadTimeout("slow"), UpstreamTimeoutError)]
)
def test_an_unreachable_or_silent_provider_is_502_or_504(exc, error):
    def handler(request):
        raise exc

    with pytest.raises(error) as info:
        asyncio.run(_upstream(handler).call("completions", {"model": "big-model", "stream": True}))
    assert type(info.value) is error and "provider.example" in info.value.message


def test_a_stream_passes_through_event_by_event():
    body = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"choices":[{"delta":{"content":"b"}}]}\n\ndata: [DONE]\n\n'

    def handler(request):
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    async def run():
        answer = await _upstream(handler).call("chat", {"model": "big-model", "stream": True})
        return [e async for e in answer.events]

    assert asyncio.run(run()) == [['{"choices":[{"delta":{"content":"a"}}]}'], ['{"choices":[{"delta":{"content":"b"}}]}'],
                                  ["[DONE]"]]


def test_a_stream_that_is_not_server_sent_events_ends_with_an_error_event():
    def handler(request):
        return httpx.Response(200, content=b"plain text", headers={"content-type": "text/plain"})

    async def run():
        answer = await _upstream(handler).call("chat", {"model": "big-model", "stream": True})
        return [e async for e in answer.events]

    (error, done), = asyncio.run(run())
    assert json.loads(error)["error"]["code"] == 502 and "not server-sent events" in error and done == "[DONE]"


def test_a_hosted_stream_whose_replica_dies_ends_with_an_error_event():
    """The 200 and the first tokens are sent already: a replica that dies mid-stream must end the
    stream with an OpenAI-shaped error event and [DONE], not a silent cut."""
    from ray.exceptions import RayActorError

    from aprendiz.services.gateway.backends import HostedGenerator

    class DyingStream:
        def __init__(self):
            self.sent = 0

        def __aiter__(self):
            return self

        async def __anext__(self):
            self.sent += 1
            if self.sent > 1:
                raise RayActorError()
            return 'data: {"choices":[{"delta":{"content":"b"}}]}\n\n'

    async def run():
        first = 'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
        return [e async for e in HostedGenerator._events("tiny", first, DyingStream())]

    *tokens, (error, done) = asyncio.run(run())
    assert tokens == [['{"choices":[{"delta":{"content":"a"}}]}'], ['{"choices":[{"delta":{"content":"b"}}]}']]
    assert done == "[DONE]"
    body = json.loads(error)["error"]
    assert body["code"] == 502 and "tiny" in body["message"] and "stopped" in body["message"]


# -- the gateway: backends, fallback, cost -------------------------------------------------
class FakeHosted:
    """A hosted generator backend that answers a fixed body, or raises."""

    kind = "hosted"

    def __init__(self, body=None, error=None):
        self.body, self.error, self.calls = body, error, []

    async def generate(self, model, route, payload, *, first_chunk_s, headers):
        self.calls.append({"model": model, "payload": payload, "first_chunk_s": first_chunk_s})
        if self.error is not None:
            raise self.error
        return Answer(model, "hosted", body=self.body)


def _gateway(upstream_handler, metrics, *, hosted=None, fallbacks=True):
    hosted = hosted or FakeHosted(error=AssertionError("the hosted model must not be called"))
    routes = RouteTable([
        ModelRoute("hosted", hosted, hourly_usd=3.6, fallback="rented" if fallbacks else None, fallback_after_s=1.0),
        ModelRoute("rented", _upstream(upstream_handler), fallback="hosted" if fallbacks else None,
                   counter=TokenCounter()),
    ])
    gateway = Gateway(routes=routes, gatekeeper=Gatekeeper(None), limiter=Limiter(None), metrics=metrics)
    return gateway, metrics, routes


def _generate(gateway, routes, model):
    admission = Admission(ANONYMOUS, {r.id: r for r in routes.generators()}[model], model)
    return asyncio.run(gateway.generate(admission, "chat", {"model": model, "messages": []}, {}))


def _provider_ok(request):
    return httpx.Response(200, json={"choices": [{"message": {"content": "rented answer"}}],
                                     "usage": {"prompt_tokens": 1000, "completion_tokens": 500}})


def test_rented_answers_carry_their_billed_cost(recording_metrics):
    gateway, metrics, routes = _gateway(_provider_ok, recording_metrics())
    response = _generate(gateway, routes, "rented")
    assert response.headers[SERVED_BY] == "rented"
    assert float(response.headers[COST]) == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    assert metrics.generations[0]["cost_usd"] == pytest.approx(0.006)
    assert metrics.generations[0]["prompt_tokens"] == 1000


def test_a_full_hosted_queue_hands_the_request_to_its_rented_fallback(recording_metrics):
    hosted = FakeHosted(error=BackendUnavailableError("queue full", "queue_full"))
    gateway, metrics, routes = _gateway(_provider_ok, recording_metrics(), hosted=hosted)
    response = _generate(gateway, routes, "hosted")
    assert response.headers[SERVED_BY] == "rented" and response.headers["x-aprendiz-backend"] == "rented"
    assert metrics.fallbacks.calls == [(1, {"model": "hosted", "fallback": "rented", "reason": "queue_full"})]


def test_only_a_stream_falls_back_for_slowness(recording_metrics):
    """fallback_after_s waits for a stream's first token. A non-streamed answer arrives whole: a long
    generation is not slow to start, and re-running it on the paid fallback would bill it twice."""
    hosted = FakeHosted(body={"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    gateway, _, routes = _gateway(_provider_ok, recording_metrics(), hosted=hosted)
    _generate(gateway, routes, "hosted")
    admission = Admission(ANONYMOUS, {r.id: r for r in routes.generators()}["hosted"], "hosted")
    try:
        asyncio.run(gateway.generate(admission, "chat", {"model": "hosted", "messages": [], "stream": True}, {}))
    except Exception:
        pass  # the fake answers a body, not a stream: only the wait it was given matters here
    assert [c["first_chunk_s"] for c in hosted.calls] == [None, 1.0]


def test_a_failed_provider_hands_the_request_to_the_hosted_fallback(recording_metrics):
    def down(request):
        raise httpx.ConnectError("refused")

    hosted = FakeHosted(body={"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}})
    gateway, metrics, routes = _gateway(down, recording_metrics(), hosted=hosted)
    response = _generate(gateway, routes, "rented")
    assert response.headers[SERVED_BY] == "hosted"
    assert hosted.calls[0]["model"] == "hosted" and hosted.calls[0]["payload"]["model"] == "hosted"
    assert metrics.fallbacks.calls[0][1]["reason"] == "upstream_error"
    assert metrics.upstream_errors.calls[0][1] == {"model": "rented", "reason": "unreachable_or_failed"}


def test_a_fallback_that_lacks_the_requests_tools_does_not_take_it(recording_metrics):
    """Handing a request with tools to a model without them would answer it without its tools: the
    client gets the provider's failure instead, and a request without tools still falls back."""
    from aprendiz.capabilities import Capabilities

    def down(request):
        raise httpx.ConnectError("refused")

    hosted = FakeHosted(body={"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}})
    gateway, metrics, routes = _gateway(down, recording_metrics(), hosted=hosted)
    routes.fallback_of(routes.generators()[1]).capabilities = Capabilities(tools=False)
    admission = Admission(ANONYMOUS, routes.generators()[1], "rented")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    with pytest.raises(UpstreamError):
        asyncio.run(gateway.generate(admission, "chat", {"model": "rented", "messages": [], "tools": tools}, {}))
    assert hosted.calls == [] and metrics.fallbacks.calls == []
    asyncio.run(gateway.generate(admission, "chat", {"model": "rented", "messages": []}, {}))
    assert len(hosted.calls) == 1


def test_a_model_without_a_feature_refuses_it_before_any_backend_is_called(recording_metrics):
    from aprendiz.capabilities import Capabilities

    hosted = FakeHosted(body={"choices": []})
    gateway, _, routes = _gateway(_provider_ok, recording_metrics(), hosted=hosted)
    routes.generators()[0].capabilities = Capabilities(structured_outputs=False)
    admission = Admission(ANONYMOUS, routes.generators()[0], "hosted")
    payload = {"model": "hosted", "messages": [], "response_format": {"type": "json_object"}}
    with pytest.raises(InvalidRequestError, match="does not support `structured_outputs`"):
        asyncio.run(gateway.generate(admission, "chat", payload, {}))
    assert hosted.calls == []


def test_counted_tokens_include_the_tool_definitions_and_the_schema():
    """A provider that reports no usage is billed from counted tokens: the tools and schema are prompt too."""
    counter = TokenCounter()
    plain = {"messages": [{"role": "user", "content": "hola"}]}
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    with_tools = counter.usage({**plain, "tools": tools}, "").prompt_tokens
    with_schema = counter.usage({**plain, "response_format": {"type": "json_schema", "json_schema": {"schema": {
        "type": "object"}}}}, "").prompt_tokens
    assert with_tools > counter.usage(plain, "").prompt_tokens + 10
    assert with_schema > counter.usage(plain, "").prompt_tokens


def test_without_a_fallback_the_provider_error_reaches_the_client(recording_metrics):
    def down(request):
        raise httpx.ConnectError("refused")

    gateway, _, routes = _gateway(down, recording_metrics(), fallbacks=False)
    with pytest.raises(UpstreamError):
        _generate(gateway, routes, "rented")


# -- Ray's errors, mapped in one place --------------------------------------------------------
@pytest.mark.parametrize("kind", ["plain", "as_instanceof_cause"])
def test_a_domain_error_raised_behind_a_handle_reaches_the_client_as_itself(kind):
    from ray.exceptions import RayTaskError

    from aprendiz.services.gateway.backends import ray_errors

    cause = InvalidRequestError("instances[0][1] must be a number", param="instances")
    wrapped = RayTaskError("predict_v1", "Traceback ...", cause)
    if kind == "as_instanceof_cause":  # how Ray raises it: a RayTaskError that is also an InvalidRequestError
        wrapped = wrapped.as_instanceof_cause()
    with pytest.raises(InvalidRequestError) as raised:
        with ray_errors("cancer"):
            raise wrapped
    assert raised.value is cause and to_response(raised.value).status_code == 400


def test_back_pressure_and_a_dead_replica_are_503s_with_their_reason():
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError

    from aprendiz.services.gateway.backends import ray_errors

    for exc, reason in ((BackPressureError(num_queued_requests=9, max_queued_requests=9), "queue_full"),
                        (RayActorError(), "down")):
        with pytest.raises(BackendUnavailableError) as raised:
            with ray_errors("tiny"):
                raise exc
        assert raised.value.reason == reason and to_response(raised.value).status_code == 503


# -- a classifier in replicas of its own: a replica that dies -----------------------------
class DyingReplicas:
    """A deployment handle whose replica dies under the first ``deaths`` calls (as a SIGKILL'd
    replica does under Serve: ActorDiedError), then answers from its replacement."""

    def __init__(self, deaths: int):
        self.deaths, self.calls = deaths, []

    def __getattr__(self, method):
        handle = self

        class Method:
            async def remote(self, *args):
                handle.calls.append(method)
                if len(handle.calls) <= handle.deaths:
                    from ray.exceptions import ActorDiedError

                    raise ActorDiedError()
                return {"predictions": [{"label": 1}]}

        return Method()


def _replica_classifier(handle):
    from aprendiz.services.classifier.placement import Placement
    from aprendiz.services.gateway.backends import ReplicaClassifier

    return ReplicaClassifier("cancer", handle, Placement("replica", "configured"))


@pytest.mark.parametrize("method", ["predict_v1", "infer_v2", "metadata_v2", "ready"])
def test_an_idempotent_call_whose_replica_dies_is_retried_on_its_replacement(method):
    handle = DyingReplicas(deaths=2)
    assert asyncio.run(_replica_classifier(handle).call(method, {})) == {"predictions": [{"label": 1}]}
    assert handle.calls == [method] * 3


def test_feedback_is_not_retried_when_its_replica_dies():
    """The example may already be in the store: a second write would count it twice. The client
    gets a 503 and decides."""
    handle = DyingReplicas(deaths=1)
    with pytest.raises(BackendUnavailableError) as refused:
        asyncio.run(_replica_classifier(handle).call("feedback", {}))
    assert refused.value.reason == "down" and handle.calls == ["feedback"]


def test_retries_stop_at_their_deadline_with_a_503(monkeypatch):
    from aprendiz.services.gateway import backends

    monkeypatch.setattr(backends, "REPLICA_RETRY_S", 0.3)
    handle = DyingReplicas(deaths=10_000)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as refused:
        asyncio.run(_replica_classifier(handle).call("predict_v1", {}))
    assert refused.value.reason == "down" and time.monotonic() - started < 2 and len(handle.calls) >= 2


def test_a_deployment_that_failed_to_deploy_is_a_503_at_once():
    from ray.serve._private.common import DeploymentID
    from ray.serve.exceptions import DeploymentUnavailableError

    class Failed:
        calls = 0

        def __getattr__(self, method):
            class Method:
                async def remote(self, *args):
                    Failed.calls += 1
                    raise DeploymentUnavailableError(DeploymentID(name="cancer", app_name="aprendiz"))

            return Method()

    with pytest.raises(BackendUnavailableError):
        asyncio.run(_replica_classifier(Failed()).call("predict_v1", {}))
    assert Failed.calls == 1


@pytest.mark.parametrize(("message", "expected", "param"), [
    ("Requested sample logprobs of 30, which is greater than max allowed: 20 (parameter=logprobs, value=30)",
     "Requested sample logprobs of 30, which is greater than max allowed: 20", "logprobs"),
    ('Failed to transform json schema into a grammar: [02:54:27] <path>:4944: Unsupported type "bogus"',
     'Failed to transform json schema into a grammar: Unsupported type "bogus"', None),
    ("Message: prompt is too long (Request ID: abc-1), Internal exception: ray.llm._internal.serve... "
     "(Request ID: abc-1), original exception: prompt is too long", "prompt is too long", None),
])
def test_an_engines_rejection_reaches_the_client_as_its_reason_only(message, expected, param):
    """No Ray wrapping, request ids, time stamps or source lines: the reason, and the parameter it names."""
    from aprendiz.services.gateway.backends import engine_rejection

    error = engine_rejection(message, 400)
    assert (error.message, error.param, error.status) == (expected, param, 400)


# -- embeddings ---------------------------------------------------------------------------
class FakeEmbedderHandle:
    """The one call a hosted embedding route makes on its deployment: embed(texts)."""

    def __init__(self):
        self.calls = []
        self.embed = self

    def remote(self, texts):
        self.calls.append(texts)

        async def answer():
            return np.tile(np.array([[0.6, 0.8]], dtype=np.float32), (len(texts), 1)), 3 * len(texts)

        return answer()


def _embedding_gateway(metrics, upstream_handler=None):
    from aprendiz.config import RentedModel
    from aprendiz.services.gateway.backends import HostedEmbedder

    handle = FakeEmbedderHandle()
    rented = RentedModel(id="rented-embed", base_url="https://api.example/v1", upstream_model="text-embedding-3-small",
                         kind="embedding", input_usd_per_million=20.0)
    routes = RouteTable([
        ModelRoute("hosted", FakeHosted(body={"choices": []})),
        ModelRoute("embed", HostedEmbedder("embed", handle, dimension=2, max_inputs=8), hourly_usd=3.6,
                   embedding=True),
        ModelRoute("rented-embed", RentedUpstream(rented, None, httpx.AsyncClient(
            transport=httpx.MockTransport(upstream_handler or _provider_ok))), embedding=True, counter=TokenCounter()),
    ])
    gateway = Gateway(routes=routes, gatekeeper=Gatekeeper(None), limiter=Limiter(None), metrics=metrics)
    return gateway, routes, handle


def _embed(gateway, routes, model, payload):
    admission = Admission(ANONYMOUS, routes.embedder(model), model)
    response = asyncio.run(gateway.embed(admission, {"model": model, **payload}))
    return response, json.loads(response.body)


def test_a_hosted_embedding_is_answered_in_openais_shape_and_metered(recording_metrics):
    gateway, routes, handle = _embedding_gateway(recording_metrics())
    response, body = _embed(gateway, routes, "embed", {"input": ["hola", "adiós"]})
    assert handle.calls == [["hola", "adiós"]]
    assert [d["embedding"] for d in body["data"]] == [pytest.approx([0.6, 0.8])] * 2
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6} and body["model"] == "embed"
    assert response.headers[SERVED_BY] == "embed" and float(response.headers[COST]) >= 0
    (metered,) = gateway._metrics.embeddings
    assert metered["prompt_tokens"] == 6 and metered["model"] == "embed" and metered["backend"] == "hosted"


def test_a_bad_embedding_request_is_refused_before_a_replica_is_called(recording_metrics):
    gateway, routes, handle = _embedding_gateway(recording_metrics())
    with pytest.raises(InvalidRequestError, match="cannot be shortened"):
        _embed(gateway, routes, "embed", {"input": "hola", "dimensions": 1})
    assert handle.calls == []


def test_a_rented_embedding_goes_to_the_providers_embeddings_and_is_billed_at_its_price(recording_metrics):
    seen = {}

    def provider(request):
        seen.update(path=request.url.path, body=json.loads(request.content))
        return httpx.Response(200, json={"object": "list", "model": "text-embedding-3-small", "usage": {
            "prompt_tokens": 1000, "total_tokens": 1000}, "data": [{"object": "embedding", "index": 0,
                                                                    "embedding": [0.1, 0.2]}]})

    gateway, routes, _ = _embedding_gateway(recording_metrics(), provider)
    response, body = _embed(gateway, routes, "rented-embed", {"input": "hola"})
    assert seen["path"] == "/v1/embeddings" and seen["body"]["model"] == "text-embedding-3-small"
    assert body["model"] == "rented-embed" and float(response.headers[COST]) == pytest.approx(1000 * 20.0 / 1e6)


def test_chat_and_embedding_models_each_point_to_their_own_route(recording_metrics):
    gateway, routes, _ = _embedding_gateway(recording_metrics())
    with pytest.raises(InvalidRequestError, match="is a chat model: send it to /v1/chat/completions"):
        routes.embedder("hosted")
    with pytest.raises(InvalidRequestError, match="is an embedding model: send it to /v1/embeddings"):
        asyncio.run(routes.generator("embed"))
    with pytest.raises(ModelNotFoundError, match=r"available: \['embed', 'rented-embed'\]"):
        routes.embedder("nope")


@pytest.mark.parametrize(("extra", "feature"), [
    ({}, "chat"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}}}, "structured_outputs"),
])
def test_a_generation_is_metered_under_its_feature(recording_metrics, extra, feature):
    """The dashboards split requests and tokens by feature: chat, tools, structured outputs, embeddings."""
    hosted = FakeHosted(body={"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}})
    gateway, metrics, routes = _gateway(_provider_ok, recording_metrics(), hosted=hosted)
    admission = Admission(ANONYMOUS, routes.generators()[0], "hosted")
    asyncio.run(gateway.generate(admission, "chat", {"model": "hosted", "messages": [], **extra}, {}))
    assert metrics.generations[0]["feature"] == feature


def test_a_rented_embedding_providers_failure_is_counted_as_an_upstream_error(recording_metrics):
    def down(request):
        raise httpx.ConnectError("refused")

    gateway, routes, _ = _embedding_gateway(recording_metrics(), down)
    with pytest.raises(UpstreamError):
        _embed(gateway, routes, "rented-embed", {"input": "hola"})
    assert gateway._metrics.upstream_errors.calls == [(1, {"model": "rented-embed", "reason": "unreachable_or_failed"})]
