"""Sampling throughput: IETA's sampler against Hugging Face's generators and the machine's limit, in the same run.

``python -m ieta.bench sample [--problems 16] [--n 4] [--max-new-tokens 128] [--batch-size 64] [--quantize auto]
[--temperature 0.8] [--draft prompt_lookup] [--workload first]`` samples ``n`` completions for each of the first
``problems`` HumanEval prompts (chat format, the pipeline's stop strings, top-p 0.95; ``--temperature 0``: greedy;
``--draft``: sampler.draft). ``--workload revision`` takes revision prompts instead, as a second turn sees them: each
holds one of the failing T=0.8 attempts in ``ieta/bench/dpo_pairs.jsonl`` (the embedded model's, on the first 20
HumanEval problems) and asks for a corrected function (feedback ``none``: no execution is needed). It prints:

- the path the sampler chose (arithmetic, ISA, decoder) and why;
- a roofline for this machine: memory bandwidth (a large tensor copy) against the bytes a decode step reads
  (weights plus KV cache), and GEMM throughput in the chosen arithmetic (a 64-row gate/up GEMM of the model, through
  the sampler's own matmul) against the FLOPs per token; the tokens/s those allow at the batch size;
- tokens/s of IETA's sampler and of the references, on the same prompts: ``hf`` (``model.generate`` batched, all
  ``problems x n`` rows at once via ``num_return_sequences``, in the model's best dtype on this CPU), ``cb``
  (transformers' continuous batching ``generate_batch``, where it runs on CPU; else why not) and, with ``--plain``,
  plain batch-1 fp32 ``generate`` on that many prompts;
- the limit of this very workload: the sampler's own forwards (prefill tokens, each decode step's rows) at the
  roofline, so that the partly empty batch at the end and the prefill are counted;
- a floor from the sampler's own GEMMs: a decode step's matmuls alone, on its prepacked weights, timed at 1 row and
  at the batch size (the weights streamed as the GEMMs read them), each of the run's decode forwards priced at its rows;
- ratios against the strongest reference, and how far the sampler is from the roofline, the workload limit and the
  GEMM floor.

Tokens are counted alike for everyone: each completion's text up to and including its first stop string, re-tokenized.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from ieta.bench.train import PAIRS
from ieta.config import compose_config, validate
from ieta.cpu_path import capabilities, native_bf16
from ieta.data import load_problems
from ieta.decode import Decoder, FloatMatmul
from ieta.int8 import Int8Matmul
from ieta.models import load_model, load_tokenizer, pick_device
from ieta.io import read_jsonl
from ieta.prompts import build_prompt, extract_completion, stop_strings
from ieta.repair import build_revision_prompt
from ieta.sample import generate, sampling_path, uses_decoder

TOP_P = 0.95
BYTES = {"int8": 1, "bfloat16": 2, "float32": 4}


def _timed(f, repeat: int) -> float:
    """The fastest of ``repeat`` calls (after a warm-up): a limit is what the machine can do, and on a shared machine
    a mean also counts the moments another job held the cores."""
    f()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def bandwidth() -> float:
    """Bytes/s of a 256 MiB fp32 tensor copy (read + write)."""
    src = torch.ones(64 << 20)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _timed(lambda: dst.copy_(src), 5)


def gemm_rate(compute: str, rows: int, hidden: int, out: int) -> float:
    """FLOP/s (int8: OP/s) of a ``rows x hidden @ hidden x out`` GEMM through the sampler's own matmul."""
    weight = torch.randn(out, hidden)
    matmul = Int8Matmul(weight, None) if compute == "int8" else FloatMatmul(weight, None, getattr(torch, compute))
    x = torch.randn(rows, hidden).to(torch.float32 if compute == "int8" else getattr(torch, compute))
    return 2 * rows * hidden * out / _timed(lambda: matmul(x), 10)


def model_costs(model, context: int) -> tuple[int, float]:
    """``(linear parameters per token, attention FLOPs per token at ``context`` cached tokens)``."""
    cfg = model.config
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * context
    return linear, attention


def kv_bytes_per_row(model, context: int, act_bytes: int) -> int:
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * context * act_bytes


def count_tokens(tok, texts: list[str], stops: list[str]) -> int:
    """Tokens of each text up to and including its first stop string."""
    total = 0
    for text in texts:
        ends = [text.index(s) + len(s) for s in stops if s in text]
        total += len(tok(text[: min(ends)] if ends else text)["input_ids"])
    return total


def _ours(model, tok, prompts, args) -> tuple[list[str], float, float, list]:
    t0, c0, work = time.perf_counter(), time.process_time(), []  # the weights' conversion counts as sampling time
    outputs = generate(model, tok, prompts, n=args.n, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                       stops=stop_strings("chat"), seed=0, quantize=args.quantize, progress=False, work=work,
                       temperature=args.temperature, top_p=TOP_P, draft=args.draft)
    return [t for samples in outputs for t in samples], time.perf_counter() - t0, time.process_time() - c0, work


def _rows(prompts: list[str], args) -> tuple[list[str], int]:
    """The references' inputs and ``num_return_sequences``: greedy decoding returns one sequence per input, so each
    prompt is repeated ``n`` times instead."""
    return (prompts, args.n) if args.temperature > 0 else ([p for p in prompts for _ in range(args.n)], 1)


@torch.inference_mode()
def _hf_batched(model, tok, prompts, args) -> tuple[list[str], float]:
    tok.padding_side = "left"
    t0 = time.perf_counter()
    rows, returned = _rows(prompts, args)
    enc = tok(rows, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=args.max_new_tokens, num_return_sequences=returned,
                         stop_strings=stop_strings("chat"), tokenizer=tok, pad_token_id=tok.pad_token_id,
                         **_settings(args))
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts, time.perf_counter() - t0


@torch.inference_mode()
def _hf_continuous(model, tok, prompts, args) -> tuple[list[str], float]:
    from transformers import GenerationConfig

    rows, returned = _rows(prompts, args)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, num_return_sequences=returned,
                              eos_token_id=model.generation_config.eos_token_id, pad_token_id=tok.pad_token_id,
                              **_settings(args))
    t0 = time.perf_counter()
    results = model.generate_batch(tok(rows)["input_ids"], generation_config=config, progress_bar=False)
    texts = [tok.decode(r.generated_tokens, skip_special_tokens=True) for r in results.values()]
    if len(texts) != len(prompts) * args.n or any(r.error for r in results.values()):
        raise RuntimeError(next((r.error for r in results.values() if r.error), "missing results"))
    return texts, time.perf_counter() - t0


@torch.inference_mode()
def _plain(model, tok, prompts, args) -> tuple[list[str], float]:
    texts, t0 = [], time.perf_counter()
    for prompt in prompts:
        enc = tok(prompt, return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=args.max_new_tokens,
                             stop_strings=stop_strings("chat"), tokenizer=tok, pad_token_id=tok.pad_token_id,
                             **_settings(args))
        texts.append(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts, time.perf_counter() - t0


def _settings(args) -> dict:
    """The references' sampling arguments for ``--temperature`` (0: greedy)."""
    if args.temperature <= 0:
        return dict(do_sample=False)
    return dict(do_sample=True, temperature=args.temperature, top_p=TOP_P)


def _print_path(model, quantize: str) -> str:
    compute, why = sampling_path(model, quantize)
    caps = capabilities()
    isa = ", ".join(f for f in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx2") if caps.get(f)) or "none"
    fallback = uses_decoder(model)
    print(f"path              {model.device.type}/{compute} (model weights {str(model.dtype).removeprefix('torch.')}), "
          f"{'decoder ieta.decode' if fallback is None else 'model forward (' + fallback + ')'}; CPU flags: {isa}")
    print(f"why               {why}")
    return compute


def workload_prompts(workload: str, problems: int, tok) -> list[str]:
    """The bench's prompts: the first ``problems`` HumanEval prompts (``first``), or up to ``problems`` revision
    prompts of the failing attempts in ``ieta/bench/dpo_pairs.jsonl`` (``revision``, the order of the file)."""
    if workload == "first":
        return [build_prompt(p, tok, "chat") for p in load_problems("humaneval", limit=problems)]
    tasks = {p.task_id: p for p in load_problems("humaneval")}
    return [build_revision_prompt(tasks[r["task_id"]], [(extract_completion(r["rejected"], "chat"), "")], tok, "chat", "none")
            for r in read_jsonl(PAIRS)[:problems]]


def _random_init(args) -> dict | None:
    return {"shape": args.shape} if args.shape else None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m ieta.bench sample", description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=16, help="HumanEval prompts")
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="longest completion, everyone")
    defaults = validate(compose_config([])).sampler  # conf/sampler/hf.yaml
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size, help="sequences decoding together (ours)")
    ap.add_argument("--quantize", default=defaults.quantize, choices=["auto", "int8", "none"],
                    help="the sampler's arithmetic; see sampler.quantize")
    ap.add_argument("--temperature", type=float, default=0.8, help="0: greedy (everyone)")
    ap.add_argument("--draft", default=defaults.draft, choices=["prompt_lookup", "none"],
                    help="guesses decoding checks several per forward; see sampler.draft")
    ap.add_argument("--workload", default="first", choices=["first", "revision"],
                    help="first attempts, or revision prompts holding a failing attempt")
    ap.add_argument("--references", default="hf,cb", help="comma-separated: hf (batched generate), cb "
                    "(generate_batch); empty for none")
    ap.add_argument("--plain", type=int, default=0, help="also plain batch-1 fp32 generate on this many prompts")
    ap.add_argument("--model", default="embedded", help="'embedded', a Hub id or a local path")
    ap.add_argument("--shape", default=None, help="a real architecture with random weights instead of --model "
                    "(ieta.model_shapes: qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b): speed and memory only")
    args = ap.parse_args(argv)
    if args.shape:  # load_model(args.model, ...) below builds it: random weights, the embedded tokenizer
        args.model = "tiny"
    tok = load_tokenizer(args.model)
    prompts = workload_prompts(args.workload, args.problems, tok)
    stops = stop_strings("chat")
    device, dtype = pick_device()
    model = load_model(args.model, dtype, device, random_init=_random_init(args)).eval()
    print(f"workload          {len(prompts)} {args.workload} prompts x n={args.n}, max_new_tokens={args.max_new_tokens}, "
          f"{torch.get_num_threads()} threads")
    compute = _print_path(model, args.quantize)

    torch.manual_seed(0)
    texts, seconds, cpu, work = _ours(model, tok, prompts, args)
    generated = count_tokens(tok, texts, stops)
    ours = generated / seconds
    rows = {"ieta sampler": (generated, seconds)}
    print(f"{'ieta sampler':17s} {compute} batch {args.batch_size}: {generated:6d} tokens {seconds:7.1f} s "
          f"{ours:7.1f} tokens/s ({cpu:.1f} CPU s on {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f})")

    _roofline(model, compute, args, ours, tok, prompts, work, generated)  # before the (slow) references

    best = torch.bfloat16 if device == "cpu" and native_bf16() else dtype
    references = [r for r in args.references.split(",") if r]
    if references and model.dtype != best:
        model = load_model(args.model, best, device, random_init=_random_init(args)).eval()
    runners = {"hf": ("hf generate", _hf_batched), "cb": ("hf generate_batch", _hf_continuous)}
    for name in references:
        label, run = runners[name]
        torch.manual_seed(0)
        try:
            ref_texts, ref_seconds = run(model, tok, prompts, args)
        except Exception as e:  # noqa: BLE001 - report why a reference cannot run here, then go on
            print(f"{label:17s} does not run here: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
            continue
        count = count_tokens(tok, ref_texts, stops)
        rows[label] = (count, ref_seconds)
        print(f"{label:17s} {str(model.dtype).removeprefix('torch.')} batch {len(prompts) * args.n}: {count:6d} tokens "
              f"{ref_seconds:7.1f} s {count / ref_seconds:7.1f} tokens/s")
    if args.plain:
        model = model if model.dtype == torch.float32 else load_model(args.model, torch.float32, "cpu",
                                                                      random_init=_random_init(args)).eval()
        torch.manual_seed(0)
        plain_texts, plain_seconds = _plain(model, tok, prompts[: args.plain], args)
        count = count_tokens(tok, plain_texts, stops)
        rows["plain generate"] = (count, plain_seconds)
        print(f"{'plain generate':17s} float32 batch 1 ({args.plain} prompts): {count:6d} tokens {plain_seconds:7.1f} s "
              f"{count / plain_seconds:7.1f} tokens/s")
    refs = {k: v[0] / v[1] for k, v in rows.items() if k != "ieta sampler"}
    if refs:
        strongest = max(refs, key=refs.get)
        print(f"speed-up          {ours / refs[strongest]:7.2f}x the strongest reference ({strongest}); "
              + ", ".join(f"{ours / r:.2f}x {k}" for k, r in refs.items()))
    return 0


def _roofline(model, compute: str, args, ours: float, tok, prompts, work: list, generated: int) -> None:
    cfg = model.config
    prompt_mean = sum(len(tok(p)["input_ids"]) for p in prompts) / len(prompts)
    context = int(prompt_mean + args.max_new_tokens / 2)  # cached tokens per row at a typical step
    linear, attention = model_costs(model, context)
    flops = 2 * linear + attention
    rows = args.batch_size
    act = 4 if compute in ("int8", "float32") else 2
    weight_bytes = linear * BYTES[compute]
    step_bytes = weight_bytes + rows * kv_bytes_per_row(model, context, act)
    bw, rate = bandwidth(), gemm_rate(compute, rows, cfg.hidden_size, 2 * cfg.intermediate_size)
    memory_bound, compute_bound = bw / step_bytes * rows, rate / flops
    ceiling = min(memory_bound, compute_bound)
    print(f"roofline          memory {bw / 1e9:.1f} GB/s (256 MiB copy), {step_bytes / 1e9:.2f} GB per decode step at "
          f"{rows} rows ({weight_bytes / 1e9:.2f} GB {compute} weights + KV cache at {context} tokens) -> "
          f"{memory_bound:.0f} tokens/s; compute {rate / 1e9:.0f} G{'OP' if compute == 'int8' else 'FLOP'}/s "
          f"({compute} {rows}x{cfg.hidden_size}x{2 * cfg.intermediate_size} GEMM), {flops / 1e9:.2f} GFLOP per token "
          f"({linear / 1e6:.0f}M linear params incl. the LM head) -> {compute_bound:.0f} tokens/s")
    print(f"distance          the sampler runs at {ours / ceiling:.0%} of the {ceiling:.0f} tokens/s full-batch roofline "
          f"({'compute' if compute_bound < memory_bound else 'memory'}-bound at {rows} rows)")
    if not work:
        print("workload limit    n/a: the model-forward path keeps no record of its forwards")
        return
    # this run's own forwards at the roofline: each prefill token at the larger of the two GEMM rates (prompt tokens
    # need no LM head), each decode step compute- or memory-bound at its own row count
    prefill = sum(count for kind, count in work if kind == "prefill")
    steps = [count for kind, count in work if kind == "step"]
    head = model.get_output_embeddings().weight.numel()
    prefill_rate = max(rate, gemm_rate(compute, 256, cfg.hidden_size, 2 * cfg.intermediate_size))
    prefill_s = prefill * (2 * (linear - head) + model_costs(model, int(prompt_mean / 2))[1]) / prefill_rate
    kv_row = kv_bytes_per_row(model, context, act)
    decode_s = sum(max(r * flops / rate, (weight_bytes + r * kv_row) / bw) for r in steps)
    limit = generated / (prefill_s + decode_s)
    print(f"workload limit    prefill {prefill} tokens >= {prefill_s:.1f} s ({prefill_rate / 1e9:.0f} G/s), "
          f"{len(steps)} decode forwards at {sum(steps) / max(len(steps), 1):.1f} tokens on average >= {decode_s:.1f} s "
          f"-> {limit:.0f} tokens/s for these {generated} tokens")
    print(f"distance          the sampler runs at {ours / limit:.0%} of this workload's limit (prefill and a batch that "
          f"empties at the end included)")
    _gemm_floor(model, compute, args.batch_size, steps, prefill_s, generated, ours, weight_bytes)
    guessed, kept = (sum(c for kind, c in work if kind == name) for name in ("guessed", "kept"))
    if guessed:
        print(f"drafts            {guessed} guessed tokens run, {kept} kept ({kept / guessed:.0%}): {generated} tokens in "
              f"{len(steps)} decode forwards")


def gemm_step(decoder: Decoder, rows: int, intermediate: int) -> float:
    """Seconds of one decode step's GEMMs alone at ``rows`` rows (every block's q/k/v, o, gate/up and down, and the
    LM head), through the sampler's own matmuls on its prepacked weights; the fastest of 3 after a warm-up. Each
    weight is read once per step, so for a model larger than the caches this is a floor no decode step goes below."""
    hidden, attn = decoder.embed.shape[1], decoder.heads * decoder.head_dim
    x = torch.randn(rows, hidden).to(decoder.act)
    attended = torch.randn(rows, attn).to(decoder.act)
    mid = torch.randn(rows, intermediate).to(decoder.act)

    def forward():
        for block in decoder.blocks:
            block.qkv(x), block.o(attended), block.down(mid)
            if block.post_ops:
                block.gate(x), block.up(x)
            else:
                block.gate_up(x)
        decoder.head(x)
    return _timed(forward, 3)


def _gemm_floor(model, compute: str, batch: int, steps: list[int], prefill_s: float, generated: int, ours: float,
                weight_bytes: int) -> None:
    """The workload's limit from measured GEMM steps instead of the copy bandwidth: each decode forward's GEMMs at its
    own row count (affine between the steps measured at 1 and at ``batch`` rows), plus the prefill as above."""
    decoder = Decoder(model, compute, capacity=1, length=2)
    inter = model.config.intermediate_size
    one, full = gemm_step(decoder, 1, inter), gemm_step(decoder, batch, inter)
    del decoder
    slope = (full - one) / max(batch - 1, 1)
    decode_s = sum(one + (r - 1) * slope for r in steps)
    limit = generated / (prefill_s + decode_s)
    print(f"gemm floor        a decode step's GEMMs alone, the sampler's matmuls on its weights: {one * 1e3:.1f} ms at "
          f"1 row ({weight_bytes / 1e9:.2f} GB at {weight_bytes / one / 1e9:.1f} GB/s), {full * 1e3:.1f} ms at {batch} "
          f"rows -> these {len(steps)} decode forwards >= {decode_s:.1f} s, + the prefill's {prefill_s:.1f} s -> "
          f"{limit:.0f} tokens/s")
    print(f"distance          the sampler runs at {ours / limit:.0%} of it (the rest: attention, the elementwise ops, "
          f"picking tokens, the prefill above its GEMM rate)")
