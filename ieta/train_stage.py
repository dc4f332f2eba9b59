"""The training stage as its own program, for ``accelerate launch`` (DDP, DeepSpeed ZeRO-2/3 on several GPUs).

    accelerate launch --config_file conf/accelerate/ddp.yaml -m ieta.train_stage RUN_DIR --iteration K

From the run dir it rebuilds what the in-process pipeline holds when iteration K trains: the run's composed config
(``.hydra/config.yaml``), the base policy with the adapters of iterations 1..K-1 merged in order, and the training
data (the method's rows file ``iter_K/<data_file>`` for offline methods, the training problems for online ones).
Every process then runs the same ``ieta.methods.train_iteration`` as the in-process pipeline; only the main one
writes ``iter_K/adapter`` and ``train_log.jsonl``.
With ``accelerate=ddp|zero2|zero3`` the pipeline launches this itself (``launch``) and loads the adapter it wrote.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf

from ieta.config import RunConfig, validate
from ieta.data import Problem, run_splits
from ieta.io import read_jsonl
from ieta.methods import get_method, train_iteration
from ieta.policy import load_policy, merge_adapters
from ieta.seeding import stage_seed

log = logging.getLogger(__name__)


def launch(cfg: RunConfig, run_dir: Path, k: int) -> None:
    """Train iteration ``k`` in ``accelerate launch`` processes configured by ``cfg.accelerate``."""
    if not (run_dir / ".hydra" / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir}/.hydra/config.yaml: accelerate=... needs a run started by ieta.main")
    config = run_dir / "accelerate.yaml"
    config.write_text(yaml.safe_dump(cfg.accelerate, sort_keys=False))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "-m", "ieta.train_stage", str(run_dir), "--iteration", str(k)]
    log.info("iteration %d: training in %d processes: %s", k, cfg.accelerate["num_processes"], " ".join(cmd))
    subprocess.run(cmd, check=True)


def stage_policy(cfg: RunConfig, run_dir: Path, k: int):
    """The policy iteration ``k`` starts from, on this process's device."""
    if torch.cuda.is_available():  # one GPU per process
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    model, tokenizer, _, _ = load_policy(cfg)
    return merge_adapters(model, run_dir, k), tokenizer


def stage_data(cfg: RunConfig, run_dir: Path, k: int) -> tuple[list[Problem], list[dict]]:
    """Iteration ``k``'s training input: the training problems, and the rows an offline method trains on."""
    method = get_method(cfg.method.name)
    rows = read_jsonl(run_dir / f"iter_{k}" / method.data_file) if method.data_file else []
    return run_splits(cfg.dataset)[0], rows


def train_stage(run_dir: Path, k: int) -> None:
    """Train iteration ``k`` of the run in ``run_dir`` (in each process of an ``accelerate launch``)."""
    from accelerate import PartialState

    cfg = validate(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    if not get_method(cfg.method.name).trains:
        raise SystemExit(f"method {cfg.method.name} does not train")
    model, tokenizer = stage_policy(cfg, run_dir, k)
    problems, rows = stage_data(cfg, run_dir, k)
    train_iteration(model, tokenizer, problems, rows, cfg, k, run_dir / f"iter_{k}", seed=stage_seed(cfg.seed, k, 2))
    state = PartialState()
    if state.is_main_process:
        log.info("iteration %d: trained in %d processes (%s); adapter written to %s", k, state.num_processes,
                 state.distributed_type.value, run_dir / f"iter_{k}" / "adapter")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ieta.train_stage", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run dir of python -m ieta.main")
    parser.add_argument("--iteration", type=int, required=True, help="the iteration to train (>= 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    train_stage(args.run_dir, args.iteration)


if __name__ == "__main__":
    main()
