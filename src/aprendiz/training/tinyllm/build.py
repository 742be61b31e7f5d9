"""Build the embedded default generator: a tiny Llama chat model trained here, on CPU.

Nothing is downloaded. The corpus ships with the project
(``corpus/conversations.jsonl``, Spanish and English chats written for it, and
``corpus/tools.jsonl``, conversations that call two tools and use their answers); a
byte-level BPE tokenizer is trained on it with ``tokenizers``; a
Llama-architecture model of a few million parameters is trained on it for a
bounded time; the result is written in Hugging Face format (``config.json``,
``model.safetensors``, ``tokenizer.json``, a chat template), which vLLM loads
like any other checkpoint.

The default shape keeps ``head_dim`` at 64: vLLM's CPU attention rejects
head_dim 16 ("Unsupported CPU attention configuration").
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
PAD, ASSISTANT, END = "<|pad|>", "<|assistant|>", "<|end|>"
TOOL_REPEATS = 5  # each tool conversation, with fresh values, this many times an epoch

# Every turn is "<|role|>\n{content}<|end|>\n"; generation ends on <|end|>. With ``tools``, a system
# turn lists them first, one a line as `name(parameters): description` (short: the model's training
# rows are 160 tokens), and an assistant's calls are written as Hermes-style
# <tool_call>{"name": ..., "arguments": {...}}</tool_call> (vLLM's `hermes` tool parser reads them);
# a tool's answer is a turn of role `tool`. Without tools the text is exactly what ``render`` trains on.
TOOLS_PREAMBLE = "Tools:"  # short: every token of it is paid in every training row that has tools
CHAT_TEMPLATE = (
    "{% if tools %}{{ '<|system|>\n" + TOOLS_PREAMBLE + "' }}"
    "{% for tool in tools %}{% set function = tool['function'] %}"
    "{% set properties = (function.get('parameters') or {}).get('properties') or {} %}"
    "{{ '\n' + function['name'] + '(' + (properties | list | join(', ')) + '): ' + (function.get('description') or '') }}"
    "{% endfor %}{{ '<|end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% endif %}"
    "{% if message['tool_calls'] %}{% for call in message['tool_calls'] %}"
    "{% set arguments = call['function']['arguments'] %}"
    "{{ '<tool_call>{\"name\": ' + (call['function']['name'] | tojson) + ', \"arguments\": '"
    " + (arguments if arguments is string else (arguments | tojson)) + '}</tool_call>' }}"
    "{% endfor %}{% endif %}"
    "{{ '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyLlmSpec:
    """Shape and training budget of the tiny model; the defaults are the shipped model."""

    vocab_size: int = 2048
    hidden_size: int = 256
    intermediate_size: int = 768
    num_layers: int = 4
    num_heads: int = 4  # head_dim = 256 / 4 = 64
    max_position_embeddings: int = 512
    seq_len: int = 160
    batch_size: int = 16
    learning_rate: float = 3e-3
    max_steps: int = 900
    # A wall-clock budget, for a quick model by hand (`aprendiz build-default-model --max-seconds`).
    # None for the shipped model: every machine trains all its steps into the same checkpoint (a
    # budget made a slow machine's model a different, weaker one).
    max_seconds: float | None = None
    seed: int = 1234
    threads: int = 0  # 0: torch's default
    extra: dict = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def load_corpus(path: Path | None = None) -> list[list[dict]]:
    """The shipped conversations (``corpus/conversations.jsonl``, general chat, and
    ``corpus/support.jsonl``, a shop's customer service), or those in ``path`` (JSON Lines of
    {"messages": [...]})."""
    if path is None:
        corpus = resources.files(__package__).joinpath("corpus")
        sources = [(name, corpus.joinpath(name).read_text("utf-8")) for name in ("conversations.jsonl", "support.jsonl")]
    else:
        sources = [(str(path), Path(path).read_text("utf-8"))]
    conversations = []
    for name, text in sources:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            messages = json.loads(line)["messages"]
            if not messages or messages[-1]["role"] != "assistant":
                raise ValueError(f"corpus {name} line {number}: a conversation must end with an assistant message")
            conversations.append(messages)
    return conversations


def load_tool_corpus() -> list[tuple[list[dict], list[dict]]]:
    """The shipped tool conversations (``corpus/tools.jsonl``): (messages, tools) each. An assistant
    turn calls a tool (``tool_calls``), a ``tool`` turn answers, the assistant uses the answer; some
    have tools and need none."""
    text = resources.files(__package__).joinpath("corpus/tools.jsonl").read_text("utf-8")
    return [(row["messages"], row["tools"]) for row in map(json.loads, filter(str.strip, text.splitlines()))]


def with_fresh_values(messages: list[dict], rng: random.Random) -> list[dict]:
    """``messages`` with every digit of the tool turns' answers drawn anew, in the tool turn and the
    reply that uses it: trained on fresh values every epoch, the model can only lower its loss on them
    by copying from the tool turn, never by remembering the corpus's values."""
    values = {m["content"] for m in messages if m["role"] == "tool" and isinstance(m.get("content"), str)}
    fresh = {v: re.sub(r"\d", lambda _: str(rng.randrange(10)), v) for v in values}
    if not fresh:
        return messages

    def swap(text):
        for old, new in fresh.items():
            text = text.replace(old, new)
        return text

    return [{**m, "content": swap(m["content"])} if isinstance(m.get("content"), str) else m for m in messages]


def _tool_line(function: dict) -> str:
    properties = (function.get("parameters") or {}).get("properties") or {}
    return f"{function['name']}({', '.join(properties)}): {function.get('description') or ''}"


def _call(call: dict) -> str:
    arguments = call["function"]["arguments"]
    arguments = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return f'<tool_call>{{"name": {json.dumps(call["function"]["name"], ensure_ascii=False)}, "arguments": {arguments}}}</tool_call>'


def render(messages: list[dict], tools: list[dict] | None = None) -> str:
    """The chat template, in Python, for training text (identical to CHAT_TEMPLATE's output)."""
    head = ""
    if tools:
        head = "<|system|>\n" + TOOLS_PREAMBLE + "".join("\n" + _tool_line(t["function"]) for t in tools) + END + "\n"
    return head + "".join(
        f"<|{m['role']}|>\n{m['content'] if isinstance(m.get('content'), str) else ''}"
        + "".join(_call(c) for c in m.get("tool_calls") or []) + f"{END}\n"
        for m in messages
    )


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    # Digits are tokens of their own, apart from the space before them: "17:45" in a tool's answer and
    # " 17:45" in the reply are then the same tokens, which a model this small can copy (with merges,
    # "17" and "Ġ17" are unrelated ids, and the copy has to be learned for every number).
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def assistant_mask(row: list[int], assistant_id: int, end_id: int) -> list[bool]:
    """True for the tokens the model learns to write: an assistant turn's text and its <|end|>."""
    out, inside = [], False
    for token in row:
        out.append(inside)
        if token == assistant_id:
            inside = True
        elif token == end_id:
            inside = False
    return out


def _batches(epoch: Callable[[], list[list[int]]], spec: TinyLlmSpec, ids_of: dict[str, int], rng: random.Random):
    """Endless shuffled batches of (input_ids, labels, attention_mask), padded to the batch's longest;
    ``epoch()`` gives each epoch's conversations. Only assistant text is learned (the labels of the
    rest are -100): the loss spent on users' words went to nothing the model is asked to write, and
    with it the model never learned to copy a tool's answer into its reply. (Tried and dropped:
    packing conversations into full rows puts several tool answers in one row, and the model cannot
    tell which its reply should copy; batches of like length train fast but diverge, a batch of tool
    conversations pulling one way and a batch of chats the other.)"""
    import torch

    pad_id = ids_of[PAD]
    while True:
        sequences = epoch()
        rng.shuffle(sequences)
        for start in range(0, len(sequences) - spec.batch_size + 1, spec.batch_size):
            batch = [s[: spec.seq_len] for s in sequences[start : start + spec.batch_size]]
            width = max(len(r) for r in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            learned = torch.zeros((len(batch), width), dtype=torch.bool)
            for i, row in enumerate(batch):
                ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
                learned[i, : len(row)] = torch.tensor(assistant_mask(row, ids_of[ASSISTANT], ids_of[END]))
            yield ids, ids.masked_fill(~learned, -100), mask


def _train(model, epoch: Callable[[], list[list[int]]], spec: TinyLlmSpec, ids_of: dict[str, int],
           rng: random.Random) -> list[float]:
    """AdamW with warm-up and a cosine schedule, until ``max_steps`` (or ``max_seconds``, where given); the losses."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)
    warmup = 30

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, spec.max_steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    losses: list[float] = []
    step = 0
    train_started = time.monotonic()
    for ids, labels, mask in _batches(epoch, spec, ids_of, rng):
        out_of_time = spec.max_seconds is not None and time.monotonic() - train_started > spec.max_seconds
        if step >= spec.max_steps or out_of_time:
            break
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % 50 == 0:
            log.info("step %d loss %.3f", step, losses[-1])
        step += 1
    return losses


def _llama_config(spec: TinyLlmSpec, vocab_size: int, *, end_id: int, pad_id: int):
    """The tiny Llama's shape: ``head_dim`` 64 (vLLM's CPU attention rejects 16), tied embeddings."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=end_id,
        pad_token_id=pad_id,
        dtype="float32",
    )


def build(output_dir: Path, spec: TinyLlmSpec = TinyLlmSpec(), corpus: Path | None = None) -> dict:
    """Train the tokenizer and the model and write a Hugging Face checkpoint to ``output_dir``.

    Returns the build report (also written as ``aprendiz_build.json``).
    """
    import torch
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    output_dir = Path(output_dir)
    started = time.monotonic()
    rng = random.Random(spec.seed)
    torch.manual_seed(spec.seed)
    if spec.threads:
        torch.set_num_threads(spec.threads)

    conversations = load_corpus(corpus)
    texts = [render(c) for c in conversations]
    # The shipped tool conversations (calling get_time and open_ticket, and using the answer), with
    # fresh values each epoch, TOOL_REPEATS times over.
    tool_conversations = load_tool_corpus() if corpus is None else []
    texts += [render(messages, tools) for messages, tools in tool_conversations]
    raw_tokenizer = train_tokenizer(texts, spec.vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw_tokenizer,
        eos_token=END,
        pad_token=PAD,
        model_max_length=spec.max_position_embeddings,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    ids_of = {token: int(tokenizer.convert_tokens_to_ids(token)) for token in SPECIAL_TOKENS}  # type: ignore[arg-type]
    pad_id, end_id = ids_of[PAD], ids_of[END]

    fixed = [raw_tokenizer.encode(t).ids for t in texts[: len(conversations)]]

    def epoch() -> list[list[int]]:
        fresh = [render(with_fresh_values(m, rng), tools) for m, tools in tool_conversations * TOOL_REPEATS]
        return [*fixed, *(raw_tokenizer.encode(t).ids for t in fresh)]

    config = _llama_config(spec, raw_tokenizer.get_vocab_size(), end_id=end_id, pad_id=pad_id)
    model = LlamaForCausalLM(config)
    model.train()
    train_started = time.monotonic()
    losses = _train(model, epoch, spec, ids_of, rng)
    step = len(losses)

    model.eval()
    model.generation_config.eos_token_id = end_id
    model.generation_config.pad_token_id = pad_id
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    tail = losses[-20:] or [float("nan")]
    report = {
        "spec": asdict(spec),
        "parameters": sum(p.numel() for p in model.parameters()),
        "conversations": len(conversations),
        "steps": step,
        "final_loss": sum(tail) / len(tail),
        "first_loss": losses[0] if losses else None,
        "train_seconds": round(time.monotonic() - train_started, 1),
        "total_seconds": round(time.monotonic() - started, 1),
    }
    (output_dir / "aprendiz_build.json").write_text(json.dumps(report, indent=2))
    return report


def is_built(output_dir: Path) -> bool:
    """True when ``output_dir`` holds a finished build (the report is written last)."""
    output_dir = Path(output_dir)
    return all((output_dir / name).exists() for name in ("config.json", "model.safetensors", "tokenizer.json", "aprendiz_build.json"))
