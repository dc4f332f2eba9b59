"""Hydra callbacks: the method comparison is built when a multirun ends, so it works for any sweep."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


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
