"""Optional vLLM back-end (``sampler=vllm``, ``pip install -e .[vllm]``, GPU): the same interface as HF sampling.

vLLM serves weights from disk. IETA merges each iteration's LoRA adapter into the policy (the next iteration's
reference), so after training the merged policy is written to ``iter_<k>/merged/`` and the engine reloads it.
"""

from __future__ import annotations

import gc
from pathlib import Path

from ieta.io import atomic_path

_ENGINE: dict = {}  # one engine per process: {"path": str, "llm": vllm.LLM}


def _engine(weights: str, seed: int, gpu_memory_utilization: float):
    from vllm import LLM

    if _ENGINE.get("path") != weights:
        if "llm" in _ENGINE:  # a new policy: free the old engine's GPU memory first
            del _ENGINE["llm"]
            gc.collect()
            import torch

            torch.cuda.empty_cache()
        _ENGINE.update(path=weights, llm=LLM(model=weights, dtype="bfloat16", seed=seed,
                                             gpu_memory_utilization=gpu_memory_utilization))
    return _ENGINE["llm"]


def generate(weights: str | Path, prompts: list[str], *, n: int, temperature: float, top_p: float,
             max_new_tokens: int, stops: list[str], seed: int, gpu_memory_utilization: float = 0.3,
             progress: bool = True) -> list[list[str]]:
    """``n`` continuations per prompt, in input order (vLLM batches and schedules internally)."""
    from vllm import SamplingParams

    params = SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                            max_tokens=max_new_tokens, stop=stops or None, seed=seed)
    outputs = _engine(str(weights), seed, gpu_memory_utilization).generate(prompts, params, use_tqdm=progress)
    return [[c.text for c in out.outputs] for out in outputs]


def save_policy(model, tokenizer, out_dir: Path) -> Path:
    """Write the merged policy where vLLM can load it; returns the merged (adapter-free) model's directory."""
    with atomic_path(out_dir) as staged:
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
    return out_dir
