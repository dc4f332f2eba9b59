"""Training stage: TRL DPOTrainer with a fresh PEFT LoRA adapter per iteration.

The reference model of iteration k is the policy at its start: earlier adapters are merged into the weights in
memory, a new adapter is trained on top, and disabling it (TRL's PEFT reference) gives back that policy. On disk,
``iter_<k>/adapter`` is therefore a delta on top of the base model with adapters 1..k-1 merged, in order.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from datasets import Dataset

from ieta.config import LoraConfig as LoraSettings
from ieta.config import MethodConfig
from ieta.dpo_forward import shared_forward
from ieta.io import atomic_path, write_json, write_jsonl
from ieta.lm_head import cpu_lm_head
from ieta.lora_dropout import use_mask_dropout


def as_base_model(model):
    """Merge a trained adapter into the weights (in memory), so the next iteration starts from this policy."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def load_adapter(model, adapter_dir: Path):
    """The policy with a saved iteration's adapter on top (earlier adapters of ``model`` merged first)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(as_base_model(model), adapter_dir)


def lora_config(lora: LoraSettings, model):
    """The PEFT adapter each iteration trains (same for every method). With ``top_layers``, only the last blocks get
    adapters: nothing below them needs gradients, so the backward pass stops there."""
    from peft import LoraConfig

    count = model.config.num_hidden_layers
    layers = None if lora.top_layers is None else list(range(max(count - lora.top_layers, 0), count))
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, layers_to_transform=layers,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


def trainer_args(model, cfg: MethodConfig, *, steps: int, out_dir: Path, seed: int, progress: bool) -> dict:
    """TRL arguments every method shares (DPOConfig, SFTConfig and GRPOConfig take them alike); the method's
    ``trainer`` passthrough overrides any of them."""
    on_cpu = model.device.type == "cpu"
    # PEFT under ZeRO-3 (set by `accelerate launch`) needs reentrant activation checkpointing. TRL 1.16 forces it on
    # `gradient_checkpointing_kwargs`, an alias transformers 5 has copied by then, so the backward failed; set the name
    # the Trainer reads instead (unless `method.trainer` sets either name: then transformers' own rule decides).
    zero3 = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    user_set = {"activation_checkpointing_kwargs", "gradient_checkpointing_kwargs"} & set(cfg.trainer)
    reentrant = {"activation_checkpointing_kwargs": {"use_reentrant": True}} if zero3 and not user_set else {}
    return reentrant | dict(
        output_dir=str(out_dir / "trainer"), max_steps=steps, seed=seed, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=not progress,
        bf16=model.dtype == torch.bfloat16, use_cpu=on_cpu, dataloader_pin_memory=not on_cpu,
    ) | dict(cfg.trainer)


def save_training(trainer, out_dir: Path):
    """Write the iteration's TRL log history, then its adapter (atomically, last: it marks training done); returns
    the trained PeftModel. Under ``accelerate launch`` every process calls this (``save_model`` gathers ZeRO-3
    shards) and only the main one writes."""
    if not trainer.args.should_save:
        trainer.save_model(str(out_dir / "adapter"))
        return trainer.model
    write_jsonl(out_dir / "train_log.jsonl", trainer.state.log_history)
    if getattr(trainer, "sampled_by", None):  # GRPO: which generator sampled the completions (ieta.grpo_sampling)
        write_json(out_dir / "grpo_sampling.json", trainer.sampled_by)
    with atomic_path(out_dir / "adapter") as adapter:
        trainer.save_model(str(adapter))
    return trainer.model


def dpo_settings() -> dict:
    """DPOConfig values that differ from TRL's defaults (``method.trainer`` overrides them). The reference is fixed for
    an iteration (a fresh adapter on the policy it starts from), so its log-probs are computed once, before the steps,
    for the pairs those steps draw, forward only: no reference forward in each step. Eight pairs per forward on every
    device: :func:`ieta.dpo_forward.shared_forward` runs them unpadded, so on CPU a batch costs what its pairs cost one
    at a time (measured: 23.6-26.4 s with 8 against 25.5-28.0 s with 1 for the quick preset's setup, alternated)."""
    return {"precompute_ref_log_probs": True, "precompute_ref_batch_size": 8}


def model_hash(module: torch.nn.Module) -> str:
    """sha256 of ``module``'s state dict: each entry's name, dtype, shape and raw bytes. What TRL's ``hash_module``
    fingerprints the cached reference log-probs with, without its copy of every bf16 tensor to fp32 (numpy has no
    bf16): 0.7 s against 3.7 s for the embedded model."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


@contextmanager
def fast_model_hash():
    """Within the block DPOTrainer fingerprints the model with :func:`model_hash` (another TRL version: unchanged)."""
    import trl.trainer.dpo_trainer as dpo_trainer

    original = getattr(dpo_trainer, "hash_module", None)
    if original is None:
        yield
        return
    dpo_trainer.hash_module = model_hash
    try:
        yield
    finally:
        dpo_trainer.hash_module = original


def shared_dataset(dataset: Dataset, path: Path) -> Dataset:
    """``dataset`` saved at ``path`` by the main process and read back by every process. TRL caches what it derives
    (tokens, precomputed reference log-probs) next to a dataset's files, so all ranks of an ``accelerate launch``
    then share one cache under the run dir; an in-memory dataset would cache in a per-process temporary dir."""
    from accelerate import PartialState
    from datasets import load_from_disk

    state = PartialState()
    with state.main_process_first():
        if state.is_main_process:
            shutil.rmtree(path, ignore_errors=True)  # a rerun's rows replace an interrupted attempt's
            dataset.save_to_disk(str(path))
        return load_from_disk(str(path))


def drop_precompute_engine(trainer) -> None:
    """Under DeepSpeed, TRL (1.16) precomputes the reference log-probs through an inference engine of its own, and
    its ZeRO-3 hooks stay on the policy when ``train`` wraps it again: the first step then fails inside DeepSpeed
    (``IndexError: pop from an empty deque``). Remove that engine's hooks once its values are cached."""
    engine = getattr(trainer, "_precompute_engine", None)
    if engine is not None:
        engine.destroy()
        trainer._precompute_engine = None


def train_dpo(model, tokenizer, pairs: list[dict], cfg: MethodConfig, *, steps: int, out_dir: Path, seed: int,
              progress: bool = True, callbacks: list | None = None, trl_defaults: bool = False):
    """Run ``steps`` DPO steps on ``pairs``; save the adapter and the log history. Returns the trained PeftModel.

    ``callbacks`` are extra transformers ``TrainerCallback`` objects (e.g. the step timer of ``ieta.bench train``);
    ``trl_defaults`` leaves out :func:`dpo_settings`, :func:`ieta.lm_head.cpu_lm_head`, :func:`fast_model_hash`,
    :func:`ieta.dpo_forward.shared_forward` (what pairs share computed once) and
    :func:`ieta.lora_dropout.use_mask_dropout`: the benchmark's reference."""
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise ValueError("no preference pairs to train on")
    model = as_base_model(model)
    settings = {} if trl_defaults else dpo_settings()
    args = DPOConfig(**{"beta": cfg.beta, "max_length": cfg.max_length, **settings,
                        **trainer_args(model, cfg, steps=steps, out_dir=out_dir, seed=seed, progress=progress)})
    dataset = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    seen = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    if len(dataset) > seen:  # the pairs `steps` steps will draw: precomputed reference log-probs cover no others
        dataset = dataset.shuffle(seed=seed).select(range(seen))
    tokenizer.padding_side = "right"
    with ExitStack() as stack:
        if not trl_defaults:
            stack.enter_context(cpu_lm_head())
            stack.enter_context(fast_model_hash())
            stack.enter_context(shared_forward(model))
        trainer = DPOTrainer(model=model, args=args, train_dataset=shared_dataset(dataset, out_dir / "trainer" / "pairs"),
                             processing_class=tokenizer, peft_config=lora_config(cfg.lora, model), callbacks=callbacks)
        drop_precompute_engine(trainer)
        if not trl_defaults:
            use_mask_dropout(trainer.model)
        trainer.train()
    return save_training(trainer, out_dir)


def train_sft(model, tokenizer, rows: list[dict], cfg: MethodConfig, *, steps: int, out_dir: Path, seed: int,
              progress: bool = True):
    """Rejection-sampling fine-tuning: TRL SFTTrainer on passing samples, loss on the completion only."""
    from trl import SFTConfig, SFTTrainer

    if not rows:
        raise ValueError("no passing samples to fine-tune on")
    model = as_base_model(model)
    args = SFTConfig(max_length=cfg.max_length, completion_only_loss=True,
                     **trainer_args(model, cfg, steps=steps, out_dir=out_dir, seed=seed, progress=progress))
    tokenizer.padding_side = "right"
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(cfg.lora, model))
    use_mask_dropout(trainer.model)
    trainer.train()
    return save_training(trainer, out_dir)
