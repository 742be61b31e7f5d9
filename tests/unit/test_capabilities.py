"""aprendiz.capabilities: what a request asks of a generator, refused with a 400 that names it."""

from __future__ import annotations

import pytest

from aprendiz.capabilities import Capabilities, RequestCaps, check_request, requested_features
from aprendiz.errors import InvalidRequestError

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hola"}]}
TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(("extra", "features"), [
    ({}, set()),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {}}}}, {"structured_outputs"}),
    ({"response_format": {"type": "json_object"}}, {"structured_outputs"}),
    ({"response_format": {"type": "text"}}, set()),
    ({"tools": TOOLS}, {"tools"}),
    ({"tools": TOOLS, "tool_choice": "none"}, set()),
    ({"messages": [{"role": "tool", "tool_call_id": "c", "content": "10:00"}]}, {"tools"}),
    ({"logprobs": True, "top_logprobs": 2}, {"logprobs"}),
    ({"n": 2}, {"n"}),
    ({"n": 1}, set()),
    ({"seed": 0}, {"seed"}),
])
def test_the_features_a_request_uses(extra, features):
    assert requested_features({**CHAT, **extra}) == features


def test_a_feature_the_model_lacks_is_a_400_that_names_it_and_the_model():
    with pytest.raises(InvalidRequestError) as refused:
        check_request("tiny", Capabilities(tools=False), RequestCaps(), {**CHAT, "tools": TOOLS})
    assert "`tiny` does not support `tools`" in refused.value.message and refused.value.param == "tools"
    assert check_request("tiny", Capabilities(), RequestCaps(), {**CHAT, "tools": TOOLS}) == {"tools"}


@pytest.mark.parametrize(("extra", "param", "cap"), [
    ({"n": 5}, "n", "request_caps.n"),
    ({"logprobs": True, "top_logprobs": 6}, "top_logprobs", "request_caps.top_logprobs"),
    ({"max_tokens": 300}, "max_tokens", "request_caps.max_tokens"),
    ({"max_completion_tokens": 300}, "max_completion_tokens", "request_caps.max_tokens"),
])
def test_a_request_over_a_cap_is_a_400_that_names_the_cap(extra, param, cap):
    caps = RequestCaps(n=4, top_logprobs=5, max_tokens=256)
    with pytest.raises(InvalidRequestError) as refused:
        check_request("tiny", Capabilities(), caps, {**CHAT, **extra})
    assert refused.value.param == param and cap in refused.value.message
    check_request("tiny", Capabilities(), caps, {**CHAT, "n": 4, "top_logprobs": 5, "max_tokens": 256})


def test_the_completions_apis_logprobs_is_the_number_of_top_tokens():
    with pytest.raises(InvalidRequestError, match="`logprobs` is 6"):
        check_request("tiny", Capabilities(), RequestCaps(), {"model": "m", "prompt": "a", "logprobs": 6})
    check_request("tiny", Capabilities(), RequestCaps(), {"model": "m", "prompt": "a", "logprobs": 5})
