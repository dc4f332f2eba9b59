"""``report_inputs.json``: the small per-run file that, with ``metrics.json`` and ``run_info.json``, lets a report be
rebuilt without the samples.

Per iteration it holds what the summary reads beyond ``metrics.json``:

- ``per_problem``: ``{kind: {task_id: [samples, passing, executed]}}`` for the main evaluation (``eval``), the
  greedy one (``greedy``; the main one when it is a single T=0 sample) and the state after each turn of the
  multi-turn evaluation (``turn<t>``, t >= 2: a sample passing at a turn passes at every later one; of the main
  samples, or of the greedy ones with ``sampler.revise=greedy``), from ``iter_<k>/eval_*executions.jsonl`` (``sandbox_error`` records left out, as in the metrics). The paired
  statistics need these.
- ``unchanged_revisions``: ``{turn<t>: [revisions, identical to their attempt]}`` from the turn files;
- ``pairs``: ``ieta.pairs.pairs_stats`` of ``iter_<k>/pairs.jsonl`` (share of canonical-solution pairs);
- ``judge`` and ``canaries``: ``iter_<k>/judge_stats.json`` and ``canary_stats.json`` as written by training;
- ``loss`` (``[[step, loss], ...]``) and ``hack_rate`` (``[[step, rate], ...]``) from ``iter_<k>/train_log.jsonl``.

Each entry is recomputed from its source file when that file is there, and kept from the stored
``report_inputs.json`` when it is not, so a run dir stripped to its committed files rebuilds the same report.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ieta.io import atomic_write_text, read_json, read_jsonl
from ieta.metrics import EXECUTED_OUTCOMES, model_records, per_problem_counts
from ieta.pairs import pairs_stats
from ieta.repair import REVISED_PREFIX, carry_forward

INPUTS_FILE = "report_inputs.json"
FORMAT = 1


def problem_counts(executions: list[dict]) -> dict[str, list[int]]:
    """``{task_id: [samples, passing, executed]}`` over the model's records."""
    executed = Counter(r["task_id"] for r in model_records(executions) if r["outcome"] in EXECUTED_OUTCOMES)
    return {t: [n, c, executed[t]] for t, (n, c) in sorted(per_problem_counts(executions).items())}


def _main_is_greedy(info: dict) -> bool:
    sampler = info.get("sampler", {})
    return sampler.get("n") == 1 and sampler.get("temperature") == 0


def _from_train_log(path: Path) -> dict:
    log = read_jsonl(path)
    out = {"loss": [[int(e.get("step", i + 1)), float(e["loss"])] for i, e in enumerate(log) if "loss" in e]}
    hack = [[int(e.get("step", i + 1)), float(e["reward/hack_rate"])] for i, e in enumerate(log)
            if "reward/hack_rate" in e]
    return out | ({"hack_rate": hack} if hack else {})


def revised_kind(info: dict) -> str:
    """Which evaluation the multi-turn turns revise (``sampler.revise``): ``eval`` (main samples) or ``greedy``."""
    return "greedy" if info.get("config", {}).get("sampler", {}).get("revise") == "greedy" else "eval"


def _turns(it_dir: Path, info: dict) -> dict[str, dict[str, list[int]]]:
    """Per-problem counts of each turn's state (``ieta.rollout.revision_turns``), from the turn files on disk: turns
    revise the main samples (``eval_turn<t>_*``) or, with ``sampler.revise=greedy``, the greedy ones."""
    prefix = _turn_prefix(info)
    if not (it_dir / f"{prefix}executions.jsonl").is_file():
        return {}
    state, out, t = read_jsonl(it_dir / f"{prefix}executions.jsonl"), {}, 2
    while (path := it_dir / f"{prefix}turn{t}_executions.jsonl").is_file():
        state = carry_forward(state, read_jsonl(path))
        out[f"turn{t}"] = problem_counts(state)
        t += 1
    return out


def _turn_prefix(info: dict) -> str:
    return REVISED_PREFIX["greedy" if revised_kind(info) == "greedy" else "main"]


def _unchanged_revisions(it_dir: Path, info: dict) -> dict[str, list[int]]:
    """``{turn<t>: [revisions, identical to the attempt they revise]}`` (whitespace aside): a policy that copies its
    attempt gains nothing from feedback, whatever the feedback says."""
    out, t, prefix = {}, 2, _turn_prefix(info)
    while (samples := it_dir / f"{prefix}turn{t}_samples.jsonl").is_file() and \
            (fb := it_dir / f"{prefix}turn{t}_feedback.jsonl").is_file():
        attempts = {(f["task_id"], f["completion_id"]): f["completion"] for f in read_jsonl(fb)}
        revisions = read_jsonl(samples)
        same = sum("".join(r["completion"].split()) == "".join(attempts.get((r["task_id"], r.get("repair_of")),
                                                                              "\0").split()) for r in revisions)
        out[f"turn{t}"] = [len(revisions), same]
        t += 1
    return out


def _iteration(it_dir: Path, info: dict, stored: dict) -> dict:
    out = {k: v for k, v in stored.items() if k != "per_problem"}
    per_problem = dict(stored.get("per_problem", {}))
    sources = {"eval": "eval_executions.jsonl", "greedy": "eval_greedy_executions.jsonl"}
    for kind, name in sources.items():
        if (it_dir / name).is_file():
            per_problem[kind] = problem_counts(read_jsonl(it_dir / name))
    if "greedy" not in per_problem and "eval" in per_problem and _main_is_greedy(info):
        per_problem["greedy"] = per_problem["eval"]
    per_problem |= _turns(it_dir, info)
    if per_problem:
        out["per_problem"] = per_problem
    if unchanged := _unchanged_revisions(it_dir, info):
        out["unchanged_revisions"] = unchanged
    if (it_dir / "pairs.jsonl").is_file():
        out["pairs"] = pairs_stats(read_jsonl(it_dir / "pairs.jsonl"))
    for key, name in (("judge", "judge_stats.json"), ("canaries", "canary_stats.json")):
        if (it_dir / name).is_file():
            out[key] = read_json(it_dir / name)
    if (it_dir / "train_log.jsonl").is_file():
        out |= _from_train_log(it_dir / "train_log.jsonl")
    return out


def collect_inputs(run_dir: Path, records: list[dict], info: dict) -> dict:
    """The run's report inputs: recomputed where the source files exist, else as stored."""
    path = Path(run_dir) / INPUTS_FILE
    stored = read_json(path).get("iterations", {}) if path.is_file() else {}
    iterations = {}
    for rec in records:
        k = str(rec["iteration"])
        entry = _iteration(Path(run_dir) / f"iter_{k}", info, stored.get(k, {}))
        if entry:
            iterations[k] = entry
    return {"format": FORMAT, "iterations": iterations}


def write_inputs(run_dir: Path, inputs: dict) -> None:
    """Write ``report_inputs.json`` (sorted keys, so the same inputs give the same bytes) when it changed."""
    path = Path(run_dir) / INPUTS_FILE
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":")) + "\n"
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
