"""The generator families the platform serves, and where each one runs.

One table: a family names its Hugging Face architecture, whether vLLM's CPU backend
runs it, and (when it does not) why, so a configuration that asks for the impossible
is refused before anything starts, with the GPU path in the message. A local
checkpoint's ``config.json`` tells its architecture, so the family is checked
against what is really there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Family:
    name: str
    architecture: str
    description: str
    cpu: bool = True
    cpu_reason: str = ""  # why vLLM's CPU backend cannot run it, when cpu is False
    lora: bool = True  # vLLM serves LoRA adapters on it (its model class implements SupportsLoRA)


# LoRA: in vLLM 0.29 LlamaForCausalLM implements SupportsLoRA; BloomForCausalLM and
# GPTNeoXForCausalLM do not (vllm/model_executor/models/{bloom,gpt_neox}.py).
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llama", "LlamaForCausalLM", "Llama 2/3 and Alpaca-style fine-tunes (the default model)"),
        Family("flor", "BloomForCausalLM", "FLOR (Catalan, Spanish, English), BLOOM and BLOOMZ", lora=False),
        Family("gpt-neox", "GPTNeoXForCausalLM", "GPT-NeoX, Pythia, Dolly v2", lora=False),
    )
}

# For checkpoints that bring no chat template: one turn per message, the role in brackets,
# ending with an assistant turn to complete. Plain text, so every tokenizer can encode it.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '### ' + message['role'] | capitalize + ':\n' + message['content'] + '\n\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)


class FamilyError(ValueError):
    """A model's family is unknown, does not match its checkpoint, or cannot run where asked."""


def family_of_architecture(architecture: str) -> Family | None:
    return next((f for f in FAMILIES.values() if f.architecture == architecture), None)


def checkpoint_architecture(path: Path) -> str | None:
    """The architecture a local checkpoint's config.json names (None: not a local checkpoint)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        architectures = json.loads(config.read_text("utf-8")).get("architectures") or []
    except (OSError, ValueError) as exc:
        raise FamilyError(f"{config} cannot be read: {exc}") from None
    return architectures[0] if architectures else None


def checkpoint_chat_template(path: Path) -> str | None:
    """A local checkpoint's own chat template text (None: it has none, or it is not local)."""
    path = Path(path)
    try:
        if (path / "chat_template.jinja").is_file():
            return (path / "chat_template.jinja").read_text("utf-8")
        if (path / "chat_template.json").is_file():
            template = json.loads((path / "chat_template.json").read_text("utf-8")).get("chat_template")
            return template if isinstance(template, str) else None
        template = json.loads((path / "tokenizer_config.json").read_text("utf-8")).get("chat_template")
    except (OSError, ValueError):
        return None
    return template if isinstance(template, str) else None


def checkpoint_has_chat_template(path: Path) -> bool | None:
    """Whether a local checkpoint brings a chat template (None: not a local checkpoint)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return None
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    try:
        tokenizer_config = json.loads((path / "tokenizer_config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return bool(tokenizer_config.get("chat_template"))


def resolve_family(model_id: str, family: str | None, source: str, accelerator: str) -> Family | None:
    """The model's family, checked against its checkpoint and its accelerator; raises FamilyError."""
    known = None
    if family is not None:
        known = FAMILIES.get(family)
        if known is None:
            raise FamilyError(f"model {model_id!r}: unknown family {family!r}; known families: {sorted(FAMILIES)}")
    architecture = None if "://" in source else checkpoint_architecture(Path(source))
    if architecture is not None:
        found = family_of_architecture(architecture)
        if known is not None and architecture != known.architecture:
            raise FamilyError(
                f"model {model_id!r}: family {known.name!r} is {known.architecture}, but {source} holds {architecture}"
            )
        if known is None and found is None:
            raise FamilyError(
                f"model {model_id!r}: {source} holds {architecture}, which is not a family this platform serves "
                f"({', '.join(f'{f.name}: {f.architecture}' for f in FAMILIES.values())})"
            )
        known = known or found
    if known is not None and accelerator == "cpu" and not known.cpu:
        raise FamilyError(
            f"model {model_id!r}: the {known.name} family ({known.architecture}) cannot run on vLLM's CPU backend: "
            f"{known.cpu_reason}. Serve it on a GPU: accelerator: gpu (with accelerator_type and num_gpus), "
            "and the chart's GPU worker group."
        )
    return known
