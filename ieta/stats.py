"""Paired statistics for comparing two evaluations of the same problems under the same seeds.

Every comparison pairs per-problem values: ``a`` and ``b`` map ``seed -> {task_id: value}`` (a value is a
problem's unbiased pass@k estimate, or 0/1 for a greedy verdict). Only seeds present in both and problems present
in every paired job are compared; what could not be paired is listed in ``notes``, and a comparison with nothing
in common is refused (``UnpairedError``).

- The difference is ``b - a``: the mean over (seed, problem) pairs of the per-problem differences.
- Its CI is a percentile bootstrap that resamples problems (all seeds of a problem together): problems are the
  unit that varies between benchmarks, and one problem's seeds are correlated.
- The p-value is an exact McNemar test when there is one seed and the values are binary (greedy), else a paired
  sign-flip permutation test on the per-problem differences averaged over seeds (exact up to 2^16 problems' sign
  patterns, else Monte Carlo with a fixed seed).
- The minimum detectable difference (MDE) is the smallest true difference the comparison would find with 80%
  power at alpha 0.05: ``(z_{0.975} + z_{0.8}) * sd(d) / sqrt(N)`` over the N per-problem differences ``d``. When
  every difference is 0 it falls back to the sampling noise of the per-problem estimates (``noise_var``), and is
  ``None`` when that is 0 too (greedy evaluations that agree on every problem).

Only numpy and the standard library: the RNG seeds are fixed, so the same inputs always give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

ALPHA = 0.05
POWER = 0.80
CI_LEVEL = 0.95
RESAMPLES = 2000
PERMUTATIONS = 10000
RNG_SEED = 0
#: up to this many problems the sign-flip test enumerates every sign pattern
EXACT_FLIP_PROBLEMS = 16

Values = Mapping[str, float]  # task_id -> per-problem value


class UnpairedError(ValueError):
    """Two evaluations share no seed or no problem, so no paired comparison exists."""


@dataclass(frozen=True)
class PairedDifference:
    """``b - a`` on one metric, paired by (seed, problem)."""

    metric: str
    mean_a: float
    mean_b: float
    diff: float
    lo: float
    hi: float
    p_value: float
    test: str
    problems: int
    seeds: list
    mde: float | None
    #: exact McNemar only: problems where b passed and a failed, and the reverse
    discordant: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ci_excludes_zero(self) -> bool:
        return not (self.lo <= 0.0 <= self.hi)

    @property
    def differs(self) -> bool:
        """A difference is claimed only when the paired CI excludes 0 and the test rejects at ``ALPHA``: inside the
        CI it is no difference; where the two disagree (small samples, where a percentile bootstrap is narrow) it
        is inconclusive, and not claimed either."""
        return self.ci_excludes_zero and self.p_value < ALPHA

    def interval(self) -> str:
        return f"{self.diff:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]"

    def to_dict(self) -> dict:
        return asdict(self) | {"differs": self.differs, "ci_excludes_zero": self.ci_excludes_zero}


def mcnemar_exact(b_only: int, a_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (binomial(n, 1/2) on the smaller one)."""
    n = b_only + a_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b_only, a_only) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def sign_flip_p(d: np.ndarray, permutations: int = PERMUTATIONS, seed: int = RNG_SEED) -> float:
    """Two-sided paired permutation p-value of mean(d) = 0: each problem's difference keeps or flips its sign."""
    d = np.asarray(d, dtype=float)
    observed = abs(d.mean())
    if observed == 0.0:
        return 1.0
    if len(d) <= EXACT_FLIP_PROBLEMS:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
        return float(np.mean(np.abs(signs @ d) / len(d) >= observed - 1e-12))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(permutations, len(d)))
    hits = int(np.sum(np.abs(signs @ d) / len(d) >= observed - 1e-12))
    return (1 + hits) / (1 + permutations)


def problem_bootstrap_ci(diffs: np.ndarray, resamples: int = RESAMPLES, seed: int = RNG_SEED) -> tuple[float, float]:
    """Percentile CI of the mean of ``diffs`` (seeds x problems; differences or rates), resampling problems with
    all their seeds."""
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    idx = np.random.default_rng(seed).integers(0, diffs.shape[1], size=(resamples, diffs.shape[1]))
    means = diffs[:, idx].mean(axis=(0, 2))
    tail = (1.0 - CI_LEVEL) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def min_detectable_difference(d: np.ndarray, noise_var: float = 0.0, alpha: float = ALPHA,
                              power: float = POWER) -> float | None:
    """Smallest true mean difference found with ``power`` at two-sided ``alpha``, from N per-problem differences."""
    d = np.asarray(d, dtype=float)
    var = float(d.var(ddof=1)) if len(d) > 1 else 0.0
    var = var if var > 0 else noise_var
    if var <= 0 or len(d) == 0:
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return z * math.sqrt(var / len(d))


def pair(a: Mapping[object, Values], b: Mapping[object, Values]) -> tuple[list, list[str], list[str]]:
    """The seeds in both, the problems every paired job has, and notes on what was left unpaired."""
    seeds = [s for s in a if s in b]
    notes = []
    if only := sorted(map(str, set(a) ^ set(b))):
        notes.append(f"seeds {', '.join(only)} are in only one of the two and were left out")
    if not seeds:
        raise UnpairedError("no seed in common: a paired comparison needs the same seeds on both sides")
    tasks = set.intersection(*(set(a[s]) & set(b[s]) for s in seeds))
    every = set.union(*(set(a[s]) | set(b[s]) for s in seeds))
    if len(every) > len(tasks):
        notes.append(f"{len(every) - len(tasks)} of {len(every)} problems are not in every paired job and were "
                     "left out")
    if not tasks:
        raise UnpairedError("no problem in common: a paired comparison needs the same problems on both sides")
    return seeds, sorted(tasks), notes


def paired_difference(metric: str, a: Mapping[object, Values], b: Mapping[object, Values], *,
                      noise: Mapping[object, Values] | None = None) -> PairedDifference:
    """Compare ``b`` with ``a`` on the same problems and seeds; ``noise`` (same shape) is the sampling variance of
    each per-problem difference, used by the MDE only when every observed difference is 0."""
    seeds, tasks, notes = pair(a, b)
    va = np.array([[a[s][t] for t in tasks] for s in seeds], dtype=float)
    vb = np.array([[b[s][t] for t in tasks] for s in seeds], dtype=float)
    diffs = vb - va
    per_problem = diffs.mean(axis=0)
    lo, hi = problem_bootstrap_ci(diffs)
    binary = bool(np.isin(va, (0.0, 1.0)).all() and np.isin(vb, (0.0, 1.0)).all())
    discordant = None
    if binary and len(seeds) == 1:
        discordant = (int(np.sum(diffs > 0)), int(np.sum(diffs < 0)))
        p, test = mcnemar_exact(*discordant), "exact McNemar"
    else:
        p, test = sign_flip_p(per_problem), "paired sign-flip permutation"
    noise_var = (float(np.mean([[noise[s][t] for t in tasks] for s in seeds])) / len(seeds)) if noise else 0.0
    return PairedDifference(metric, float(va.mean()), float(vb.mean()), float(diffs.mean()), lo, hi, p, test,
                            len(tasks), seeds, min_detectable_difference(per_problem, noise_var), discordant, notes)


def binomial_noise(n: int, c: int) -> float:
    """Sampling variance of one problem's pass@1 estimate c/n (0 for one sample: a greedy verdict is fixed)."""
    if n <= 1:
        return 0.0
    p = c / n
    return p * (1 - p) / n
