"""Real Hydra multiruns on the tiny model: ``./multirun.sh`` with every method, the sweep report, offline W&B runs
by default, parallel jobs under the joblib launcher; and the Slurm launcher's config."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ieta.io import read_json
from tests.conftest import TINY, compose_config


ROOT = Path(__file__).resolve().parents[1]


def test_multirun_sh_sweep_report_and_offline_wandb_runs_by_default(tmp_path):
    """``./multirun.sh`` with no logger override: W&B by default, offline without a login (no key, no netrc)."""
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL")}
    env |= {"NETRC": str(tmp_path / "no-netrc"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
            "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
            "METHODS": "baseline,dpo,rlaif", "SWEEP_DIR": str(sweep),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])}  # this interpreter
    cmd = [str(ROOT / "multirun.sh"), *TINY, "++method.rlaif.num_generations=2",
           "++method.rlaif.max_completion_length=8", "++method.rlaif.max_steps=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]

    jobs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").exists())
    assert [j.name for j in jobs] == ["0_baseline", "1_dpo", "2_rlaif"]
    for job in jobs:
        assert len(list(job.glob("wandb/offline-run-*/run-*.wandb"))) == 1, f"not one offline W&B run in {job}"
        assert read_json(job / "run_info.json")["wandb_run_id"] == read_json(job / "wandb_run.json")["id"]
        assert (job / "summary.md").exists() and (job / "figures" / "pass_rates.png").exists()
    assert (sweep / "2_rlaif" / "iter_1" / "adapter" / "adapter_config.json").exists()
    assert len(list(sweep.glob("wandb/offline-run-*/run-*.wandb"))) == 1, "not one W&B comparison run for the sweep"
    dpo_run = next((sweep / "1_dpo").glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
    assert b"adapter_model.safetensors" in dpo_run, "the dpo adapter was not logged as a model artifact"

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
