"""Every internal of TRL, transformers, PEFT and torch that IETA patches or relies on is still there. Each patch
falls back quietly (or fails deep inside a run) when its internal is gone; these tests fail first, naming the patch,
so that a new version of a dependency is caught here (pyproject.toml pins the series they were written for)."""

from __future__ import annotations

import inspect

import pytest
import torch


def _patch(name: str, where: str) -> str:
    return f"patch {name} ({where}) relies on an internal that this version no longer has"


def test_cpu_lm_head_finds_trl_use_triton_and_chunked_log_prob_function():
    """ieta.lm_head.cpu_lm_head swaps `trl.trainer.utils._use_triton` and `_ChunkedLogProbFunction`, which TRL's fused
    LM head calls through the module's globals; without them the CPU scores every prompt position and accumulates
    the head's backward in fp32 GEMMs (the DPO step doubles, and more)."""
    import trl.trainer.utils as trl_utils
    from trl.kernels import ChunkedLogProbFunction

    message = _patch("cpu_lm_head", "ieta/lm_head.py")
    assert callable(getattr(trl_utils, "_use_triton", None)), message + ": trl.trainer.utils._use_triton"
    assert list(inspect.signature(trl_utils._use_triton).parameters) == ["device"], message + ": its signature"
    source = inspect.getsource(trl_utils)
    assert "_use_triton(" in source, message + ": TRL no longer calls it from trl.trainer.utils"
    assert getattr(trl_utils, "_ChunkedLogProbFunction", None) is ChunkedLogProbFunction, \
        message + ": trl.trainer.utils._ChunkedLogProbFunction"
    assert "_ChunkedLogProbFunction.apply(" in source, message + ": TRL no longer calls it from trl.trainer.utils"
    assert list(inspect.signature(ChunkedLogProbFunction.forward).parameters)[1:] == [
        "hidden", "weight", "bias", "targets", "temperature", "chunk_size", "final_logit_softcapping", "logit_scale",
        "outputs"], message + ": ChunkedLogProbFunction's arguments"
    from ieta.lm_head import cpu_lm_head

    original = trl_utils._use_triton
    with cpu_lm_head():
        assert trl_utils._use_triton(torch.device("cpu")) is True, message + ": the swap did not take"
        assert trl_utils._ChunkedLogProbFunction is not ChunkedLogProbFunction, message + ": the swap did not take"
    assert trl_utils._use_triton is original and trl_utils._ChunkedLogProbFunction is ChunkedLogProbFunction


def test_fast_model_hash_finds_dpo_trainer_hash_module():
    """ieta.train.fast_model_hash swaps `trl.trainer.dpo_trainer.hash_module`, which DPOTrainer calls through the
    module's globals to fingerprint the precomputed reference log-probs."""
    import trl.trainer.dpo_trainer as dpo_trainer

    message = _patch("fast_model_hash", "ieta/train.py")
    assert callable(getattr(dpo_trainer, "hash_module", None)), message + ": trl.trainer.dpo_trainer.hash_module"
    assert "hash_module(" in inspect.getsource(dpo_trainer.DPOTrainer.__init__), message + ": DPOTrainer no longer calls it"
    from ieta.train import fast_model_hash, model_hash

    original = dpo_trainer.hash_module
    with fast_model_hash():
        assert dpo_trainer.hash_module is model_hash, message + ": the swap did not take"
    assert dpo_trainer.hash_module is original


def test_tokenizer_fields_dropped_after_loading_are_read_only_by_the_constructor():
    """ieta.models drops `_vocab` and `_merges` from loaded tokenizers (datasets' fingerprint of every TRL dataset
    map pickled them: 3.2 s a trainer); only the constructor may read them, to build the `tokenizers` backend."""
    import re

    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    from ieta.models import INIT_ONLY_TOKENIZER_FIELDS

    message = _patch("INIT_ONLY_TOKENIZER_FIELDS", "ieta/models.py")
    reads = {field: re.compile(rf"\.{field}\b") for field in INIT_ONLY_TOKENIZER_FIELDS}
    init = inspect.getsource(Qwen2Tokenizer.__init__)
    assert all(r.search(init) for r in reads.values()), message + ": Qwen2Tokenizer.__init__ no longer sets them"
    for cls in Qwen2Tokenizer.__mro__[:-1]:
        for name, member in vars(cls).items():
            if name == "__init__" or not callable(getattr(member, "__func__", member)) or isinstance(member, type):
                continue
            try:
                source = inspect.getsource(getattr(member, "__func__", member))
            except (OSError, TypeError):
                continue
            for field, read in reads.items():
                assert not read.search(source), message + f": {cls.__name__}.{name} reads {field}"


def test_drop_precompute_engine_finds_dpo_trainer_precompute_engine():
    """ieta.train.drop_precompute_engine destroys `DPOTrainer._precompute_engine` (TRL's own DeepSpeed engine for
    the reference log-probs), whose ZeRO-3 hooks otherwise break the first training step."""
    from trl import DPOTrainer

    source = inspect.getsource(DPOTrainer)
    assert "self._precompute_engine" in source, _patch("drop_precompute_engine", "ieta/train.py") + \
        ": DPOTrainer._precompute_engine"
    deepspeed = pytest.importorskip("deepspeed")
    assert hasattr(deepspeed.DeepSpeedEngine, "destroy"), _patch("drop_precompute_engine", "ieta/train.py") + \
        ": DeepSpeedEngine.destroy"


def test_trainer_args_reentrant_checkpointing_name_is_a_training_argument():
    """ieta.train.trainer_args sets `activation_checkpointing_kwargs` under ZeRO-3, the name transformers 5 reads
    (TRL 1.16 sets the deprecated alias `gradient_checkpointing_kwargs`)."""
    import dataclasses

    from trl import DPOConfig, GRPOConfig, SFTConfig

    for config in (DPOConfig, GRPOConfig, SFTConfig):
        names = {f.name for f in dataclasses.fields(config)}
        assert "activation_checkpointing_kwargs" in names, _patch("trainer_args reentrant checkpointing",
                                                                   "ieta/train.py") + f": {config.__name__}"


def test_growing_kv_cache_layer_finds_dynamic_layer_internals():
    """ieta/sample.py's `_GrowingLayer` subclasses transformers' `DynamicLayer` and replaces its `keys`/`values`
    in place; the decode loop selects and repeats rows through `DynamicCache`'s batch methods."""
    from transformers import DynamicCache, Qwen2Config
    from transformers.cache_utils import DynamicLayer

    message = _patch("_GrowingLayer / continuous batching", "ieta/sample.py")
    for name in ("update", "lazy_initialization", "get_seq_length"):
        assert callable(getattr(DynamicLayer, name, None)), f"{message}: DynamicLayer.{name}"
    config = Qwen2Config(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=32)
    cache = DynamicCache(config=config)
    assert len(cache.layers) == 2 and all(type(layer) is DynamicLayer for layer in cache.layers), \
        f"{message}: DynamicCache(config=...).layers"
    layer = cache.layers[0]
    assert layer.is_initialized is False, f"{message}: DynamicLayer.is_initialized"
    k = torch.zeros(2, 1, 3, 4)
    layer.update(k, k)
    assert layer.keys.shape == (2, 1, 3, 4) and layer.values.shape == (2, 1, 3, 4), f"{message}: keys/values"
    for name in ("batch_repeat_interleave", "batch_select_indices"):
        assert callable(getattr(cache, name, None)), f"{message}: DynamicCache.{name}"


def test_decoder_reads_peft_lora_layer_attributes():
    """ieta/decode.py folds active LoRA deltas into its own weights: it reads a PEFT LoRA layer's `base_layer`,
    `merged`, `disable_adapters`, `active_adapters`, `lora_A`, `lora_variant` and `get_delta_weight`."""
    from peft import LoraConfig, inject_adapter_in_model

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj = torch.nn.Linear(4, 4)

    layer = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]), Block()).q_proj
    for name in ("base_layer", "merged", "disable_adapters", "active_adapters", "lora_A", "lora_variant",
                 "get_delta_weight"):
        assert hasattr(layer, name), _patch("LoRA folding", "ieta/decode.py") + f": LoraLayer.{name}"


def test_int8_sampling_finds_torch_int_mm():
    """ieta/int8.py and ieta/decode.py run int8 GEMMs through `torch._int_mm`."""
    assert callable(getattr(torch, "_int_mm", None)), _patch("int8 GEMMs", "ieta/int8.py") + ": torch._int_mm"
    a, b = torch.ones(32, 32, dtype=torch.int8), torch.ones(32, 32, dtype=torch.int8)
    assert torch._int_mm(a, b)[0, 0].item() == 32


def test_grpo_sampling_finds_trls_single_turn_generation():
    """ieta.grpo_sampling overrides `GRPOTrainer._generate_single_turn` (TRL's one call that generates a batch's
    completions, also the one interactive's rollouts make) and reads the trainer's sampling settings by name."""
    from trl import GRPOTrainer

    message = _patch("grpo_sampling", "ieta/grpo_sampling.py")
    method = getattr(GRPOTrainer, "_generate_single_turn", None)
    assert callable(method), message + ": GRPOTrainer._generate_single_turn"
    assert list(inspect.signature(method).parameters)[:5] == ["self", "prompt_ids", "images", "multimodal_fields",
                                                              "num_generations"], message + ": its signature"
    source = inspect.getsource(GRPOTrainer)
    assert "self._generate_single_turn(" in source, message + ": TRL no longer calls it"
    for name in ("use_vllm", "use_transformers_continuous_batching", "top_k", "min_p", "repetition_penalty",
                 "eos_token_ids", "temperature", "top_p", "max_completion_length"):
        assert f"self.{name} =" in source, message + f": GRPOTrainer.{name}"
