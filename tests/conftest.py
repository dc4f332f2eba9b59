"""Shared fixtures: compose the real config, then shrink it (tiny model, two problems, one step)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import DictConfig

from ieta.config import compose_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")
# W&B is never online in tests; the tests of the mode logic remove this and any credentials themselves
os.environ["WANDB_MODE"] = "offline"

TINY = ["model=tiny", "dataset.limit=2", "iteration.num_iterations=1", "iteration.steps_per_iteration=2",
        "sampler.n=2", "sampler.train_n=2", "sampler.max_new_tokens=16", "sampler.batch_size=4", "ks=[1,2]",
        "progress=false", "sandbox.timeout=5"]


@pytest.fixture
def tiny_cfg() -> DictConfig:
    return compose_config(TINY)


def run_pipeline(run_dir: Path, *overrides: str) -> list[dict]:
    """``python -m ieta.main`` with TINY and ``overrides`` into ``run_dir``, in this process (it saves the start of
    a Python with torch and transformers: seconds a run); returns its metrics."""
    from ieta.config import validate
    from ieta.pipeline import run

    cfg = compose_config([*TINY, *overrides])
    return run(validate(cfg), run_dir, cfg)
