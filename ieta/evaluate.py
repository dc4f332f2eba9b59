"""Evaluation stage: sample the eval problems, execute them, compute metrics from the real executions."""

from __future__ import annotations

from pathlib import Path

from ieta.config import RunConfig
from ieta.data import Problem
from ieta.execute import SandboxConfig, execute_samples
from ieta.io import read_jsonl, write_jsonl
from ieta.metrics import compute_metrics
from ieta.repair import after_repair, sample_repairs
from ieta.sample import sample


def execute(problems: list[Problem], samples: list[dict], cfg: RunConfig) -> list[dict]:
    """Run ``samples`` in the configured sandbox (never in this process)."""
    if not samples:
        return []
    return execute_samples({p.task_id: p for p in problems}, samples, config=SandboxConfig(**cfg.sandbox),
                           progress=cfg.progress)


def sample_and_execute(model, tokenizer, problems: list[Problem], cfg: RunConfig, *, n: int, temperature: float,
                       seed: int, out_dir: Path, prefix: str = "", weights: str | None = None) -> list[dict]:
    """Sample then execute, reusing ``<prefix>samples.jsonl``/``<prefix>executions.jsonl`` when a stage already ran."""
    samples_path, executions_path = out_dir / f"{prefix}samples.jsonl", out_dir / f"{prefix}executions.jsonl"
    if executions_path.exists():
        return read_jsonl(executions_path)
    if samples_path.exists():
        samples = read_jsonl(samples_path)
    else:
        samples = sample(model, tokenizer, problems, cfg.sampler, n=n, temperature=temperature,
                         prompt_format=cfg.model.prompt_format, seed=seed, progress=cfg.progress,
                         desc=f"{out_dir.name} {prefix}sample", weights=weights)
        write_jsonl(samples_path, samples)
    executions = execute(problems, samples, cfg)
    write_jsonl(executions_path, executions)
    return executions


def evaluate(model, tokenizer, problems: list[Problem], cfg: RunConfig, *, iteration: int, seed: int,
             out_dir: Path, weights: str | None = None) -> dict:
    """One metrics record (a ``metrics.json`` entry) for the policy after ``iteration`` (0: before training)."""
    executions = sample_and_execute(model, tokenizer, problems, cfg, n=cfg.sampler.n,
                                    temperature=cfg.sampler.temperature, seed=seed, out_dir=out_dir, prefix="eval_",
                                    weights=weights)
    record = {"iteration": iteration, "split": cfg.dataset.split.value, **compute_metrics(executions, cfg.ks)}
    if cfg.sampler.repair_turn:
        repaired = repair_turn(model, tokenizer, problems, executions, cfg, temperature=cfg.sampler.temperature,
                               seed=seed + 1, out_dir=out_dir, prefix="eval_")
        record["repair_pass@1"] = compute_metrics(after_repair(executions, repaired), [1])["pass@1"]
    return record


def repair_turn(model, tokenizer, problems: list[Problem], executions: list[dict], cfg: RunConfig, *,
                temperature: float, seed: int, out_dir: Path, prefix: str = "") -> list[dict]:
    """Sample and execute one repair per failing sample (``<prefix>repair_samples/executions.jsonl``)."""
    path = out_dir / f"{prefix}repair_executions.jsonl"
    if path.exists():
        return read_jsonl(path)
    repairs = sample_repairs(model, tokenizer, {p.task_id: p for p in problems},
                             [e for e in executions if not e["passed"]], cfg.sampler, temperature=temperature,
                             prompt_format=cfg.model.prompt_format, seed=seed, progress=cfg.progress)
    write_jsonl(out_dir / f"{prefix}repair_samples.jsonl", repairs)
    executed = execute(problems, repairs, cfg)
    write_jsonl(path, executed)
    return executed
