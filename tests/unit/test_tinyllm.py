"""aprendiz.training.tinyllm: the embedded default generator."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest

from aprendiz.training.tinyllm.build import (
    CHAT_TEMPLATE,
    TinyLlmSpec,
    assistant_mask,
    build,
    is_built,
    load_corpus,
    load_tool_corpus,
    render,
    with_fresh_values,
)


def test_corpus_is_bilingual_and_well_formed():
    conversations = load_corpus()
    assert len(conversations) >= 300
    text = " ".join(m["content"] for c in conversations for m in c)
    for word in ("Hola", "gracias", "Hello", "thanks", "clasificador"):
        assert word.lower() in text.lower()
    for conversation in conversations:
        roles = [m["role"] for m in conversation if m["role"] != "system"]
        assert roles[::2] == ["user"] * len(roles[::2]) and roles[1::2] == ["assistant"] * len(roles[1::2])


def test_a_conversation_must_end_with_the_assistant(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        load_corpus(bad)


def small_spec(**changes) -> TinyLlmSpec:
    """A model small enough to train in a second."""
    return replace(TinyLlmSpec(vocab_size=400, hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2,
                               max_steps=3, batch_size=4), **changes)


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    spec = small_spec()
    return out, build(out, spec)


def test_build_writes_a_hugging_face_checkpoint(small_build):
    out, report = small_build
    assert is_built(out)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["head_dim"] == 32  # vLLM's CPU attention rejects head_dim 16
    assert report["steps"] == 3 and report["parameters"] > 0


def test_the_model_trains_for_all_its_steps_however_slow_the_machine(tmp_path, monkeypatch):
    """The shipped model is the same checkpoint on every machine: no wall-clock budget cuts its
    training short (a slow machine once got 672 of 900 steps, and a model that could not finish a
    forced tool call)."""
    from aprendiz.training.tinyllm import build as build_module

    clock = itertools.count(0.0, 1000.0)  # every look at the clock: 1000 s later
    monkeypatch.setattr(build_module.time, "monotonic", lambda: next(clock))
    spec = small_spec()
    assert build(tmp_path / "slow", spec)["steps"] == 3


def test_a_time_budget_given_by_hand_still_stops_training(tmp_path):
    spec = small_spec(max_steps=50, max_seconds=0.0)
    assert build(tmp_path / "quick", spec)["steps"] == 0


def test_python_render_matches_the_saved_chat_template(small_build):
    from transformers import AutoTokenizer

    out, _ = small_build
    tokenizer = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "Hola"}, {"role": "assistant", "content": "¡Hola!"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == render(messages)
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == render(messages[:1]) + "<|assistant|>\n"
    assert tokenizer.eos_token == "<|end|>"


def test_the_chat_template_shows_tools_calls_and_their_answers(small_build):
    """With tools the template lists them in a system turn and writes an assistant's calls as
    <tool_call> JSON (what vLLM's hermes parser reads back); a tool's answer is a `tool` turn."""
    from transformers import AutoTokenizer

    out, _ = small_build
    tokenizer = AutoTokenizer.from_pretrained(out)
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    call = {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    messages = [{"role": "user", "content": "¿Qué hora es?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "10:00"}]
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|system|>\nTools:\nget_time(): ")
    assert '<|assistant|>\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call><|end|>\n' in text
    assert text.endswith("<|tool|>\n10:00<|end|>\n<|assistant|>\n")
    plain = messages[:1]
    assert tokenizer.apply_chat_template(plain, tools=None, tokenize=False) == render(plain)
    # The shipped tool conversations train on exactly what the template shows at serving.
    for conversation, shipped_tools in load_tool_corpus()[:5]:
        assert tokenizer.apply_chat_template(conversation, tools=shipped_tools, tokenize=False) == render(
            conversation, shipped_tools)


def test_tool_answers_get_fresh_digits_in_the_tool_turn_and_the_reply():
    import random

    messages = [{"role": "user", "content": "What time is it?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                                       "function": {"name": "get_time", "arguments": {}}}]},
                {"role": "tool", "tool_call_id": "c", "content": "18:19"},
                {"role": "assistant", "content": "It is 18:19."}]
    seen = set()
    for seed in range(5):
        fresh = with_fresh_values(messages, random.Random(seed))
        value = fresh[2]["content"]
        assert len(value) == 5 and value[2] == ":" and fresh[3]["content"] == f"It is {value}."
        assert fresh[1] == messages[1] and fresh[0] == messages[0]
        seen.add(value)
    assert len(seen) > 1 and messages[2]["content"] == "18:19"  # the corpus itself is left alone


def test_only_assistant_text_and_its_end_are_learned():
    A, E = 3, 4  # <|assistant|>, <|end|>
    row = [1, 10, 11, E, A, 20, 21, E, 2, 30, E]
    assert assistant_mask(row, A, E) == [False, False, False, False, False, True, True, True, False, False, False]


def test_digits_are_tokens_of_their_own(small_build):
    """A tool's "17:45" and the reply's " 17:45" are the same digit tokens (what the model copies)."""
    from tokenizers import Tokenizer

    out, _ = small_build
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    value = tokenizer.encode("17:45").ids
    assert len(value) == 5
    reply = tokenizer.encode("It is 17:45.").ids
    assert any(reply[i:i + 5] == value for i in range(len(reply)))


def test_the_default_spec_keeps_head_dim_vllm_cpu_accepts():
    assert TinyLlmSpec().head_dim >= 32


def test_the_default_model_is_built_and_trained(default_model):
    report = json.loads((default_model / "aprendiz_build.json").read_text())
    assert report["final_loss"] < report["first_loss"] / 4
    assert "chat_template" in (default_model / "tokenizer_config.json").read_text() or (
        default_model / "chat_template.jinja"
    ).read_text() == CHAT_TEMPLATE
