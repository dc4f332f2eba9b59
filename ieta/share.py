"""Stages shared by the jobs of a sweep: what the untrained policy computes is the same for every method of a seed.

The initial evaluation (``iter_0/eval_*.jsonl``) and the first iteration's training samples and their executions
(``iter_1/samples.jsonl``, ``executions.jsonl``) depend on the model, the data, the sampler, the sandbox and the
seed, never on the method. With ``share_dir`` set (``./multirun.sh`` sets ``<sweep dir>/shared``), the first job to
finish them stores copies under ``<share_dir>/<fingerprint>/iter_<k>/``. A later job with the same fingerprint copies
them into its own run dir before the stage, whose resume-through-files logic then reuses them, and records where they
came from in ``iter_<k>/shared.json``. Every job's run dir still holds all its files, and every method of a seed is
compared on the very same initial samples.

The fingerprint hashes every result-changing setting except the method's (``method.*``), the iteration counts
(``iteration.*``) and the training launcher (``accelerate``).

Within one run, ``carry_over`` does the same across iterations: when an iteration left the policy unchanged
(``baseline``, or nothing to train on), its greedy evaluation is the previous iteration's, copied and recorded in
``iter_<k>/carried.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ieta.io import read_json, write_json

#: per iteration, the files the untrained policy makes (glob patterns)
SHARED = {0: ("eval_*.jsonl",), 1: ("samples.jsonl", "executions.jsonl")}
#: config keys (flattened prefixes) that do not change those files
NOT_SHARED_KEYS = ("method.", "iteration.", "accelerate", "share_dir")
RECORD = "shared.json"
#: where an iteration records the files carried over from the one before it (``carry_over``)
CARRIED = "carried.json"


def fingerprint(flat_config: dict) -> str:
    """A short hash of the settings the shared stages depend on (``flat_config``: ``{"sampler.n": 10, ...}``)."""
    kept = {k: v for k, v in sorted(flat_config.items()) if not k.startswith(NOT_SHARED_KEYS)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def matching(directory: Path, patterns) -> list[Path]:
    """The files of ``directory`` that match any of the glob ``patterns``, sorted."""
    return sorted({p for pattern in patterns for p in directory.glob(pattern)})


def _shared_files(it_dir: Path, iteration: int) -> list[Path]:
    return matching(it_dir, SHARED.get(iteration, ()))


def _copy_missing(source: Path, it_dir: Path, patterns) -> list[str]:
    """Copy ``source``'s files matching ``patterns`` into ``it_dir`` unless it has one of them already (its own
    stage files are kept); the names copied."""
    files = matching(source, patterns)
    if not files or matching(it_dir, patterns):
        return []
    it_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, it_dir / path.name)
    return [p.name for p in files]


def carry_over(previous: Path, it_dir: Path, patterns, why: str) -> list[str]:
    """Copy ``previous``'s files matching ``patterns`` into ``it_dir`` when it has none of them yet, recording where
    they came from and ``why`` in ``it_dir/carried.json``; the names copied (none: nothing to carry or already made).

    For stages an unchanged policy would redo identically (``ieta.evaluate.seed_free_files``): the pipeline calls it
    when an iteration left the policy as it was."""
    names = _copy_missing(previous, it_dir, patterns)
    if names:
        write_json(it_dir / CARRIED, {"from": previous.name, "files": names, "why": why})
    return names


class Share:
    """The sweep's store for one fingerprint; a no-op when ``share_dir`` is null."""

    def __init__(self, share_dir: str | None, flat_config: dict, run_dir: Path) -> None:
        self.fingerprint = fingerprint(flat_config)
        self.root = Path(share_dir) / self.fingerprint if share_dir else None
        self.run_dir = run_dir

    def fetch(self, iteration: int, it_dir: Path) -> bool:
        """Copy the stored files of ``iteration`` into ``it_dir`` when it has none of them yet; True if copied."""
        if self.root is None or iteration not in SHARED or not (self.root / f"iter_{iteration}").is_dir():
            return False
        stored = self.root / f"iter_{iteration}"
        names = _copy_missing(stored, it_dir, SHARED[iteration])  # none when this job made (some of) them itself
        if not names:
            return False
        source = read_json(stored / "source.json")
        write_json(it_dir / RECORD, {"fingerprint": self.fingerprint, "from": source["run_dir"], "files": names})
        return True

    def publish(self, iteration: int, it_dir: Path) -> None:
        """Store this job's files of ``iteration`` unless the store has them (all at once: a rename)."""
        if self.root is None or iteration not in SHARED or (self.root / f"iter_{iteration}").exists():
            return
        if (it_dir / RECORD).exists():  # copied from the store: nothing new
            return
        files = _shared_files(it_dir, iteration)
        if not files:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".iter_{iteration}."))
        for path in files:
            shutil.copyfile(path, tmp / path.name)
        write_json(tmp / "source.json", {"run_dir": str(self.run_dir), "fingerprint": self.fingerprint})
        try:
            os.rename(tmp, self.root / f"iter_{iteration}")
        except OSError:  # another job stored them first
            shutil.rmtree(tmp, ignore_errors=True)
