"""Training step time at the quick preset's settings: DPO (TRL's defaults vs IETA's, same run) and GRPO.

``python -m ieta.bench train [--method dpo] [--steps 4] [--warmup 1] [--pairs FILE] [overrides ...]`` composes
``experiment=quick method=dpo``
and trains the embedded model twice through ``ieta.train.train_dpo`` on the same preference pairs: by default the 23
pairs of a quick run of the embedded model (``ieta/bench/dpo_pairs.jsonl``: its T=0.8 completions of the first 20
HumanEval problems, paired by their sandbox verdicts; 104 tokens per chosen completion over the 23, 126 per
completion over the 10 that 5 steps draw, against 45 for a canonical body),
prompts rebuilt with this config's prompt format; ``--pairs`` reads a run's ``iter_<k>/pairs.jsonl`` instead:

- ``TRL defaults``: DPOConfig's own defaults where IETA departs from them (bf16 autocast, gradient checkpointing,
  a reference forward in every step) and TRL's LM head as it is (off Triton it scores every position);
- ``ieta``: the composed config as a run would use it (fp32 on CPUs without native bf16, no activation
  checkpointing, reference log-probs precomputed for the pairs the steps draw, the LM head on completion tokens
  only).

Both use the preset's LoRA adapter (``method.lora``), which is not a TRL setting.

It prints the median seconds per optimisation step (after ``warmup`` steps), the one-off setup (trainer build,
including any precomputed reference log-probs) and the total, with ratios.

``--method grpo`` composes ``experiment=quick method=rlaif`` and runs ``train_rlaif`` (TRL's GRPOTrainer: online
generation, sandboxed rewards, the judge, the policy update) on the first ``--problems`` HumanEval problems, and prints
seconds per step and per completion token (TRL's ``completions/mean_length`` x the completions of a step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import TrainerCallback

from ieta.config import compose_config, validate
from ieta.data import load_problems
from ieta.io import read_jsonl
from ieta.prompts import build_prompt


#: DPOConfig's own defaults for the settings the quick preset and the dtype choice change (``train_dpo``'s
#: ``trl_defaults`` leaves out the rest)
TRL_DEFAULTS = ["+method.trainer.bf16=true", "method.trainer.gradient_checkpointing=true"]


class StepTimer(TrainerCallback):
    """Wall seconds of each optimisation step, and of everything before the first one; ``cpu``: the process's CPU
    seconds per step (on a shared machine, wall time / CPU time shows how much of the cores the run got)."""

    def __init__(self) -> None:
        self.created, self.steps, self.cpu, self._t = time.perf_counter(), [], [], (0.0, 0.0)

    def on_train_begin(self, args, state, control, **kwargs):
        self.setup = time.perf_counter() - self.created

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(time.perf_counter() - self._t[0])
        self.cpu.append(time.process_time() - self._t[1])


#: preference pairs from a quick run of the embedded model (``iter_1/pairs.jsonl`` without the prompts)
PAIRS = Path(__file__).resolve().parent / "dpo_pairs.jsonl"


def bench_pairs(tokenizer, count: int, prompt_format: str, path: Path | None = None) -> list[dict]:
    """``count`` pairs (cycled when the file has fewer): a run's pairs as they are, or :data:`PAIRS` with their
    prompts built for ``prompt_format``."""
    rows = read_jsonl(path or PAIRS)
    if not rows:
        raise ValueError(f"no pairs in {path or PAIRS}")
    if path is None:
        problems = {p.task_id: p for p in load_problems("humaneval")}
        rows = [{**r, "prompt": build_prompt(problems[r["task_id"]], tokenizer, prompt_format)} for r in rows]
    return [rows[i % len(rows)] for i in range(count)]


def _time(cfg, pairs: list[dict], steps: int, trl_defaults: bool) -> tuple[StepTimer, float]:
    from ieta.policy import load_policy
    from ieta.train import train_dpo

    model, tokenizer, _, _ = load_policy(cfg)
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="ieta-bench-train-") as tmp:
        train_dpo(model, tokenizer, pairs, cfg.method, steps=steps, out_dir=Path(tmp), seed=cfg.seed,
                  progress=False, callbacks=[timer], trl_defaults=trl_defaults)
    return timer, time.perf_counter() - timer.created


@contextmanager
def _timed_trainer(timer: StepTimer):
    """Within the block every TRL trainer runs with ``timer`` as a callback (``train_rlaif`` takes no callbacks)."""
    from transformers import Trainer

    train = Trainer.train

    def timed(self, *args, **kwargs):
        self.add_callback(timer)
        timer.trainer = self
        return train(self, *args, **kwargs)

    Trainer.train = timed
    try:
        yield
    finally:
        Trainer.train = train


def grpo(args) -> int:
    from ieta.dpo_forward import frozen_blocks
    from ieta.methods.rlaif import train_rlaif
    from ieta.policy import load_policy

    steps = args.warmup + args.steps
    # the preset's own step count (method.rlaif.max_steps) would cap the steps asked for
    cfg = validate(compose_config(["experiment=quick", "method=rlaif", "progress=false",
                                   f"method.rlaif.max_steps={steps}", *args.overrides]))
    model, tokenizer, _, _ = load_policy(cfg)
    problems = load_problems("humaneval", limit=args.problems)
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="ieta-bench-grpo-") as tmp, _timed_trainer(timer):
        train_rlaif(model, tokenizer, problems, cfg, steps=steps, out_dir=Path(tmp), seed=cfg.seed, progress=False)
    trainer = timer.trainer
    per_step = trainer.args.generation_batch_size // trainer.args.steps_per_generation
    lengths = [e["completions/mean_length"] for e in trainer.state.log_history if "completions/mean_length" in e]
    timed, tokens = timer.steps[args.warmup:], [length * per_step for length in lengths[args.warmup:]]
    step = statistics.median(timed)
    print(f"GRPO {len(problems)} problems, {cfg.method.rlaif['num_generations']} generations per prompt, "
          f"{per_step} completions per step, max_completion_length {cfg.method.rlaif['max_completion_length']}, "
          f"LoRA r={cfg.method.lora.r} on the top {cfg.method.lora.top_layers or 'all'} blocks, "
          f"{torch.get_num_threads()} threads")
    print(f"grpo          {step:6.1f} s/step (median of {len(timed)}; steps {', '.join(f'{t:.1f}' for t in timer.steps)}"
          f" s), {statistics.mean(tokens):.0f} completion tokens per step, "
          f"{1000 * sum(timed) / sum(tokens):.1f} ms per completion token, "
          f"{statistics.median(timer.cpu[args.warmup:]):.1f} CPU s/step, setup {timer.setup:.1f} s, "
          f"load {os.getloadavg()[0]:.1f}")
    forward = trainer.grpo_forward
    print("backbone      " + (f"{forward.unmasked} calls without a mask (right-padded rows); {frozen_blocks(forward.backbone)} "
                              f"frozen blocks: {forward.replayed} rows replayed, {forward.computed} computed "
                              "(ieta.grpo_forward)" if forward else "the model's own forward"))
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m ieta.bench train", description=__doc__.split("\n")[0])
    ap.add_argument("--method", choices=["dpo", "grpo"], default="dpo", help="dpo: TRL defaults vs ieta; grpo")
    ap.add_argument("--steps", type=int, default=4, help="timed optimisation steps per variant")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocator, autocast caches)")
    ap.add_argument("--only-ieta", action="store_true", help="dpo: skip the TRL-defaults variant (slow: ~10x)")
    ap.add_argument("--problems", type=int, default=8, help="grpo: HumanEval problems to draw prompts from")
    ap.add_argument("--pairs", type=Path, default=None,
                    help="dpo: a run's iter_<k>/pairs.jsonl (default: pairs from a quick run of the embedded model)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. model=tiny")
    args = ap.parse_args(argv)
    if args.method == "grpo":
        return grpo(args)
    ours = validate(compose_config(["experiment=quick", "method=dpo", "progress=false", *args.overrides]))
    defaults = validate(compose_config(["experiment=quick", "method=dpo", "progress=false", *TRL_DEFAULTS,
                                        *args.overrides]))
    steps = args.warmup + args.steps
    from ieta.models import load_tokenizer

    tok = load_tokenizer(ours.model.path, ours.model.gguf_file)
    pairs = bench_pairs(tok, steps * ours.method.per_device_train_batch_size, ours.model.prompt_format, args.pairs)
    tokens = [len(tok(p["prompt"] + p["chosen"])["input_ids"]) for p in pairs]
    completion = [len(tok(p[k])["input_ids"]) for p in pairs for k in ("chosen", "rejected")]
    print(f"{len(pairs)} pairs from {args.pairs or 'ieta/bench/dpo_pairs.jsonl'}, {statistics.mean(tokens):.0f} tokens "
          f"per chosen sequence and {statistics.mean(completion):.0f} per completion (mean), batch "
          f"{ours.method.per_device_train_batch_size}, LoRA r={ours.method.lora.r} on the top "
          f"{ours.method.lora.top_layers or 'all'} blocks, {torch.get_num_threads()} threads")
    rows = {}
    for name, cfg in (("TRL defaults", defaults), ("ieta", ours))[args.only_ieta:]:
        timer, total = _time(cfg, pairs, steps, trl_defaults=name == "TRL defaults")
        step = statistics.median(timer.steps[args.warmup:])
        rows[name] = (step, timer.setup, total)
        print(f"{name:13s} trainer {dict(cfg.method.trainer) or '{}'}: {step:6.1f} s/step (median of "
              f"{args.steps}; {statistics.median(timer.cpu[args.warmup:]):.1f} CPU s/step on {torch.get_num_threads()} "
              f"threads), setup {timer.setup:6.1f} s, total {total:6.1f} s, load {os.getloadavg()[0]:.1f}")
    if args.only_ieta:
        return 0
    (d_step, _, d_total), (o_step, _, o_total) = rows["TRL defaults"], rows["ieta"]
    print(f"speed-up      per step {d_step / o_step:5.2f}x, total {d_total / o_total:5.2f}x")
    return 0
