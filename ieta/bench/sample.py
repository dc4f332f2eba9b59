"""Sampling throughput: our sampler vs plain ``model.generate`` (batch 1, fp32) on the same prompts, same run.

``python -m ieta.bench sample [--problems 16] [--n 4] [--plain 4] [--max-new-tokens 128]`` samples ``n``
completions for each of the first ``problems`` HumanEval prompts with IETA's sampler (its default dtype and batch
size), then runs plain batch-1 fp32 ``generate`` on the first ``plain`` of the same prompts with the same sampling
settings and stop strings, and prints generated tokens per second for both and their ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from ieta.config import SamplerConfig
from ieta.data import load_problems
from ieta.models import load_model, load_tokenizer, pick_device
from ieta.prompts import build_prompt, stop_strings
from ieta.sample import generate, quantizes

SETTINGS = dict(temperature=0.8, top_p=0.95)


def _ours(model, tok, prompts: list[str], n: int, max_new_tokens: int, batch_size: int,
          quantize: str) -> tuple[int, float]:
    t0 = time.perf_counter()  # the int8 conversion, when on, is timed as part of sampling
    outputs = generate(model, tok, prompts, n=n, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       stops=stop_strings("chat"), seed=0, quantize=quantize, progress=False, **SETTINGS)
    elapsed = time.perf_counter() - t0
    return sum(len(tok(text)["input_ids"]) for samples in outputs for text in samples), elapsed


@torch.inference_mode()
def _plain(model, tok, prompts: list[str], max_new_tokens: int) -> tuple[int, float]:
    tokens, t0 = 0, time.perf_counter()
    for prompt in prompts:
        enc = tok(prompt, return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, stop_strings=stop_strings("chat"),
                             tokenizer=tok, pad_token_id=tok.pad_token_id, **SETTINGS)
        tokens += out.shape[1] - enc["input_ids"].shape[1]
    return tokens, time.perf_counter() - t0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m ieta.bench sample", description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=16, help="HumanEval prompts sampled by our sampler")
    ap.add_argument("--n", type=int, default=4, help="samples per prompt for our sampler")
    ap.add_argument("--plain", type=int, default=4, help="prompts (of the same ones) for plain batch-1 generate")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="longest completion, both")
    ap.add_argument("--batch-size", type=int, default=SamplerConfig.batch_size, help="sequences decoding together (ours)")
    ap.add_argument("--quantize", default=SamplerConfig.quantize, choices=["auto", "int8", "none"],
                    help="int8 dynamic quantization while sampling (ours); see sampler.quantize")
    ap.add_argument("--model", default="embedded", help="'embedded', a Hub id or a local path")
    args = ap.parse_args(argv)
    tok = load_tokenizer(args.model)
    prompts = [build_prompt(p, tok, "chat") for p in load_problems("humaneval", limit=args.problems)]
    device, dtype = pick_device()
    model = load_model(args.model, dtype, device)
    weights = "int8" if quantizes(model, args.quantize) else str(dtype).removeprefix("torch.")
    torch.manual_seed(0)
    t_ours = _ours(model, tok, prompts, args.n, args.max_new_tokens, args.batch_size, args.quantize)
    if dtype != torch.float32 or device != "cpu":
        model = load_model(args.model, torch.float32, "cpu")
    torch.manual_seed(0)
    t_plain = _plain(model, tok, prompts[: args.plain], args.max_new_tokens)
    rate_ours, rate_plain = t_ours[0] / t_ours[1], t_plain[0] / t_plain[1]
    print(f"prompts           {len(prompts)} x n={args.n} (ours), {args.plain} x 1 (plain); "
          f"max_new_tokens={args.max_new_tokens}, {torch.get_num_threads()} threads")
    print(f"ieta sampler      {device}/{weights} batch {args.batch_size}: "
          f"{t_ours[0]:6d} tokens {t_ours[1]:7.1f} s {rate_ours:7.1f} tokens/s")
    print(f"plain generate    cpu/float32 batch 1: {t_plain[0]:6d} tokens {t_plain[1]:7.1f} s {rate_plain:7.1f} tokens/s")
    print(f"speed-up          {rate_ours / rate_plain:7.2f}x")
    return 0
