"""Paired statistics: exact tests against closed forms, pairing checks, and the power line's calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ieta.stats import (UnpairedError, binomial_noise, problem_bootstrap_ci, mcnemar_exact, min_detectable_difference,
                        pair, paired_difference, sign_flip_p)


def test_mcnemar_exact_matches_the_binomial_tail():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact(2, 10) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar_exact(3, 3) == 1.0


def test_sign_flip_enumerates_small_samples_exactly():
    assert sign_flip_p(np.array([1.0, 1.0, 1.0])) == pytest.approx(2 / 8)
    assert sign_flip_p(np.zeros(5)) == 1.0
    big = np.r_[np.full(30, 0.5), np.zeros(30)]  # Monte Carlo branch: a clear effect has a tiny p
    assert sign_flip_p(big) < 0.001 and sign_flip_p(big) == sign_flip_p(big)  # fixed seed


def test_bootstrap_resamples_problems_jointly_over_seeds():
    diffs = np.array([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]])
    lo, hi = problem_bootstrap_ci(diffs)
    assert lo <= 0.5 <= hi and (lo, hi) == problem_bootstrap_ci(diffs)
    assert problem_bootstrap_ci(np.full((3, 5), 0.2)) == pytest.approx((0.2, 0.2))


def test_paired_difference_on_greedy_verdicts_uses_mcnemar():
    a = {0: {f"t{i}": float(i < 10) for i in range(40)}}
    b = {0: {f"t{i}": float(i < 22) for i in range(40)}}  # 12 problems fixed, none broken
    r = paired_difference("greedy_pass@1", a, b)
    assert r.test == "exact McNemar" and r.discordant == (12, 0)
    assert r.diff == pytest.approx(0.3) and r.p_value == pytest.approx(2 / 2 ** 12)
    assert r.differs and r.lo > 0 and r.mde is not None


def test_pairing_refuses_disjoint_seeds_and_flags_missing_problems():
    with pytest.raises(UnpairedError, match="seed"):
        pair({0: {"x": 1.0}}, {1: {"x": 1.0}})
    with pytest.raises(UnpairedError, match="problem"):
        pair({0: {"x": 1.0}}, {0: {"y": 1.0}})
    seeds, tasks, notes = pair({0: {"x": 1.0, "y": 0.0}, 1: {"x": 1.0}}, {0: {"x": 0.0, "y": 1.0}, 2: {"x": 1.0}})
    assert seeds == [0] and tasks == ["x", "y"] and "seeds 1, 2" in notes[0]
    r = paired_difference("pass@1", {0: {"x": 0.5, "y": 0.5}}, {0: {"x": 0.5, "z": 1.0}})
    assert r.problems == 1 and any("not in every paired job" in n for n in r.notes)


def test_identical_evaluations_are_no_difference():
    values = {s: {f"t{i}": (i % 5) / 4 for i in range(30)} for s in (0, 1)}
    r = paired_difference("pass@1", values, values)
    assert r.diff == 0 and not r.differs and r.p_value == 1.0
    assert r.mde is None  # nothing varies and no sampling noise given: power is not estimable
    noise = {s: {t: 2 * binomial_noise(4, 2) for t in values[s]} for s in values}
    with_noise = paired_difference("pass@1", values, values, noise=noise)
    assert with_noise.mde == pytest.approx(2.8016 * math.sqrt(2 * 0.0625 / 2 / 30), rel=1e-3)


def test_mde_has_the_power_it_claims():
    """Simulated paired per-problem differences whose true mean is the MDE: the CI excludes 0 in about 80% of runs."""
    rng = np.random.default_rng(1)
    n, sd = 80, 0.3
    mde = min_detectable_difference(rng.normal(0, sd, n))
    assert mde == pytest.approx(2.8 * sd / math.sqrt(n), rel=0.25)
    target = 2.8016 * sd / math.sqrt(n)
    found = 0
    for _ in range(200):
        lo, hi = problem_bootstrap_ci(rng.normal(target, sd, n)[None, :], resamples=500)
        found += lo > 0
    assert 0.68 <= found / 200 <= 0.92


def test_a_narrow_ci_without_a_rejecting_test_is_inconclusive_not_a_difference():
    """4 of 10 problems fixed, none broken: the percentile bootstrap excludes 0, exact McNemar gives p = 1/8."""
    a = {0: {f"t{i}": 0.0 for i in range(10)}}
    b = {0: {f"t{i}": float(i < 4) for i in range(10)}}
    r = paired_difference("greedy_pass@1", a, b)
    assert r.ci_excludes_zero and r.p_value == pytest.approx(2 / 16)
    assert not r.differs and r.to_dict()["differs"] is False
