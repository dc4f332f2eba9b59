"""The policy a run trains: the configured model on the automatically chosen device, and the policy iteration k
starts from (the base model with the adapters of iterations 1..k-1 merged in order)."""

from __future__ import annotations

from pathlib import Path

import torch

from ieta.config import RunConfig
from ieta.models import load_model, load_tokenizer, pick_device


def load_policy(cfg: RunConfig):
    """``(model, tokenizer, device, dtype)``; ``model.dtype`` overrides the automatic dtype."""
    device, dtype = pick_device()
    if cfg.model.dtype != "auto":
        dtype = getattr(torch, cfg.model.dtype)
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.gguf_file)
    model = load_model(cfg.model.path, dtype, device, cfg.model.gguf_file, cfg.model.random_init, cfg.seed)
    return model, tokenizer, device, dtype


def merge_adapters(model, run_dir: Path, k: int):
    """``model`` with the adapters of iterations ``1..k-1`` under ``run_dir`` merged in order (an iteration that
    had nothing to train on left none)."""
    from ieta.train import as_base_model, load_adapter

    for j in range(1, k):
        adapter = run_dir / f"iter_{j}" / "adapter"
        if (adapter / "adapter_config.json").exists():
            model = as_base_model(load_adapter(model, adapter))
    return model
