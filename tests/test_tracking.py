"""Trackers: the no-op one, and W&B in offline mode writing its run files under the run dir."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ieta.callbacks import ComparisonCallback
from ieta.tracking import Tracker, WandbTracker, start_tracker, sweep_group, wandb_mode

from test_report import make_run  # the run-dir fixture writer; tests/ is on sys.path under pytest

LOGGER = dict(name="wandb", project="ieta-test", entity=None, mode="auto", group=None, tags=["test"],
              log_samples_table=True, max_table_rows=50)


@pytest.fixture(autouse=True)
def _offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No key (so auto means offline), and W&B's own config and caches inside tmp_path."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")


def _run_file(root: Path, *keys: bytes, timeout: float = 20.0) -> bytes:
    """The bytes of the one offline run file once it holds ``keys`` (wandb-core may flush just after finish)."""
    files = list(root.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    deadline = time.monotonic() + timeout
    while not all(k in (data := files[0].read_bytes()) for k in keys) and time.monotonic() < deadline:
        time.sleep(0.2)
    missing = [k for k in keys if k not in data]
    assert not missing, f"{files[0]} lacks {missing}"
    return data


def test_none_logger_is_a_noop(tmp_path: Path) -> None:
    tracker = start_tracker(OmegaConf.create({"logger": {"name": "none"}}), tmp_path)
    assert type(tracker) is Tracker
    tracker.log_evaluation({"iteration": 0}, [])
    tracker.finish()
    assert not (tmp_path / "wandb").exists()


def test_mode_auto_follows_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online" and wandb_mode("offline") == "offline"
    with pytest.raises(ValueError, match="logger.mode"):
        wandb_mode("sometimes")


def test_wandb_offline_run_logs_metrics_samples_and_report(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", "dpo", iterations=1)
    from ieta.io import read_json, read_jsonl
    from ieta.report import write_run_report

    cfg = OmegaConf.create({"logger": LOGGER, "method": {"name": "dpo"}, "seed": 3})
    tracker = start_tracker(cfg, run_dir)
    assert isinstance(tracker, WandbTracker)
    try:
        for record in read_json(run_dir / "metrics.json"):
            it = record["iteration"]
            if it:
                tracker.log_training(it, read_jsonl(run_dir / f"iter_{it}" / "train_log.jsonl"))
            tracker.log_evaluation(record, read_jsonl(run_dir / f"iter_{it}" / "eval_executions.jsonl"))
        write_run_report(run_dir)
        tracker.log_report(run_dir)
    finally:
        tracker.finish()
    tracker.finish()  # idempotent
    _run_file(run_dir, b"eval/pass@1", b"eval/execution_rate", b"errors/TypeError", b"train/loss", b"dpo-seed3")
    files = next(run_dir.glob("wandb/offline-run-*/files"))
    tables = list(files.glob("media/table/eval/samples_*.table.json"))
    assert len(tables) == 2 and "HumanEval/0" in tables[0].read_text() and "TypeError" in tables[-1].read_text()
    assert list(files.glob("media/images/report/pass_rates_*.png"))


def test_comparison_callback_writes_sweep_report_and_summary_run(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun" / "2025-01-01" / "12-00-00"
    for job, method in enumerate(["baseline", "dpo"]):
        make_run(sweep / f"{job}_{method}", method, iterations=1)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}, "overrides": {"task": ["method=baseline,dpo"]}},
                               "logger": LOGGER})
    ComparisonCallback().on_multirun_end(config)
    assert "## Method Comparison" in (sweep / "summary.md").read_text()
    assert (sweep / "figures" / "comparison_dashboard.png").is_file()
    _run_file(sweep, b"comparison", sweep_group(sweep).encode(), b"report/method_comparison")
