"""End to end: the pipeline on the composed config, as ``python -m ieta.main model=tiny ...`` runs it (in this
process: the command line itself is run by test_quickstart and test_resume), really samples, executes, trains and
evaluates."""

import subprocess
from pathlib import Path

from safetensors.torch import load_file

from ieta.io import read_json, read_jsonl
from tests.conftest import run_pipeline


def test_dpo_tiny_writes_every_artefact(tmp_path):
    run_dir = tmp_path / "run"
    run_pipeline(run_dir, "method=dpo", "sampler.turns=2", "method.pairs.strategies=[pass_fail,repair]")

    info = read_json(run_dir / "run_info.json")
    assert info["method"] == "dpo" and info["device"] == "cpu" and info["num_eval_problems"] == 1
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():  # the commit the run came from
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert info["code"]["commit"] == head.strip() and isinstance(info["code"]["dirty"], bool)
    metrics = read_json(run_dir / "metrics.json")
    assert [m["iteration"] for m in metrics] == [0, 1]
    for m in metrics:
        assert {"pass@1", "pass@2", "execution_rate", "error_frequencies", "pass@1_turn2"} <= m.keys()
        assert m["pass@1_turn2"] >= m["pass@1"]
        assert 0.0 <= m["execution_rate"] <= 1.0

    it = run_dir / "iter_1"
    samples = read_jsonl(it / "samples.jsonl")
    assert len(samples) == 2 and {"task_id", "completion"} <= samples[0].keys()
    executions = read_jsonl(it / "executions.jsonl")
    assert [e["completion_id"] for e in executions] == [s["completion_id"] for s in samples]
    assert all(e["outcome"] for e in executions)
    failing = [e["completion_id"] for e in executions if not e["passed"]]
    assert [r["repair_of"] for r in read_jsonl(it / "repair_executions.jsonl")] == failing  # repair strategy's turn
    pairs = read_jsonl(it / "pairs.jsonl")
    assert pairs and {"prompt", "chosen", "rejected", "strategy", "rejected_outcome"} <= pairs[0].keys()
    adapter = load_file(it / "adapter" / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k), "LoRA weights did not change"
    assert any("loss" in e for e in read_jsonl(it / "train_log.jsonl"))
    assert len(read_jsonl(it / "eval_executions.jsonl")) == 2
    summary = (run_dir / "summary.md").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| Iteration | Pass@1 |"))
    assert "Pass@1 turn 2" in header, header  # the multi-turn column beside pass@1
    assert {p.name for p in (run_dir / "figures").iterdir()} >= {"pass_rates.png", "training_loss.png"}


def test_baseline_zero_iterations_evaluates_initial_model_only(tmp_path):
    run_dir = tmp_path / "run"
    run_pipeline(run_dir, "method=baseline", "iteration.num_iterations=0", "dataset.split=all")
    metrics = read_json(run_dir / "metrics.json")
    assert [m["iteration"] for m in metrics] == [0] and metrics[0]["split"] == "all"
    assert read_json(run_dir / "run_info.json")["same_set_evaluation"] is True
    assert not (run_dir / "iter_1").exists()


def test_sft_tiny_trains_on_passing_samples(tmp_path):
    run_dir = tmp_path / "run"
    run_pipeline(run_dir, "method=sft")
    rows = read_jsonl(run_dir / "iter_1" / "sft.jsonl")
    assert rows and all(r["completion"].endswith("```") for r in rows)
    adapter = load_file(run_dir / "iter_1" / "adapter" / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    assert [m["iteration"] for m in read_json(run_dir / "metrics.json")] == [0, 1]
