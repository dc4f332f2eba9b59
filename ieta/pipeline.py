"""The IETA loop: initial evaluation, then per iteration sample -> execute -> pairs -> train -> evaluate."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import subprocess
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ieta.config import ConfigError, RunConfig
from ieta.data import Problem, run_splits
from ieta.evaluate import evaluate, seed_free_files
from ieta.execute import SandboxConfig
from ieta.io import read_json, read_jsonl, write_json, write_jsonl
from ieta.methods import IterationData, get_method, train_iteration
from ieta.models import resolve_path
from ieta.pairs import build_pairs
from ieta.policy import load_policy
from ieta.prompts import build_prompt
from ieta.rollout import repair_turn, sample_and_execute
from ieta.rollout import run_in_sandbox as execute
from ieta.sandbox import sandbox_info
from ieta.seeding import seed_everything, stage_seed
from ieta.share import Share, carry_over

log = logging.getLogger(__name__)
VERSIONED = ("ieta", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "hydra-core", "wandb")
#: config keys a resumed run may change: they do not change its results
RESUMABLE_KEYS = ("progress", "resume", "logger", "share_dir")
#: why an iteration that left the policy unchanged carries over the previous iteration's greedy evaluation
UNCHANGED = ("the policy is the previous iteration's, and these files were drawn at T=0, so they would be made again "
             "identically (their records name the previous iteration's stage seed, which T=0 does not use)")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _code_version() -> dict:
    """The git commit IETA runs from, and whether tracked files differ from it ({} outside a git checkout)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if head.returncode or status.returncode:
        return {}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


#: read when this module is imported: a Hydra multirun imports the code once, so every job of a sweep records the
#: code it runs, even if the checkout moves on meanwhile
CODE_VERSION = _code_version()


def _run_info(cfg: RunConfig, train: list[Problem], evaluation: list[Problem], device: str, dtype: torch.dtype) -> dict:
    return {
        "method": cfg.method.name, "model": cfg.model.name, "dataset": cfg.dataset.name,
        "split": cfg.dataset.split.value, "same_set_evaluation": cfg.dataset.split.value != "eval",
        "num_iterations": cfg.iteration.num_iterations, "steps_per_iteration": cfg.iteration.steps_per_iteration,
        "seed": cfg.seed, "ks": list(cfg.ks), "num_train_problems": len(train), "num_eval_problems": len(evaluation),
        "sampler": {"n": cfg.sampler.n, "train_n": cfg.sampler.train_n or cfg.sampler.n,
                    "temperature": cfg.sampler.temperature, "max_new_tokens": cfg.sampler.max_new_tokens},
        "device": device, "dtype": str(dtype).removeprefix("torch."),
        "sandbox": sandbox_info(SandboxConfig(**cfg.sandbox)), "versions": _versions(), "code": CODE_VERSION,
        "config": _plain_config(cfg),
    }


def _plain_config(cfg: RunConfig) -> dict:
    """The validated config as JSON data (``run_info.json``'s ``config``)."""
    return json.loads(json.dumps(OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)))


def _result_keys(config: dict, prefix: str = "") -> dict:
    """``config`` flattened (``{"sampler.n": 2, ...}``), without the keys a resumed run may change."""
    flat = {}
    for key, value in config.items():
        if prefix + key in RESUMABLE_KEYS:
            continue
        flat |= _result_keys(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {prefix + key: value}
    return flat


def _check_resumable(run_dir: Path, cfg: RunConfig) -> None:
    """A run dir continues only under the config it was started with: mixed configs would give mixed results."""
    info = run_dir / "run_info.json"
    started = read_json(info).get("config") if info.exists() else None
    if started is None:  # a new run dir
        return
    before, now = _result_keys(started), _result_keys(_plain_config(cfg))
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        raise ConfigError(
            f"invalid config: resume: {run_dir} was started with other settings, and continuing it would mix their "
            "results: " + "; ".join(f"{k}={before.get(k)!r} there, {now.get(k)!r} now" for k in changed)
            + ". Rerun with the settings it was started with (run_info.json, 'config'), or start a new run dir "
            "(another hydra.run.dir, without resume=)")


def _executed_references(problems: list[Problem], executions: list[dict], cfg: RunConfig, out: Path) -> list[dict]:
    """Run canonical solutions of problems where no sample passed: verified `chosen` stand-ins."""
    if not cfg.method.pairs.reference_fallback:
        return []
    if out.exists():
        return read_jsonl(out)
    solved = {r["task_id"] for r in executions if r["passed"]}
    todo = [{"task_id": p.task_id, "completion_id": "reference", "completion": p.canonical_solution}
            for p in problems if p.task_id not in solved and p.canonical_solution]
    refs = execute(problems, todo, cfg)
    write_jsonl(out, refs)
    return refs


def _vllm_weights(model, tokenizer, cfg: RunConfig, out_dir: Path) -> str | None:
    """Where vLLM loads the current policy from (``sampler=vllm`` only): the model's own path, else merged weights."""
    if cfg.sampler.backend != "vllm":
        return None
    if (out_dir / "merged" / "config.json").exists():
        return str(out_dir / "merged")
    if out_dir.name == "iter_0" and cfg.model.random_init is None:
        return resolve_path(cfg.model.path)
    from ieta.vllm_backend import save_policy

    return str(save_policy(model, tokenizer, out_dir / "merged"))


def _train_iteration(model, tokenizer, train: list[Problem], cfg: RunConfig, k: int, it_dir: Path, weights: str | None):
    """Sample, execute and pair on the training problems, then update the policy (when the method trains).
    Returns the policy and whether it changed."""
    temperature = cfg.sampler.temperature if cfg.sampler.train_temperature is None else cfg.sampler.train_temperature
    executions = sample_and_execute(model, tokenizer, train, cfg, n=cfg.sampler.train_n or cfg.sampler.n,
                                    temperature=temperature, seed=stage_seed(cfg.seed, k, 1), out_dir=it_dir,
                                    weights=weights)
    prompt_for = lambda p: build_prompt(p, tokenizer, cfg.model.prompt_format)  # noqa: E731
    refs = _executed_references(train, executions, cfg, it_dir / "references.jsonl")
    repairs = (repair_turn(model, tokenizer, train, executions, cfg, temperature=temperature,
                           seed=stage_seed(cfg.seed, k, 4), out_dir=it_dir)
               if "repair" in cfg.method.pairs.strategies else [])
    pairs_path = it_dir / "pairs.jsonl"
    if pairs_path.exists():
        pairs = read_jsonl(pairs_path)
    else:
        pairs = build_pairs(train, executions, cfg.method.pairs, iteration=k, references=refs, repairs=repairs,
                            prompt_for=prompt_for)
        write_jsonl(pairs_path, pairs)
    log.info("iteration %d: %d samples, %d passing, %d pairs", k, len(executions),
             sum(r["passed"] for r in executions), len(pairs))
    method = get_method(cfg.method.name)
    if not method.trains:
        return model, False
    from ieta.train import load_adapter
    if (it_dir / "adapter" / "adapter_config.json").exists():  # finished earlier: reload instead of retraining
        return load_adapter(model, it_dir / "adapter").eval(), True
    rows: list[dict] = []
    if method.data_file is not None:  # offline: the rows it trains on, on disk for `accelerate launch` processes
        rows_path = it_dir / method.data_file
        if rows_path.exists():
            rows = read_jsonl(rows_path)
        else:
            rows = method.training_rows(IterationData(cfg, k, it_dir, train, executions, pairs, refs, prompt_for))
            write_jsonl(rows_path, rows)
        if not rows:
            log.warning("iteration %d: nothing to train %s on, the policy is left unchanged", k, method.name)
            return model, False
    if cfg.accelerate is not None:  # `accelerate launch` processes train from the run dir; load what they wrote
        from ieta.train_stage import launch
        launch(cfg, it_dir.parent, k)
        return load_adapter(model, it_dir / "adapter").eval(), True
    return train_iteration(model, tokenizer, train, rows, cfg, k, it_dir, seed=stage_seed(cfg.seed, k, 2)), True


def run(cfg: RunConfig, run_dir: Path, raw_cfg: DictConfig | None = None) -> list[dict]:
    """Run the whole experiment into ``run_dir``; finished stages found there are reused, not redone."""
    from ieta.report import write_run_report
    from ieta.tracking import start_tracker

    _check_resumable(run_dir, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    train, evaluation = run_splits(cfg.dataset)
    model, tokenizer, device, dtype = load_policy(cfg)
    write_json(run_dir / "run_info.json", _run_info(cfg, train, evaluation, device, dtype))
    metrics_path = run_dir / "metrics.json"
    done = {m["iteration"]: m for m in (read_json(metrics_path) if metrics_path.exists() else [])}
    tracker = start_tracker(raw_cfg if raw_cfg is not None else DictConfig({"logger": cfg.logger}), run_dir)
    try:
        metrics: list[dict] = []
        weights = _vllm_weights(model, tokenizer, cfg, run_dir / "iter_0")
        share = Share(cfg.share_dir, _result_keys(_plain_config(cfg)), run_dir)
        for k in range(cfg.iteration.num_iterations + 1):
            it_dir = run_dir / f"iter_{k}"
            if share.fetch(k, it_dir):
                log.info("iteration %d: the untrained policy's stage files come from the sweep's store %s", k,
                         share.root)
            if k > 0:
                model, changed = _train_iteration(model, tokenizer, train, cfg, k, it_dir, weights)
                previous = run_dir / f"iter_{k - 1}"
                if not changed and (carried := carry_over(previous, it_dir, seed_free_files(cfg), UNCHANGED)):
                    log.info("iteration %d: the policy is unchanged since iteration %d, so its greedy evaluation is "
                             "carried over (%s; iter_%d/carried.json)", k, k - 1, ", ".join(carried), k)
                if (it_dir / "train_log.jsonl").exists():
                    tracker.log_training(k, read_jsonl(it_dir / "train_log.jsonl"))
                    if cfg.sampler.backend == "vllm":  # vLLM serves merged weights from disk
                        from ieta.train import as_base_model
                        model = as_base_model(model)
                        weights = _vllm_weights(model, tokenizer, cfg, it_dir)
            record = done.get(k) or evaluate(model, tokenizer, evaluation, cfg, iteration=k,
                                             seed=stage_seed(cfg.seed, k, 3), out_dir=it_dir, weights=weights)
            share.publish(k, it_dir)
            metrics.append(record)
            write_json(metrics_path, metrics)
            tracker.log_evaluation(record, read_jsonl(it_dir / "eval_executions.jsonl"))
            log.info("iteration %d: %s", k, {key: v for key, v in record.items() if key.startswith("pass@")})
        write_run_report(run_dir)
        tracker.log_report(run_dir)
    finally:
        tracker.finish()
    return metrics
