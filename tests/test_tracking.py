"""Trackers: the no-op one, and W&B in offline mode writing its run files under the run dir."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ieta.callbacks import ComparisonCallback
from ieta.io import read_json, read_jsonl, write_json
from ieta.tracking import STATE_FILE, Tracker, WandbTracker, start_tracker, sweep_group, wandb_logged_in, wandb_mode

from test_report import make_run  # the run-dir fixture writer; tests/ is on sys.path under pytest

LOGGER = dict(name="wandb", project="ieta-test", entity=None, mode="auto", group=None, tags=["test"],
              log_samples_table=True, max_table_rows=50)


@pytest.fixture(autouse=True)
def _offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No key (so auto means offline), and W&B's own config and caches inside tmp_path."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no stored `wandb login` either
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")


def _run_file(root: Path, *keys: bytes, timeout: float = 20.0, index: int = 0, count: int = 1) -> bytes:
    """The bytes of offline run file ``index`` (of ``count``, by name) once it holds ``keys`` (wandb-core may flush
    just after finish)."""
    files = sorted(root.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == count, files
    files = [files[index]]
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


def test_mode_auto_is_offline_without_a_login_and_leaves_w_and_b_its_own_choice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not wandb_logged_in() and wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a key: W&B's default (online), not an explicit mode
    assert wandb_logged_in() and wandb_mode("auto") is None and wandb_mode("offline") == "offline"
    monkeypatch.delenv("WANDB_API_KEY")
    netrc = tmp_path / "netrc"  # what `wandb login` stores
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_logged_in() and wandb_mode("auto") is None
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a login for another host does not count
    assert not wandb_logged_in() and wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # W&B's own switch wins over logger.mode, whatever it says
    assert wandb_mode("auto") is None and wandb_mode("online") is None
    with pytest.raises(ValueError, match="logger.mode"):
        wandb_mode("sometimes")


def test_wandb_mode_env_is_respected_by_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = start_tracker(OmegaConf.create({"logger": LOGGER | {"mode": "offline"}}), tmp_path)
    try:
        assert tracker.run.disabled
    finally:
        tracker.finish()
    assert not list(tmp_path.glob("wandb/offline-run-*"))


def test_a_resumed_run_continues_its_wandb_run_logs_nothing_twice_and_logs_adapters(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", "dpo", iterations=1)
    adapter = run_dir / "iter_1" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 4}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    write_json(run_dir / "run_info.json", {"method": "dpo"})
    cfg = OmegaConf.create({"logger": LOGGER, "method": {"name": "dpo"}, "seed": 0})
    metrics = read_json(run_dir / "metrics.json")
    executions = lambda it: read_jsonl(run_dir / f"iter_{it}" / "eval_executions.jsonl")  # noqa: E731

    first = start_tracker(cfg, run_dir)  # killed after the initial evaluation and the training of iteration 1
    try:
        first.log_evaluation(metrics[0], executions(0))
        first.log_training(1, read_jsonl(run_dir / "iter_1" / "train_log.jsonl"))
        run_id = first.run.id
    finally:
        first.finish()
    assert read_json(run_dir / STATE_FILE)["id"] == run_id
    write_json(run_dir / "run_info.json", {"method": "dpo"})  # the pipeline rewrites it when the run resumes
    time.sleep(1.1)  # offline run dirs are named by the second they start in

    second = start_tracker(cfg, run_dir)  # the resumed run hands every finished iteration over again
    try:
        assert second.run.id == run_id
        second.log_evaluation(metrics[0], executions(0))
        second.log_training(1, read_jsonl(run_dir / "iter_1" / "train_log.jsonl"))
        second.log_evaluation(metrics[1], executions(1))
    finally:
        second.finish()
    assert read_json(run_dir / "run_info.json")["wandb_run_id"] == run_id
    assert all(run_id in p.name for p in run_dir.glob("wandb/offline-run-*"))
    before = _run_file(run_dir, b"train/loss", b"adapter-" + run_id.encode(), b"iter_1", b"model", count=2)
    after = _run_file(run_dir, b"eval/pass@1", count=2, index=1)
    assert b"train/loss" not in after and b"adapter-" not in after  # nothing logged twice
    assert b"adapter_model.safetensors" in before  # the adapter's files, in the model artifact's manifest


def test_wandb_offline_run_logs_metrics_samples_and_report(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", "dpo", iterations=1)
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
