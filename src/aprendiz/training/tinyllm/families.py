"""Tiny checkpoints of each generator family, so tests serve every architecture for real.

Each one is the family's exact Hugging Face architecture at a tiny size (hidden 128,
two heads: head_dim 64, which vLLM's CPU attention accepts), random weights, and a
byte-level BPE tokenizer trained here on the shipped corpus with the family's own
special tokens (BLOOM's ``<s>``/``</s>``/``<unk>``/``<pad>``, GPT-NeoX's
``<|endoftext|>``/``<|padding|>``). Like many base checkpoints they bring no chat
template, so the platform's default template applies. The Llama family's tiny model
is the default generator (``aprendiz build-default-model``), which has its own template.
Nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aprendiz.training.tinyllm.build import load_corpus, render


@dataclass(frozen=True)
class TinyShape:
    hidden_size: int = 128
    num_heads: int = 2
    num_layers: int = 2
    vocab_size: int = 1024
    max_positions: int = 512
    seed: int = 7


# family -> (special tokens: bos, eos, unk, pad)
TOKENS = {
    "flor": ("<s>", "</s>", "<unk>", "<pad>"),
    "gpt-neox": ("<|endoftext|>", "<|endoftext|>", "<|endoftext|>", "<|padding|>"),
}


def _tokenizer(family: str, shape: TinyShape):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bos, eos, unk, pad = TOKENS[family]
    specials = list(dict.fromkeys([bos, eos, unk, pad]))
    raw = Tokenizer(models.BPE(unk_token=unk))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=shape.vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    texts = [render(c) for c in load_corpus()]
    raw.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=bos, eos_token=eos, unk_token=unk, pad_token=pad,
        model_max_length=shape.max_positions,
    )


def _model(family: str, tokenizer, shape: TinyShape):
    import torch

    torch.manual_seed(shape.seed)
    ids = {name: tokenizer.convert_tokens_to_ids(getattr(tokenizer, f"{name}_token")) for name in ("bos", "eos", "pad")}
    common = dict(vocab_size=len(tokenizer), bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    if family == "flor":
        from transformers import BloomConfig, BloomForCausalLM

        bloom = BloomConfig(hidden_size=shape.hidden_size, n_head=shape.num_heads, n_layer=shape.num_layers, **common)
        return BloomForCausalLM(bloom)
    if family == "gpt-neox":
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        neox = GPTNeoXConfig(  # type: ignore[call-arg]  # rotary_pct is read from **kwargs
            hidden_size=shape.hidden_size, num_attention_heads=shape.num_heads, num_hidden_layers=shape.num_layers,
            intermediate_size=4 * shape.hidden_size, max_position_embeddings=shape.max_positions, rotary_pct=0.25,
            **common,
        )
        return GPTNeoXForCausalLM(neox)
    raise ValueError(f"no tiny builder for family {family!r}; tiny families: {sorted(TOKENS)}")


def build_tiny_family(family: str, output_dir: Path, shape: TinyShape = TinyShape()) -> dict:
    """Write a tiny random checkpoint of ``family`` in Hugging Face format; returns its report."""
    if family not in TOKENS:
        raise ValueError(f"no tiny builder for family {family!r}; tiny families: {sorted(TOKENS)}")
    output_dir = Path(output_dir)
    tokenizer = _tokenizer(family, shape)
    model = _model(family, tokenizer, shape)
    model.eval()
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    report = {
        "family": family,
        "architecture": model.config.architectures[0],
        "parameters": sum(p.numel() for p in model.parameters()),
        "head_dim": shape.hidden_size // shape.num_heads,
        "vocab_size": len(tokenizer),
    }
    (output_dir / "aprendiz_build.json").write_text(json.dumps(report, indent=2))
    return report
