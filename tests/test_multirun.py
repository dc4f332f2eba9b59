"""Real Hydra multiruns on the tiny model: every method, the sweep report, offline W&B runs, parallel jobs under
the joblib launcher; and the Slurm launcher's config."""

import os
import subprocess
import sys

import pytest

from tests.conftest import TINY, compose_config


def test_multirun_sweep_report_and_wandb_runs(tmp_path):
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"} | {"WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "ieta.main", "-m", "method=baseline,dpo,rlaif", *TINY, "logger=wandb",
           "++method.rlaif.num_generations=2", "++method.rlaif.max_completion_length=8", "++method.rlaif.max_steps=1",
           f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]

    jobs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").exists())
    assert [j.name for j in jobs] == ["0_baseline", "1_dpo", "2_rlaif"]
    for job in jobs:
        assert list(job.glob("wandb/offline-run-*/run-*.wandb")), f"no offline W&B run in {job}"
        assert (job / "summary.md").exists() and (job / "figures" / "pass_rates.png").exists()
    assert (sweep / "2_rlaif" / "iter_1" / "adapter" / "adapter_config.json").exists()
    assert list(sweep.glob("wandb/offline-run-*/run-*.wandb")), "no W&B summary run for the sweep"

    summary = (sweep / "summary.md").read_text()
    for section in ("## Summary of Results", "## Error Reduction", "## Method Comparison", "## Comprehensive Comparison",
                    "## Detailed Results by Method", "## Conclusions"):
        assert section in summary
    for method in ("BASELINE", "DPO", "RLAIF"):
        assert method in summary.upper()
    figures = {p.name for p in (sweep / "figures").iterdir()}
    assert {"method_comparison.png", "comparison_dashboard.png", "dpo_training_loss.png",
            "rlaif_training_loss.png"} <= figures


def test_parallel_joblib_jobs_convert_the_shared_model_cache_once(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    cmd = [sys.executable, "-m", "ieta.main", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY,
           "method=baseline", "iteration.num_iterations=0", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=os.environ | {"IETA_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0_baseline", "1_baseline"]
    logs = "".join(p.read_text() for p in sweep.glob("*/main.log"))
    assert logs.count("Converting the embedded model") == 1, "both jobs converted the shared cache"
    assert [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == [
        "qwen2.5-coder-0.5b-instruct-q4_k_m-tokenizer"]


def test_slurm_launcher_is_submitit():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = compose_config(["hydra/launcher=slurm"], with_hydra=True).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.gpus_per_node == 1 and launcher.timeout_min > 0
