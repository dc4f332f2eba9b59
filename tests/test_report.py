"""Reports from fake-but-structurally-real run dirs: metrics.json comes from compute_metrics on records."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from ieta.canaries import CanaryMonitor
from ieta.metrics import compute_metrics
from ieta.report import write_run_report, write_sweep_report
from ieta.report.__main__ import main as report_main
from ieta.report.inputs import INPUTS_FILE
from ieta.rewards import JudgeStats

FIXTURE = Path(__file__).parent / "fixtures" / "report_sweep"

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


def test_seed_sweep_gives_the_mean_with_a_ci_pooled_over_seeds(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for job, seed in enumerate([0, 1, 2]):
        make_run(sweep / str(job), "dpo", seed=seed, iterations=1, overrides=["method=dpo", f"seed={seed}"])
    summary = write_sweep_report(sweep).read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| **dpo** | 3 |"))
    finals = [json.loads((sweep / str(j) / "metrics.json").read_text())[-1]["pass@1"] for j in range(3)]
    assert f"{sum(finals) / 3:.3f} [" in row and "pooled over seeds" in summary
    assert "std" not in summary and "±" not in summary


def test_cli_rebuilds_run_and_sweep(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep / "0", "dpo", iterations=1)
    assert report_main([str(sweep / "0")]) == 0
    assert report_main([str(sweep)]) == 0
    assert capsys.readouterr().out.strip().endswith("summary.md")
    assert report_main([str(tmp_path / "sweep" / "0" / "figures")]) == 1


def test_report_rebuilds_the_committed_summaries_byte_for_byte(tmp_path: Path, capsys) -> None:
    """The committed fixture holds no samples (tests/fixtures/make_report_sweep.py built it from real executions)."""
    committed = sorted(p.relative_to(FIXTURE) for p in FIXTURE.rglob("*") if p.is_file())
    assert not [p for p in committed if p.suffix in (".jsonl", ".png")]
    sweep = shutil.copytree(FIXTURE, tmp_path / FIXTURE.name)
    assert report_main([str(sweep)]) == 0
    for rel in committed:
        assert (sweep / rel).read_bytes() == (FIXTURE / rel).read_bytes(), rel
    summary = (sweep / "summary.md").read_text()
    for text in ("## Paired Comparison against baseline", "**Power.**", "Canonical share", "Greedy Pass@1",
                 "### Per seed", "Pass@100", "Sandbox errors", "exact McNemar", "Pass@1 turn 2",
                 "## Turn-by-Turn Pass@1"):
        assert text in summary, text

    # --against: every method against the one named (a paired comparison between any two methods)
    assert report_main([str(sweep), "--against", "dpo"]) == 0
    summary = (sweep / "summary.md").read_text()
    assert "## Paired Comparison against dpo" in summary and "baseline vs dpo" in summary
    row = next(line for line in summary.splitlines() if line.startswith("| **baseline** | Pass@1 |"))
    assert row.endswith("| lower |")  # dpo's rise seen from the other side
    assert report_main([str(sweep), "--against", "ppo"]) == 1
    assert "no such method" in capsys.readouterr().err


def test_unpaired_seeds_are_refused_and_flagged(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep / "0", "baseline", seed=0, overrides=["method=baseline", "seed=0"])
    make_run(sweep / "1", "dpo", seed=1, overrides=["method=dpo", "seed=1"])
    summary = write_sweep_report(sweep).read_text()
    assert "No paired comparison was possible" in summary and "no seed in common" in summary
    assert "real rise" not in summary.split("## Conclusions")[1].split("dpo: Pass@1")[0]


def test_run_report_is_paired_and_rebuilds_without_the_executions(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "dpo", gain=0.0)
    first = write_run_report(run).read_text()
    assert "## Paired Change from the Initial Evaluation" in first and "**Power.**" in first
    assert "no difference" in first  # gain 0: the paired CI contains 0
    for path in run.glob("iter_*/*.jsonl"):
        if path.name != "train_log.jsonl":
            path.unlink()
    assert write_run_report(run).read_text() == first
    stored = json.loads((run / INPUTS_FILE).read_text())
    n, c, executed = stored["iterations"]["2"]["per_problem"]["eval"]["HumanEval/0"]
    assert n == 5 and 0 <= c <= executed <= n


def test_an_initial_evaluation_alone_has_no_paired_change(tmp_path: Path) -> None:
    summary = write_run_report(make_run(tmp_path / "run", "baseline", iterations=0)).read_text()
    assert "Only the initial evaluation exists" in summary and "Paired Change" not in summary


def test_judge_canaries_turns_and_sandbox_errors_are_reported(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "rlaif", iterations=1)
    judge = JudgeStats(answers=40, unparsable=10, agreeing=24)
    (run / "iter_1" / "judge_stats.json").write_text(json.dumps({"enabled": True, **judge.to_dict()}))
    monitor = CanaryMonitor([], run / "iter_1")
    monitor.ids, monitor.completions, monitor.passes = {"IETA-canary/0", "IETA-canary/1"}, 8, 1
    monitor.write_stats()
    records = json.loads((run / "metrics.json").read_text())
    records[-1] |= {"pass@1_turn1": records[-1]["pass@1"], "pass@1_turn2": records[-1]["pass@1"] + 0.1,
                    "multi_turn": {"max_turns": 2, "feedback": "trace",
                                   "protocol": "public-test feedback, hidden-test verdict"},
                    "sandbox_errors": 3}
    (run / "metrics.json").write_text(json.dumps(records))
    summary = write_run_report(run).read_text()
    assert "| **rlaif** | 40 | 10 (25.0%) | 80.0% |" in summary  # 24 of 30 parsable agree
    assert "Warning: sandbox escape" in summary and "| 2 | 8 | 1 | 0.125 | **SANDBOX ESCAPE** |" in summary
    assert "## Turn-by-Turn Pass@1" in summary and "Pass@1 turn 2" in summary
    assert "public-test feedback, hidden-test verdict" in summary
    assert "Sandbox errors (infrastructure failures, excluded from every rate and reward): 3 in 2" in summary


def test_export_copies_what_a_report_rebuilds_from_and_nothing_else(tmp_path: Path) -> None:
    """``python -m ieta.report.export``: a sweep with samples becomes a results dir without them, whose summary
    ``python -m ieta.report`` rebuilds byte for byte."""
    from ieta.report.export import main as export_main

    sweep = tmp_path / "runs" / "humaneval-x"
    make_run(sweep / "0_baseline", "baseline", seed=0, overrides=["method=baseline", "seed=0"])
    make_run(sweep / "1_dpo", "dpo", seed=0, overrides=["method=dpo", "seed=0"])
    write_sweep_report(sweep)
    (sweep / "shared" / "abc" / "iter_0").mkdir(parents=True)
    (sweep / "shared" / "abc" / "iter_0" / "eval_samples.jsonl").write_text("{}\n")
    dest = tmp_path / "results" / "humaneval-x"
    assert export_main([str(sweep), str(dest)]) == 0
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert not [p for p in kept if p.endswith(".jsonl")] and "shared" not in " ".join(kept)
    assert {"0_baseline/metrics.json", "1_dpo/report_inputs.json", "1_dpo/.hydra/overrides.yaml", "summary.md",
            "comparison.csv"} <= set(kept)
    assert (dest / "summary.md").read_text() == (sweep / "summary.md").read_text()  # same dir name: same title
    before = (dest / "summary.md").read_bytes()
    assert report_main([str(dest)]) == 0 and (dest / "summary.md").read_bytes() == before
    assert export_main([str(sweep), str(dest)]) == 1  # never over an earlier export


def test_revisions_that_repeat_their_attempt_are_counted_and_reported(tmp_path: Path) -> None:
    from ieta.io import write_jsonl
    from ieta.report.inputs import _unchanged_revisions
    from ieta.report.sections import _unchanged_line

    it = tmp_path / "iter_1"
    it.mkdir()
    write_jsonl(it / "eval_turn2_feedback.jsonl", [
        {"task_id": "T/0", "completion_id": 0, "completion": "    return x\n"},
        {"task_id": "T/1", "completion_id": 3, "completion": "    return 1\n"}])
    write_jsonl(it / "eval_turn2_samples.jsonl", [
        {"task_id": "T/0", "completion_id": 0, "repair_of": 0, "completion": "    return x   \n\n"},  # the same
        {"task_id": "T/1", "completion_id": 3, "repair_of": 3, "completion": "    return 2\n"}])
    info = {"config": {"sampler": {"revise": "main"}}}
    assert _unchanged_revisions(it, info) == {"turn2": [2, 1]}
    assert _unchanged_revisions(it, {"config": {"sampler": {"revise": "greedy"}}}) == {}  # other files

    class Run:
        final = {"iteration": 1}
        inputs = {"iterations": {"1": {"unchanged_revisions": {"turn2": [2, 1]}}}}

    (line, _) = _unchanged_line({"dpo": [Run(), Run()]})
    assert "dpo 2 of 4 at turn 2" in line
    assert _unchanged_line({"dpo": [type("R", (), {"final": {"iteration": 0}, "inputs": {}})()]}) == []


def test_committed_results_rebuild_byte_for_byte(tmp_path: Path) -> None:
    """``results/humaneval-standard`` (issue 18's report) rebuilds from its own committed files: after a change to
    the report's format, export the sweep again."""
    results = Path(__file__).resolve().parents[1] / "results" / "humaneval-standard"
    if not results.is_dir():
        pytest.skip("no committed results")
    copy = shutil.copytree(results, tmp_path / results.name)
    assert report_main([str(copy)]) == 0
    assert (copy / "summary.md").read_bytes() == (results / "summary.md").read_bytes()
    for job in (p for p in results.iterdir() if (p / "metrics.json").is_file()):
        assert (copy / job.name / "summary.md").read_bytes() == (job / "summary.md").read_bytes(), job.name
