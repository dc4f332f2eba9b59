"""Seeds: one global seed per run, and distinct, reproducible seeds per (iteration, stage)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def stage_seed(seed: int, iteration: int, stage: int) -> int:
    """Distinct, reproducible seeds per (iteration, stage)."""
    return seed * 10_000 + iteration * 10 + stage
