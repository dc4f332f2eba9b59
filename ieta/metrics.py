"""Metrics computed from real execution records: pass@k, execution rate, error frequencies.

Records with outcome ``sandbox_error`` (an infrastructure failure, not the model's) are left out of every rate and
counted apart as ``sandbox_errors``; a problem whose every sample hit one drops out of the per-problem estimates.

Uncertainty is a percentile bootstrap over problems (not samples): problems are the unit that varies
between benchmarks, and samples of one problem are correlated. The RNG seed is fixed so that the same
executions always give the same intervals.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

#: Outcomes where the program ran through the tests (a failed assertion still counts as executed).
EXECUTED_OUTCOMES = ("passed", "failed")
#: The sandbox failed, not the sample: never the model's verdict.
SANDBOX_ERROR = "sandbox_error"
#: Bootstrap settings, recorded in every metrics record next to the intervals.
CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def model_records(executions: Sequence[dict]) -> list[dict]:
    """The records that judge the model: every one but ``sandbox_error``."""
    return [r for r in executions if r.get("outcome") != SANDBOX_ERROR]


def per_problem_counts(executions: Sequence[dict]) -> dict[str, tuple[int, int]]:
    """``{task_id: (samples, passing samples)}`` over the model's records (``sandbox_error`` left out)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in model_records(executions):
        counts[r["task_id"]][0] += 1
        counts[r["task_id"]][1] += bool(r["passed"])
    return {t: (n, c) for t, (n, c) in counts.items()}


def bootstrap_ci(
    values: np.ndarray,
    weights: np.ndarray | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> list[float]:
    """Percentile CI of the (weighted) mean of one value per problem, resampling problems.

    ``weights`` (samples per problem) make the mean of a per-sample rate equal its pooled value. With
    the same seed every metric of one evaluation is resampled with the same draws.
    """
    weights = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    means = (np.asarray(values, dtype=float)[idx] * weights[idx]).sum(axis=1) / weights[idx].sum(axis=1)
    tail = (1.0 - CI_LEVEL) / 2 * 100
    return [float(x) for x in np.percentile(means, [tail, 100 - tail])]


def compute_metrics(executions: Sequence[dict], ks: Sequence[int]) -> dict:
    """Aggregate metrics over execution records; a k larger than the samples per problem is omitted.

    Adds ``ci`` (bootstrap 95% intervals over problems for each pass@k and the execution rate),
    ``bootstrap`` (its settings), ``notes`` (why a k was omitted) and ``sandbox_errors`` (records the sandbox
    failed on, excluded from everything else).
    """
    if not executions:
        raise ValueError("no execution records to compute metrics from")
    judged = model_records(executions)
    sandbox_errors, executions = len(executions) - len(judged), judged
    if not executions:
        raise ValueError(f"all {sandbox_errors} execution records are sandbox errors: no verdict to compute metrics "
                         "from (see the sandbox's messages in the records)")
    counts = per_problem_counts(executions)
    min_n = min(n for n, _ in counts.values())
    metrics: dict = {}
    for k in ks:
        if k <= min_n:
            metrics[f"pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for n, c in counts.values()]))
    metrics["omitted_ks"] = [k for k in ks if k > min_n]
    metrics["notes"] = [
        f"pass@{k} omitted: it needs at least {k} samples per problem, the smallest problem has {min_n}"
        for k in metrics["omitted_ks"]
    ]
    metrics["execution_rate"] = sum(r["outcome"] in EXECUTED_OUTCOMES for r in executions) / len(executions)
    errors = Counter(r["error_type"] for r in executions if r.get("error_type"))
    metrics["error_frequencies"] = {t: c / len(executions) for t, c in sorted(errors.items())}
    metrics["outcomes"] = {o: c / len(executions) for o, c in sorted(Counter(r["outcome"] for r in executions).items())}
    metrics["num_problems"] = len(counts)
    metrics["num_samples"] = len(executions)
    metrics["sandbox_errors"] = sandbox_errors
    if sandbox_errors:
        metrics["notes"].append(f"{sandbox_errors} sandbox errors (infrastructure failures) excluded from every rate")
    metrics["ci"] = _problem_cis(executions, counts, [k for k in ks if k <= min_n])
    metrics["bootstrap"] = {"level": CI_LEVEL, "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED,
                            "unit": "problem"}
    return metrics


def _problem_cis(executions: Sequence[dict], counts: dict[str, tuple[int, int]], ks: Sequence[int]) -> dict:
    """Per-problem pass@k (unweighted, as in the point estimate) and execution rate (weighted by samples)."""
    tasks = sorted(counts)
    executed = Counter(r["task_id"] for r in executions if r["outcome"] in EXECUTED_OUTCOMES)
    n = np.array([counts[t][0] for t in tasks], dtype=float)
    cis = {f"pass@{k}": bootstrap_ci(np.array([pass_at_k(*counts[t], k) for t in tasks])) for k in ks}
    cis["execution_rate"] = bootstrap_ci(np.array([executed[t] for t in tasks]) / n, n)
    return cis
