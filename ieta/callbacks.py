"""Hydra callbacks: the run dir is checked before Hydra writes into it, and the method comparison is built when a
multirun ends, so it works for any sweep."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ieta.io import OutputDirError, check_writable

log = logging.getLogger(__name__)


class RunDirCallback(Callback):
    """Stops the command before anything is written when ``resume=`` names no run dir or the run (sweep) dir is not
    writable. Hydra only warns about exceptions raised in callbacks, so this exits with the error instead."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        resume = OmegaConf.select(config, "resume")
        if resume is not None and not Path(resume).is_dir():
            raise SystemExit(f"invalid config: resume={resume} is not a run dir; to start a new run there, use "
                             f"hydra.run.dir={resume}")
        _exit_unless_writable(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_unless_writable(config.hydra.sweep.dir)


def _exit_unless_writable(directory: str) -> None:
    try:
        check_writable(directory)
    except OutputDirError as e:
        raise SystemExit(str(e)) from None


class ComparisonCallback(Callback):
    """Writes ``<sweep_dir>/summary.md`` and ``figures/`` and, with ``logger=wandb``, a W&B summary run."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from ieta.report import write_sweep_report
        from ieta.tracking import start_sweep_tracker

        sweep_dir = Path(config.hydra.sweep.dir)
        summary = write_sweep_report(sweep_dir)
        logger = OmegaConf.select(config, "logger")
        if logger is not None and logger.get("name") == "wandb":
            overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]))
            tracker = start_sweep_tracker(logger, sweep_dir, {"sweep_dir": str(sweep_dir), "overrides": overrides})
            try:
                tracker.log_report(sweep_dir)
            finally:
                tracker.finish()
        log.info("sweep summary: %s", summary.resolve())
