"""Paired comparisons built from the runs' per-problem results (``report_inputs.json``, see ``ieta.report.inputs``).

A method is compared with a reference method (``baseline`` by default) at each job's final evaluation, pairing
jobs by seed and values by problem (``ieta.stats``); a run's final evaluation is compared with its initial one.
The metrics compared are pass@k of the main evaluation (per-problem unbiased estimates), greedy pass@1 (the
greedy evaluation's verdicts, or the main one when it is one sample at T=0), pass@1 after the last turn of the
multi-turn evaluation, and the execution rate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ieta.metrics import pass_at_k
from ieta.report.inputs import revised_kind
from ieta.report.loading import RunData
from ieta.stats import PairedDifference, UnpairedError, binomial_noise, paired_difference, problem_bootstrap_ci

GREEDY = "greedy_pass@1"
#: run_info keys that must agree for two jobs to be compared on the same problems
SAME_PROBLEMS = ("dataset", "split", "num_eval_problems")
#: sampler settings that change what the metric measures; a difference is flagged, not refused
SAME_SAMPLER = ("n", "temperature", "max_new_tokens")


def problem_values(run: RunData, iteration: int, metric: str) -> tuple[dict[str, float], dict[str, float]] | None:
    """Per-problem values of ``metric`` and their sampling variance, or ``None`` when not recorded / not estimable."""
    if metric == GREEDY:
        counts, k = run.per_problem(iteration, "greedy"), 1
    elif t := re.fullmatch(r"pass@1_turn(\d+)", metric):
        counts, k = run.per_problem(iteration, revised_kind(run.info) if t[1] == "1" else f"turn{t[1]}"), 1
    elif m := re.fullmatch(r"pass@(\d+)", metric):
        counts, k = run.per_problem(iteration, "eval"), int(m[1])
    elif metric == "execution_rate":
        counts = run.per_problem(iteration, "eval")
        return None if counts is None else ({t: e / n for t, (n, _, e) in counts.items()}, {})
    else:
        return None
    if not counts or any(n < k for n, _, _ in counts.values()):
        return None
    values = {t: pass_at_k(n, c, k) for t, (n, c, _) in counts.items()}
    noise = {t: binomial_noise(n, c) for t, (n, c, _) in counts.items()} if k == 1 else {}
    return values, noise


def compared_metrics(runs: list[RunData]) -> list[str]:
    """pass@k for the ks every job's final evaluation has, greedy pass@1 where every job has it, execution rate."""
    common = set.intersection(*({m for m in r.final if re.fullmatch(r"pass@\d+", m)} for r in runs))
    out = sorted(common, key=lambda m: int(m.split("@")[1]))
    if all(r.per_problem(r.final["iteration"], "greedy") for r in runs):
        out.append(GREEDY)
    turns = set.intersection(*({int(m[1]) for k in r.final if (m := re.fullmatch(r"pass@1_turn(\d+)", k))}
                               for r in runs))
    if turns and max(turns) >= 2 and all(r.per_problem(r.final["iteration"], f"turn{max(turns)}") for r in runs):
        out.append(f"pass@1_turn{max(turns)}")  # the last turn: what the multi-turn evaluation adds
    return [*out, "execution_rate"]


@dataclass
class Comparison:
    """``label`` against ``reference``: pooled over seeds per metric, and per seed when there are several."""

    label: str
    reference: str
    pooled: dict[str, PairedDifference] = field(default_factory=dict)
    per_seed: dict[str, dict[object, PairedDifference]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _by_seed(runs: list[RunData], label: str, notes: list[str]) -> dict[object, RunData]:
    out: dict[object, RunData] = {}
    for r in runs:
        if r.seed in out:
            notes.append(f"{label} has several jobs with seed {r.seed}; only the first is paired")
            continue
        out[r.seed] = r
    return out


def _setting_notes(ref: list[RunData], runs: list[RunData], reference: str, label: str) -> list[str]:
    notes = []
    for key in SAME_PROBLEMS:
        values = {str(r.info.get(key)) for r in ref + runs}
        if len(values) > 1:
            notes.append(f"{label} and {reference} differ in {key} ({', '.join(sorted(values))}): only the problems "
                         "both evaluated are paired")
    for key in SAME_SAMPLER:
        values = {str(r.info.get("sampler", {}).get(key)) for r in ref + runs}
        if len(values) > 1:
            notes.append(f"{label} and {reference} were evaluated with different sampler.{key} "
                         f"({', '.join(sorted(values))})")
    return notes


Side = dict  # seed -> (values, noise) of one metric


def _side(jobs: dict[object, RunData], metric: str, iteration) -> Side:
    """Per-seed per-problem values at ``iteration(run)``; jobs without them are left out."""
    got = {seed: problem_values(r, iteration(r), metric) for seed, r in jobs.items()}
    return {seed: g for seed, g in got.items() if g is not None}


def _difference(metric: str, a: Side, b: Side) -> PairedDifference:
    noise = None
    if all(a[s][1] for s in a) and all(b[s][1] for s in b):
        noise = {s: {t: a[s][1][t] + b[s][1][t] for t in a[s][1] if t in b[s][1]} for s in a if s in b}
    return paired_difference(metric, {s: v for s, (v, _) in a.items()}, {s: v for s, (v, _) in b.items()},
                             noise=noise)


def _final(r: RunData) -> int:
    return r.final["iteration"]


def compare(label: str, runs: list[RunData], reference: str, ref_runs: list[RunData]) -> Comparison:
    """``label``'s jobs against ``reference``'s at their final evaluations, on the same seeds and problems."""
    result = Comparison(label, reference)
    result.notes += _setting_notes(ref_runs, runs, reference, label)
    a_jobs, b_jobs = _by_seed(ref_runs, reference, result.notes), _by_seed(runs, label, result.notes)
    for metric in compared_metrics([*a_jobs.values(), *b_jobs.values()]):
        a, b = _side(a_jobs, metric, _final), _side(b_jobs, metric, _final)
        if not a or not b:
            continue
        try:
            pooled = _difference(metric, a, b)
        except UnpairedError as e:
            result.notes.append(f"{metric}: {label} vs {reference} not compared: {e}")
            continue
        result.pooled[metric] = pooled
        result.notes += [n for n in pooled.notes if n not in result.notes]
        if len(pooled.seeds) > 1:
            result.per_seed[metric] = {s: _difference(metric, {s: a[s]}, {s: b[s]}) for s in pooled.seeds}
    return result


def change(runs: list[RunData], before=None, after=None) -> dict[str, PairedDifference]:
    """Each job's evaluation after iteration ``after`` (default: its final) against ``before`` (default: its
    initial), paired by seed and problem, per compared metric."""
    notes: list[str] = []
    jobs = _by_seed([r for r in runs if len(r.records) > 1], runs[0].method, notes)
    if not jobs:  # only initial evaluations: nothing changed
        return {}
    first = (lambda r: r.initial["iteration"]) if before is None else (lambda r: before)
    last = _final if after is None else (lambda r: after)
    out = {}
    for metric in compared_metrics(list(jobs.values())):
        a, b = _side(jobs, metric, first), _side(jobs, metric, last)
        if a and b:
            try:
                out[metric] = _difference(metric, a, b)
            except UnpairedError:
                continue
    return out


def pooled_rate(runs: list[RunData], metric: str) -> tuple[float, float, float] | None:
    """Mean of ``metric`` over a group's jobs at their final evaluations, with the 95% CI that resamples problems
    (all seeds of a problem together); ``None`` without per-problem results for every job."""
    got = [problem_values(r, r.final["iteration"], metric) for r in runs]
    if any(g is None for g in got):
        return None
    tasks = sorted(set.intersection(*(set(v) for v, _ in got)))
    if not tasks:
        return None
    matrix = np.array([[v[t] for t in tasks] for v, _ in got])
    lo, hi = problem_bootstrap_ci(matrix)
    return float(matrix.mean()), lo, hi
