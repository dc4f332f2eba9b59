"""Entry point: ``python -m ieta.main method=dpo``. Composes the config, validates it, runs the pipeline."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

#: seconds between progress-bar redraws when stderr is not a terminal (a log file, CI): tqdm, and so TRL's and
#: transformers' bars too, reads TQDM_* defaults when it is first imported, which happens after this line
LOG_BAR_INTERVAL_S = "5"
if not sys.stderr.isatty():
    os.environ.setdefault("TQDM_MININTERVAL", LOG_BAR_INTERVAL_S)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ieta.config import validate  # noqa: E402  (also registers the resolvers conf/config.yaml uses)

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
