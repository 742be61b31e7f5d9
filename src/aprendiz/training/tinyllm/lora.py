"""Tiny LoRA adapters for the tiny Llama, Alpaca-LoRA style (rank 8 on q_proj and v_proj), built with peft.

Both LoRA matrices start random (peft's default starts B at zero, which would leave
the base model unchanged), so two seeds give two adapters that answer differently
from the base model and from each other. Nothing is trained or downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path


def build_tiny_adapter(base_dir: Path, output_dir: Path, *, seed: int, rank: int = 8, scale: float = 0.5) -> dict:
    """Write a peft adapter for the checkpoint at ``base_dir``; returns its report."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                        bias="none", task_type="CAUSAL_LM", init_lora_weights=False)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn_like(param) * scale)
    output_dir = Path(output_dir)
    model.save_pretrained(str(output_dir))
    report = {"base": str(base_dir), "seed": seed, "rank": rank, "target_modules": ["q_proj", "v_proj"],
              "trainable_parameters": sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)}
    (output_dir / "aprendiz_build.json").write_text(json.dumps(report, indent=2))
    return report
