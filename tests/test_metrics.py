"""Metrics from execution records: pass@k, omitted ks, execution rate, error frequencies, bootstrap CIs."""

from __future__ import annotations

import math

import pytest

from ieta.metrics import compute_metrics, pass_at_k, per_problem_counts


def _record(task: str, outcome: str, error: str | None = None) -> dict:
    return dict(task_id=task, completion="", passed=outcome == "passed", outcome=outcome, error_type=error)


def _executions() -> list[dict]:
    """Three problems × four samples: 2, 1 and 0 passing; one TypeError, one SyntaxError."""
    recs = [_record("a", "passed"), _record("a", "passed"), _record("a", "failed", "AssertionError"),
            _record("a", "runtime_error", "TypeError"), _record("b", "passed"),
            _record("b", "syntax_error", "SyntaxError")]
    recs += [_record("b", "failed", "AssertionError")] * 2 + [_record("c", "failed", "AssertionError")] * 4
    return recs


def test_pass_at_k_matches_closed_form() -> None:
    assert pass_at_k(4, 2, 1) == pytest.approx(0.5)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 3, 2) == 1.0


def test_compute_metrics_values() -> None:
    m = compute_metrics(_executions(), [1, 2, 10])
    assert per_problem_counts(_executions()) == {"a": (4, 2), "b": (4, 1), "c": (4, 0)}
    assert m["pass@1"] == pytest.approx((0.5 + 0.25 + 0) / 3)
    assert m["omitted_ks"] == [10] and "pass@10" not in m
    assert m["notes"] == ["pass@10 omitted: it needs at least 10 samples per problem, the smallest problem has 4"]
    assert m["execution_rate"] == pytest.approx(10 / 12)
    expected = {"AssertionError": 7 / 12, "SyntaxError": 1 / 12, "TypeError": 1 / 12}
    assert m["error_frequencies"] == pytest.approx(expected)
    assert m["num_problems"] == 3 and m["num_samples"] == 12


def test_bootstrap_cis_are_deterministic_and_bracket_the_estimate() -> None:
    m = compute_metrics(_executions(), [1, 2, 10])
    assert set(m["ci"]) == {"pass@1", "pass@2", "execution_rate"}
    for name, (lo, hi) in m["ci"].items():
        assert 0.0 <= lo <= m[name] <= hi <= 1.0
    assert m["ci"]["pass@1"][0] < m["ci"]["pass@1"][1]
    assert compute_metrics(_executions(), [1, 2, 10])["ci"] == m["ci"]
    assert m["bootstrap"]["unit"] == "problem" and m["bootstrap"]["level"] == 0.95


def test_single_problem_has_a_degenerate_interval() -> None:
    m = compute_metrics([_record("a", "passed"), _record("a", "failed", "AssertionError")], [1])
    assert m["ci"]["pass@1"] == pytest.approx([0.5, 0.5])


def test_no_records_is_an_error() -> None:
    with pytest.raises(ValueError, match="no execution records"):
        compute_metrics([], [1])


def test_sandbox_errors_are_counted_apart_and_excluded_from_every_rate() -> None:
    clean = compute_metrics(_executions(), [1, 2])
    broken = _executions() + [_record("a", "sandbox_error", "SandboxError"), _record("d", "sandbox_error")]
    m = compute_metrics(broken, [1, 2])
    assert m["sandbox_errors"] == 2 and clean["sandbox_errors"] == 0
    for key in ("pass@1", "pass@2", "execution_rate", "error_frequencies", "outcomes", "num_problems", "num_samples"):
        assert m[key] == clean[key], key  # "d" had only a sandbox error: it is not a problem the model failed
    assert per_problem_counts(broken) == per_problem_counts(_executions())
    assert any("2 sandbox errors" in n for n in m["notes"])
    with pytest.raises(ValueError, match="sandbox errors"):
        compute_metrics([_record("a", "sandbox_error")], [1])
