"""Entry point: ``python -m ieta.main method=dpo``. Composes the config, validates it, runs the pipeline."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ieta.config import validate

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the final pass@1 (Hydra sweepers can optimise it)."""
    run_cfg = validate(cfg)  # fails before any model is loaded
    from ieta.pipeline import run

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    metrics = run(run_cfg, run_dir, cfg)
    log.info("run dir: %s", run_dir)
    return metrics[-1].get("pass@1")


if __name__ == "__main__":
    main()
