"""Experiment trackers behind one small interface: a no-op one, and W&B (offline when no W&B login is found).

The pipeline writes every artefact to the run dir first and then hands it to the tracker, so a run is
complete without a tracker. Callers close the tracker in a ``finally``::

    tracker = start_tracker(cfg, run_dir)
    try:
        tracker.log_evaluation(record, executions)
        tracker.log_training(iteration, log_history)
        tracker.log_report(run_dir)
    finally:
        tracker.finish()

A resumed run hands the tracker every finished iteration again; the W&B tracker continues the run's own W&B run
(its id is kept in ``<run_dir>/wandb_run.json`` and mirrored into ``run_info.json``) and skips what it logged before.
"""

from __future__ import annotations

import configparser
import html
import json
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

from ieta.config import WANDB_MODES
from ieta.io import read_json, write_json

#: Execution-record fields shown in the W&B samples table (``trace`` is added when records carry one).
SAMPLE_COLUMNS = ("task_id", "completion_id", "outcome", "passed", "error_type", "message", "line", "completion")
#: The tracker's own file in a run (or sweep) dir: the W&B run id, so that a resumed run continues its W&B run, and
#: what was logged already, so that it is not logged twice.
STATE_FILE = "wandb_run.json"


class Tracker:
    """The no-op tracker (``logger=none``); the W&B tracker overrides each method."""

    def log_evaluation(self, record: dict, executions: list[dict]) -> None:
        """Log one ``metrics.json`` record (its iteration is the step) and its execution records."""

    def log_training(self, iteration: int, log_history: list[dict]) -> None:
        """Log TRL's ``log_history`` of one training iteration (and its adapter, ``iter_<k>/adapter``)."""

    def log_report(self, report_dir: Path) -> None:
        """Log ``summary.md``, ``figures/*.png`` (and ``comparison.csv``) of a run or sweep dir."""

    def finish(self, exit_code: int = 0) -> None:
        """Close the tracker; safe to call more than once."""


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class WandbTracker(Tracker):
    """One W&B run; eval metrics are plotted against ``iteration``, training against a global step. Its state
    (run id, iterations logged, global-step offset) lives in ``<state_dir>/wandb_run.json``, and each iteration's
    adapter ``<state_dir>/iter_<k>/adapter`` is logged as a version of the run's model artifact."""

    def __init__(self, run: Any, log_samples_table: bool = True, max_table_rows: int | None = None,
                 state_dir: Path | None = None) -> None:
        self.run = run
        self.log_samples_table = log_samples_table
        self.max_table_rows = max_table_rows
        self.state_dir = None if state_dir is None else Path(state_dir)
        self._state = _read_state(self.state_dir) if self.state_dir is not None else {}
        self._train_offset = int(self._state.get("train_offset", 0))
        self._error_types: set[str] = set(self._state.get("error_types", []))
        run.define_metric("iteration")
        for prefix in ("eval/*", "errors/*", "outcomes/*"):
            run.define_metric(prefix, step_metric="iteration")
        run.define_metric("train/global_step")
        run.define_metric("train/*", step_metric="train/global_step")
        self._save_state()

    def _logged(self, kind: str, iteration: int) -> bool:
        return iteration in self._state.get(kind, [])

    def _mark(self, kind: str, iteration: int) -> None:
        self._state[kind] = sorted({*self._state.get(kind, []), iteration})
        self._save_state()

    def _save_state(self) -> None:
        if self.state_dir is None:
            return
        self._state |= {"id": self.run.id, "train_offset": self._train_offset,
                        "error_types": sorted(self._error_types)}
        write_json(self.state_dir / STATE_FILE, self._state)
        _note_run_id(self.state_dir, self.run.id)

    def log_evaluation(self, record: dict, executions: list[dict]) -> None:
        if self._logged("evaluation", record["iteration"]):
            return
        data: dict[str, Any] = {"iteration": record["iteration"]}
        data |= {f"eval/{k}": v for k, v in record.items() if _numeric(v) and k != "iteration"}
        for name, (lo, hi) in record.get("ci", {}).items():
            data |= {f"eval/{name}_ci_low": lo, f"eval/{name}_ci_high": hi}
        errors = record.get("error_frequencies", {})
        self._error_types |= set(errors)
        data |= {f"errors/{t}": errors.get(t, 0.0) for t in sorted(self._error_types)}
        data |= {f"outcomes/{o}": v for o, v in record.get("outcomes", {}).items()}
        if self.log_samples_table and executions:
            data["eval/samples"] = self._samples_table(record["iteration"], executions)
        self.run.log(data)
        self._mark("evaluation", record["iteration"])

    def _samples_table(self, iteration: int, executions: list[dict]) -> Any:
        import wandb

        rows = executions[: self.max_table_rows] if self.max_table_rows else executions
        columns = [*SAMPLE_COLUMNS, *(["trace"] if any("trace" in r for r in rows) else [])]
        cell = lambda v: v if v is None or isinstance(v, (str, int, float, bool)) else json.dumps(v)  # noqa: E731
        data = [[iteration, *(cell(r.get(c)) for c in columns)] for r in rows]
        return wandb.Table(columns=["iteration", *columns], data=data)

    def log_training(self, iteration: int, log_history: list[dict]) -> None:
        if self._logged("training", iteration):
            return
        steps = [int(e.get("step", i + 1)) for i, e in enumerate(log_history)]
        for entry, step in zip(log_history, steps):
            data = {f"train/{k}": v for k, v in entry.items() if _numeric(v) and k != "step"}
            self.run.log(data | {"train/global_step": self._train_offset + step, "train/iteration": iteration})
        self._train_offset += max(steps, default=0)
        self._log_adapter(iteration)
        self._mark("training", iteration)

    def _log_adapter(self, iteration: int) -> None:
        """``iter_<k>/adapter`` as version ``iter_<k>`` of the run's model artifact ``adapter-<run id>``."""
        import wandb

        adapter = None if self.state_dir is None else self.state_dir / f"iter_{iteration}" / "adapter"
        if adapter is None or not adapter.is_dir():
            return
        artifact = wandb.Artifact(
            f"adapter-{self.run.id}", type="model", metadata={"iteration": iteration, "format": "peft-lora"},
            description=f"LoRA adapter of iteration {iteration}: a delta on the base model with the adapters of "
                        f"the earlier iterations merged in order")
        artifact.add_dir(str(adapter))
        self.run.log_artifact(artifact, aliases=[f"iter_{iteration}"])

    def log_report(self, report_dir: Path) -> None:
        import pandas as pd
        import wandb

        report_dir = Path(report_dir)
        figures = sorted((report_dir / "figures").glob("*.png"))
        data: dict[str, Any] = {f"report/{p.stem}": wandb.Image(str(p), caption=p.stem) for p in figures}
        summary = report_dir / "summary.md"
        if summary.is_file():
            data["report/summary"] = wandb.Html(f"<pre>{html.escape(summary.read_text())}</pre>")
        if (report_dir / "comparison.csv").is_file():
            data["report/comparison"] = wandb.Table(dataframe=pd.read_csv(report_dir / "comparison.csv"))
        if data:
            self.run.log(data)
        artifact = wandb.Artifact(f"report-{self.run.id}", type="report")
        for path in [summary, report_dir / "comparison.csv", *figures]:
            if path.is_file():
                artifact.add_file(str(path), name=str(path.relative_to(report_dir)))
        if artifact.manifest.entries:
            self.run.log_artifact(artifact)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def wandb_mode(mode: str) -> str | None:
    """The ``mode`` for ``wandb.init``; None leaves it to W&B. ``WANDB_MODE``, when set, always decides (W&B reads
    it itself). Otherwise ``auto`` is W&B's default (online) when a W&B login is found (:func:`wandb_logged_in`),
    and offline (no network needed) when none is; ``offline`` and ``online`` are passed on."""
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.mode must be one of {list(WANDB_MODES)}, got {mode!r}")
    if os.environ.get("WANDB_MODE"):
        return None
    if mode == "auto":
        return None if wandb_logged_in() else "offline"
    return mode


def wandb_logged_in() -> bool:
    """Whether W&B will find credentials: ``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``, or the API key that
    ``wandb login`` stores in the netrc file (``$NETRC``, else ``~/.netrc``) for the W&B host (``WANDB_BASE_URL``,
    else the ``base_url`` ``wandb login --host`` saved, else api.wandb.ai). No import of wandb, no network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or _settings_base_url() or "https://api.wandb.ai").netloc
    path = os.environ.get("NETRC") or next(
        (p for p in (Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()) if p.exists()), None)
    if not host or path is None:
        return False
    try:
        creds = netrc.netrc(Path(path).expanduser()).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(creds and creds[2])


def _settings_base_url() -> str | None:
    """The ``base_url`` in W&B's global settings file (``$WANDB_CONFIG_DIR/settings``, written by ``wandb login
    --host``)."""
    parser = configparser.ConfigParser()
    try:
        parser.read(Path(os.environ.get("WANDB_CONFIG_DIR") or "~/.config/wandb").expanduser() / "settings")
    except configparser.Error:
        return None
    return parser.get("default", "base_url", fallback=None)


def _read_state(directory: Path) -> dict:
    path = directory / STATE_FILE
    return read_json(path) if path.is_file() else {}


def _note_run_id(run_dir: Path, run_id: str) -> None:
    """Mirror the W&B run id into ``run_info.json`` (``wandb_run_id``) where the pipeline wrote one; the pipeline
    rewrites that file when a run resumes, and ``wandb_run.json`` keeps the id for the next start."""
    info = run_dir / "run_info.json"
    if not info.is_file():
        return
    data = read_json(info)
    if data.get("wandb_run_id") != run_id:
        write_json(info, data | {"wandb_run_id": run_id})


def sweep_group(sweep_dir: str | Path) -> str:
    """W&B group of a sweep: its dir's last two parts (``multirun/2025-01-01/12-00-00`` -> ``2025-01-01_12-00-00``)."""
    path = Path(sweep_dir).resolve()
    return f"{path.parent.name}_{path.name}"


def _hydra_sweep_group() -> str | None:
    """The group of the current Hydra multirun job, None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return sweep_group(HydraConfig.get().sweep.dir)


def _start_wandb(
    logger: DictConfig, run_dir: Path, name: str, group: str | None, config: dict, job_type: str
) -> Tracker:
    import wandb

    run_dir.mkdir(parents=True, exist_ok=True)
    previous = _read_state(run_dir).get("id")  # a resumed run (or sweep) continues its own W&B run
    run = wandb.init(
        project=logger.get("project", "ieta"), entity=logger.get("entity"), dir=str(run_dir), name=name, group=group,
        job_type=job_type, tags=list(logger.get("tags") or []), config=config, id=previous,
        resume="allow" if previous else None, mode=wandb_mode(logger.get("mode", "auto")), reinit="create_new",
        settings=wandb.Settings(console="off"),
    )
    return WandbTracker(run, bool(logger.get("log_samples_table", True)), logger.get("max_table_rows"), run_dir)


def start_tracker(cfg: DictConfig, run_dir: Path) -> Tracker:
    """The tracker chosen by ``cfg.logger.name`` (``none`` or ``wandb``) for one run."""
    logger = OmegaConf.select(cfg, "logger") or OmegaConf.create({"name": "none"})
    if logger.name == "none":
        return Tracker()
    if logger.name != "wandb":
        raise ValueError(f"logger.name must be 'none' or 'wandb', got {logger.name!r}")
    method, seed = OmegaConf.select(cfg, "method.name", default="run"), OmegaConf.select(cfg, "seed")
    name = method if seed is None else f"{method}-seed{seed}"
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return _start_wandb(logger, Path(run_dir), name, logger.get("group") or _hydra_sweep_group(), config, "run")


def start_sweep_tracker(logger: DictConfig, sweep_dir: Path, config: dict) -> Tracker:
    """The summary run of a multirun, in the same group as its jobs."""
    if logger.name != "wandb":
        return Tracker()
    group = logger.get("group") or sweep_group(sweep_dir)
    return _start_wandb(logger, Path(sweep_dir), "comparison", group, config, "comparison")
