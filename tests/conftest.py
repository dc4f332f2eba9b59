"""Shared fixtures: compose the real config, then shrink it (tiny model, two problems, one step)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
TINY = ["model=tiny", "dataset.limit=2", "iteration.num_iterations=1", "iteration.steps_per_iteration=2",
        "sampler.n=2", "sampler.max_new_tokens=16", "sampler.batch_size=4", "ks=[1,2]", "progress=false",
        "sandbox.timeout=5"]


def compose_config(overrides: list[str] = (), with_hydra: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=with_hydra)


@pytest.fixture
def tiny_cfg() -> DictConfig:
    return compose_config(TINY)
