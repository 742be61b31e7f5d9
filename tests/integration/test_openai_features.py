"""What chat bots are built on, through the one entrance with the official `openai` client:
structured outputs, tool calls (forced, streamed, and a round trip with a `tool` turn), the
capability table, request caps, and the engine's refusals in OpenAI's shape."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = "aprendiz-tiny-chat"
NO_TOOLS = "tiny-flor"  # a hosted family model with no tool parser
RENTED_PLAIN = "rented-plain"  # a rented model whose config says: no tools, no schemas
VERDICT = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["si", "no"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}
GET_TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time now in a time zone.",
        "parameters": {
            "type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"], "additionalProperties": False,
        },
    },
}
ASK_TIME = [{"role": "user", "content": "What time is it?"}]
ASK_TICKET = [{"role": "user", "content": "Please open a ticket: the printer does not work"}]
# The tools the default model learned to call (its corpus's): forced calls use them. A forced call is
# written in the model's own format under a grammar (vLLM's strict structural tag for hermes), and that
# grammar allows any whitespace between JSON tokens: a model that does not know how to fill an
# argument (GET_TIME's zone, for this one) may write spaces until max_tokens.
SHIPPED_TOOLS = [
    {"type": "function", "function": {"name": "get_time", "description": "The time now",
                                      "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "open_ticket", "description": "Open a support ticket", "parameters": {
        "type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}}},
]


@pytest.fixture(scope="module")
def client(platform) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform.base_url}/v1", api_key=platform.api_key, max_retries=0, timeout=120)


def test_a_json_schema_answer_parses_and_validates(client):
    """Guided decoding with no free whitespace: even the tiny model's answer is the schema's JSON."""
    for seed in range(3):
        response = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "¿Es un tumor?"}], max_tokens=60, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT,
                                                                    "strict": True}},
        )
        choice = response.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), VERDICT)


def test_a_json_object_answer_is_json_with_no_free_whitespace(client):
    """`json_object` bounds no string: the answer is JSON as far as it goes, with no whitespace
    between tokens, and whole (it parses) whenever the model stopped on its own; a string the tiny
    model never closes ends at max_tokens, which `finish_reason: length` says."""
    for seed in range(3):
        response = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "JSON, please"}], max_tokens=120, seed=seed,
            response_format={"type": "json_object"},
        )
        choice = response.choices[0]
        text = choice.message.content
        assert text.startswith("{") and not text[1:2].isspace(), text
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(text), dict)
        else:
            assert choice.finish_reason == "length" and response.usage.completion_tokens == 120


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "open_ticket"}}])
def test_a_forced_tool_call_comes_back_as_tool_calls(client, tool_choice):
    response = client.chat.completions.create(model=MODEL, messages=ASK_TICKET, tools=SHIPPED_TOOLS,
                                              tool_choice=tool_choice, max_tokens=200, temperature=0)
    message = response.choices[0].message
    assert message.tool_calls, (response.choices[0].finish_reason, message.content)
    (call,) = message.tool_calls
    # "required": a call to one of the tools, the model's pick (the grammar holds it to the tools, not
    # to the fitting one); a named tool: that one.
    allowed = [t["function"] for t in SHIPPED_TOOLS if tool_choice == "required" or t["function"]["name"] == "open_ticket"]
    assert call.type == "function" and call.id and call.function.name in [f["name"] for f in allowed]
    (tool,) = [f for f in allowed if f["name"] == call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["parameters"])
    plain = client.chat.completions.create(model=MODEL, messages=ASK_TICKET, max_tokens=1)
    assert response.usage.prompt_tokens > plain.usage.prompt_tokens + 5  # the tools are in the prompt, and billed


def test_a_tool_round_trip_the_model_calls_the_client_answers_the_model_goes_on(client):
    first = client.chat.completions.create(model=MODEL, messages=ASK_TIME, tools=SHIPPED_TOOLS, tool_choice="required",
                                           max_tokens=200, temperature=0)
    message = first.choices[0].message
    (call,) = message.tool_calls
    turns = [*ASK_TIME, message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "10:00 CET"}]
    second = client.chat.completions.create(model=MODEL, messages=turns, tools=SHIPPED_TOOLS, max_tokens=30)
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls
    assert second.usage.prompt_tokens > first.usage.prompt_tokens  # the call and its answer were in the prompt


def test_a_streamed_tool_call_arrives_as_tool_call_deltas(client):
    stream = client.chat.completions.create(model=MODEL, messages=ASK_TIME, tools=SHIPPED_TOOLS, tool_choice="required",
                                            max_tokens=200, stream=True, temperature=0)
    name, arguments, finish = "", "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            assert delta.index == 0
            name += delta.function.name or ""
            arguments += delta.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_time" and finish == "tool_calls"
    jsonschema.validate(json.loads(arguments), SHIPPED_TOOLS[0]["function"]["parameters"])


def test_the_capability_table_is_in_the_model_list(client):
    models = {m.id: m.model_dump() for m in client.models.list().data}
    capabilities = {name: (m.get("metadata") or {}).get("capabilities") for name, m in models.items()}
    assert capabilities[MODEL] == {"structured_outputs": True, "tools": True, "logprobs": True, "n": True,
                                   "seed": True}
    assert capabilities[NO_TOOLS]["tools"] is False and capabilities[NO_TOOLS]["structured_outputs"] is True
    assert capabilities[RENTED_PLAIN]["tools"] is False and capabilities[RENTED_PLAIN]["structured_outputs"] is False
    adapter = next(name for name in models if name.startswith(f"{MODEL}:"))
    assert capabilities[adapter] == capabilities[MODEL]  # an adapter runs on its base model's engine


@pytest.mark.parametrize(("model", "extra", "feature"), [
    (NO_TOOLS, {"tools": [GET_TIME]}, "tools"),
    (RENTED_PLAIN, {"tools": [GET_TIME], "tool_choice": "auto"}, "tools"),
    (RENTED_PLAIN, {"response_format": {"type": "json_object"}}, "structured_outputs"),
])
def test_a_feature_the_model_lacks_is_a_400_that_says_so(client, model, extra, feature):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=model, messages=ASK_TIME, max_tokens=4, **extra)
    error = refused.value.body
    assert error["type"] == "invalid_request_error" and f"`{model}` does not support `{feature}`" in error["message"]


@pytest.mark.parametrize(("extra", "param"), [({"n": 5}, "n"), ({"logprobs": True, "top_logprobs": 6}, "top_logprobs")])
def test_a_request_over_a_cap_is_a_400_naming_the_cap(client, extra, param):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=ASK_TIME, max_tokens=4, **extra)
    assert refused.value.body["param"] == param and f"request_caps.{param}" in refused.value.body["message"]


def test_n_logprobs_and_seed_are_honoured(client):
    kwargs = {"model": MODEL, "messages": ASK_TIME, "max_tokens": 8, "n": 2, "logprobs": True, "top_logprobs": 2,
              "seed": 7, "temperature": 1.0}
    first, again = client.chat.completions.create(**kwargs), client.chat.completions.create(**kwargs)
    assert len(first.choices) == 2
    assert all(len(t.top_logprobs) == 2 for c in first.choices for t in c.logprobs.content)
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]


def test_an_engine_refusal_is_a_clean_400_and_the_model_keeps_serving(client):
    """A schema the grammar compiler rejects: its reason, without time stamps or source lines."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL, messages=ASK_TIME, max_tokens=4,
            response_format={"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "bogus"}}},
        )
    error = refused.value.body
    assert error["type"] == "invalid_request_error" and "bogus" in error["message"]
    assert "<path>" not in error["message"] and "Internal exception" not in error["message"]
    assert client.chat.completions.create(model=MODEL, messages=ASK_TIME, max_tokens=4).choices




@pytest.mark.parametrize("question", ["¿Qué hora es?", "What time is it?"])
def test_the_default_model_calls_a_tool_on_its_own_and_answers_from_the_tools_turn(client, question):
    """tool_choice auto: the model learned from its corpus's tool conversations to call get_time when
    asked the time, and to answer with a time once the client's `tool` turn gives one."""
    asked = [{"role": "user", "content": question}]
    first = client.chat.completions.create(model=MODEL, messages=asked, tools=SHIPPED_TOOLS, max_tokens=60,
                                           temperature=0)
    assert first.choices[0].finish_reason == "tool_calls", first.choices[0].message.content
    (call,) = first.choices[0].message.tool_calls
    assert call.function.name == "get_time" and json.loads(call.function.arguments) == {}
    turns = [*asked, first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "17:45"}]
    second = client.chat.completions.create(model=MODEL, messages=turns, tools=SHIPPED_TOOLS, max_tokens=30,
                                            temperature=0)
    answer = second.choices[0].message
    # It uses the result: the tool's time, copied (the model learned to copy from tool turns whose values
    # were drawn anew every training epoch; it never saw 17:45 as the answer to anything).
    assert not answer.tool_calls and "17:45" in (answer.content or ""), answer.content
