"""Reports from fake-but-structurally-real run dirs: metrics.json comes from compute_metrics on records."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ieta.metrics import compute_metrics
from ieta.report import write_run_report, write_sweep_report
from ieta.report.__main__ import main as report_main

#: Error types an outcome may carry (execution records have error_type null when passed).
ERRORS = {"passed": [None], "failed": ["AssertionError"], "syntax_error": ["SyntaxError"],
          "runtime_error": ["TypeError", "IndexError", "ValueError", "NameError"]}


def _executions(rng: random.Random, p_pass: float, p_exec: float, problems: int, n: int) -> list[dict]:
    records = []
    for t in range(problems):
        for j in range(n):
            u = rng.random()
            outcome = "passed" if u < p_pass else "failed" if u < p_exec else rng.choice(["runtime_error", "syntax_error"])
            error = rng.choice(ERRORS[outcome])
            records.append(dict(task_id=f"HumanEval/{t}", completion_id=j, completion=f"    return {j}\n",
                                passed=outcome == "passed", outcome=outcome, error_type=error,
                                message=None if error is None else f"{error}: boom", line=None if error is None else 3))
    return records


def make_run(run_dir: Path, method: str, seed: int = 0, iterations: int = 2, n: int = 5, problems: int = 12,
             gain: float = 0.1, split: str = "eval", overrides: list[str] | None = None) -> Path:
    """Write a run dir the way the pipeline does; ``gain`` is the per-iteration rise in pass probability."""
    rng = random.Random(f"{method}-{seed}")
    info = dict(method=method, model="tiny-qwen", dataset="humaneval", split=split, same_set_evaluation=split == "all",
                num_iterations=iterations, steps_per_iteration=3, seed=seed,
                sampler=dict(n=n, temperature=0.8, max_new_tokens=64), ks=[1, 10, 100], num_train_problems=problems,
                num_eval_problems=problems, device="cpu", dtype="float32", versions={})
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in (overrides or [f"method={method}", f"seed={seed}"])))
    (run_dir / "run_info.json").write_text(json.dumps(info))
    records = []
    for it in range(iterations + 1):
        ex = _executions(rng, 0.2 + gain * it, 0.5 + gain * it, problems, n)
        (run_dir / f"iter_{it}").mkdir(exist_ok=True)
        (run_dir / f"iter_{it}" / "eval_executions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ex))
        if it and method != "baseline":
            log = [{"step": s, "loss": 0.69 - 0.05 * s - 0.02 * it, "learning_rate": 1e-5} for s in (1, 2, 3)]
            log.append({"step": 3, "train_loss": 0.6, "train_runtime": 1.0})
            (run_dir / f"iter_{it}" / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        records.append({"iteration": it, **compute_metrics(ex, info["ks"])})
    (run_dir / "metrics.json").write_text(json.dumps(records))
    return run_dir


def test_run_report_sections_and_figures(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "dpo", split="all")
    summary = write_run_report(run).read_text()
    for section in ("## Overview", "## Summary of Results", "## Error Reduction", "## Figures", "## Conclusions"):
        assert section in summary
    assert "Same-set evaluation" in summary and "all (same-set evaluation)" in summary
    assert "pass@10 omitted" in summary and "All errors" in summary and "95%" in summary
    figs = {p.name for p in (run / "figures").glob("*.png")}
    assert figs == {"pass_rates.png", "execution_rates.png", "error_frequencies.png", "training_loss.png"}
    for name in figs:
        assert f"(figures/{name})" in summary


def test_baseline_run_has_no_loss_figure(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "baseline", gain=0.0)
    summary = write_run_report(run).read_text()
    assert not (run / "figures" / "training_loss.png").exists()
    assert "no training loss" in summary


def test_sweep_report_over_methods(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for job, (method, gain) in enumerate([("baseline", 0.0), ("dpo", 0.15), ("rlaif", 0.1)]):
        make_run(sweep / str(job), method, gain=gain)
    (sweep / "3").mkdir()  # a job that died before writing metrics.json is ignored
    summary = write_sweep_report(sweep).read_text()
    for section in ("## Experiment Overview", "## Summary of Results", "## Error Reduction", "## Method Comparison",
                    "## Comprehensive Comparison", "## Detailed Results by Method", "## Conclusions"):
        assert section in summary
    header = next(line for line in summary.splitlines() if line.startswith("| Method | Jobs"))
    assert all(c in header for c in ("Pass@1", "Pass@10", "Pass@100", "Execution Rate"))
    for method in ("BASELINE", "DPO", "RLAIF"):
        assert f"### {method}" in summary
    figs = {p.name for p in (sweep / "figures").glob("*.png")}
    assert {"method_comparison.png", "comparison_dashboard.png", "dpo_training_loss.png"} <= figs
    assert "baseline_training_loss.png" not in figs
    assert all((sweep / str(j) / "summary.md").is_file() for j in range(3))
    assert "dpo vs baseline" in summary and (sweep / "comparison.csv").is_file()


def test_seed_sweep_gives_mean_and_std(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for job, seed in enumerate([0, 1, 2]):
        make_run(sweep / str(job), "dpo", seed=seed, iterations=1, overrides=["method=dpo", f"seed={seed}"])
    summary = write_sweep_report(sweep).read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| **dpo** | 3 |"))
    assert "±" in row and "std" in summary


def test_cli_rebuilds_run_and_sweep(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep / "0", "dpo", iterations=1)
    assert report_main([str(sweep / "0")]) == 0
    assert report_main([str(sweep)]) == 0
    assert capsys.readouterr().out.strip().endswith("summary.md")
    assert report_main([str(tmp_path / "sweep" / "0" / "figures")]) == 1
