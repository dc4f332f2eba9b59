"""Real architectures with random weights: the shipped shapes build models of the published sizes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from ieta.model_shapes import random_config, shapes
from ieta.models import embedded_dir

#: parameter counts of the published checkpoints (embedded 0.5B: its GGUF keeps a separate LM head)
PUBLISHED = {"qwen2.5-0.5b": 630.2e6, "qwen2.5-1.5b": 1.544e9, "qwen2.5-7b": 7.616e9}


@pytest.mark.parametrize("shape", sorted(PUBLISHED))
def test_shape_builds_a_model_of_the_published_size(shape):
    config = Qwen2Config(**random_config({"shape": shape}, embedded_dir(with_weights=False)))
    with torch.device("meta"):  # no memory: only the parameter shapes
        model = AutoModelForCausalLM.from_config(config)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - PUBLISHED[shape]) / PUBLISHED[shape] < 0.01, count


def test_other_keys_override_the_shape_and_unknown_shapes_are_named():
    config = random_config({"shape": "qwen2.5-7b", "num_hidden_layers": 2}, embedded_dir(with_weights=False))
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] == 3584
    assert random_config({"hidden_size": 32}, embedded_dir(with_weights=False)) == {"hidden_size": 32}
    with pytest.raises(ValueError, match="qwen2.5-1.5b"):
        random_config({"shape": "llama-70b"}, embedded_dir(with_weights=False))
    assert set(PUBLISHED) <= set(shapes())


def test_model_random_composes_and_unknown_shapes_fail_at_config_time():
    from ieta.config import ConfigError, compose_config, validate

    cfg = validate(compose_config(["model=random", "model.random_init.shape=qwen2.5-7b"]))
    assert cfg.model.random_init == {"shape": "qwen2.5-7b"} and cfg.model.path == "tiny"
    with pytest.raises(ConfigError, match="model.random_init.shape"):
        validate(compose_config(["model=random", "model.random_init.shape=gpt-5"]))
