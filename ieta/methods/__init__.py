"""Alignment methods as plug-ins: ``ieta/methods/<name>.py`` defines ``METHOD`` (a ``Method``) and
``conf/method/<name>.yaml`` its settings. Nothing else names a method; a new one is one module and one YAML file.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path
from ieta.methods.base import IterationData, Method

__all__ = ["IterationData", "Method", "available", "get_method", "train_iteration"]
_NOT_METHODS = {"base"}


def available() -> list[str]:
    """The names of the registered methods: the modules of this package."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if not m.name.startswith("_") and m.name not in _NOT_METHODS)


@cache
def get_method(name: str) -> Method:
    """The method ``name`` (``method.name``); an unknown name raises ``KeyError`` listing the known ones."""
    if name not in available():
        raise KeyError(f"unknown method {name!r}; available: {available()}")
    method = importlib.import_module(f"ieta.methods.{name}").METHOD
    assert method.name == name, f"ieta/methods/{name}.py: METHOD.name is {method.name!r}"
    return method


def train_iteration(model, tokenizer, problems, rows: list[dict], cfg, k: int, it_dir: Path, *,
                    seed: int):
    """Train iteration ``k`` with the configured method (in-process or in an ``accelerate launch`` process) and
    return the policy in eval mode: dropout off for the evaluation and sampling that follow."""
    from ieta.seeding import seed_everything

    seed_everything(seed)
    model = get_method(cfg.method.name).train(model, tokenizer, problems, rows, cfg,
                                              steps=cfg.iteration.steps_per_iteration, out_dir=it_dir, seed=seed,
                                              progress=cfg.progress)
    model.eval()
    return model
