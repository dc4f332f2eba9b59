"""Real model shapes with random weights: throughput and memory depend on the architecture, not on the weights'
values, so a randomly initialised model built from a real config measures them honestly where the weights are not
available (a GPU machine without the embedded parts, say).

``model.random_init`` is a dict of ``Qwen2Config`` keys; its ``shape`` key names a real architecture to start from:
``qwen2.5-0.5b`` (the embedded model's own ``config.json``), ``qwen2.5-1.5b`` and ``qwen2.5-7b`` (Qwen2.5's
published hyperparameters, shipped in ``ieta/model_configs/``). Other keys override the shape's.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
#: the shape read from the embedded model's converted directory
EMBEDDED_SHAPE = "qwen2.5-0.5b"
#: Qwen2Config keys a shape may set; the rest of a config.json (names, versions, dtypes) is not architecture
ARCHITECTURE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "vocab_size", "max_position_embeddings", "rope_theta", "rms_norm_eps",
                     "tie_word_embeddings", "hidden_act")


def shapes() -> list[str]:
    """The names ``random_init.shape`` accepts."""
    return sorted([EMBEDDED_SHAPE, *(p.stem for p in CONFIG_DIR.glob("*.json"))])


def _shape(name: str, embedded: Path) -> dict:
    if name == EMBEDDED_SHAPE:
        raw = json.loads((embedded / "config.json").read_text())
        raw.setdefault("rope_theta", (raw.get("rope_parameters") or {}).get("rope_theta"))
    elif (CONFIG_DIR / f"{name}.json").exists():
        raw = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    else:
        raise ValueError(f"model.random_init.shape: unknown shape {name!r}; known: {shapes()}")
    return {k: raw[k] for k in ARCHITECTURE_KEYS if raw.get(k) is not None}


def random_config(random_init: dict, embedded: Path) -> dict:
    """The ``Qwen2Config`` keys of ``random_init``: its ``shape``'s architecture, overridden by its other keys.
    ``embedded`` is the converted embedded model's directory (its ``config.json`` is the 0.5B shape)."""
    spec = dict(random_init)
    name = spec.pop("shape", None)
    return (_shape(name, embedded) if name else {}) | spec
