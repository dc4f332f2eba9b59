"""Markdown tables and the point estimates they show (one job: its bootstrap CI; several seeds: a pooled CI)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ieta.report.loading import RunData, display_name, metric_names


@dataclass(frozen=True)
class Estimate:
    """A rate with its uncertainty: one job's 95% bootstrap CI over problems, the 95% CI pooled over seeds (problems
    resampled with all their seeds), or, without per-problem results, the range over seeds."""

    mean: float
    lo: float
    hi: float
    n: int
    kind: str = "95% CI"

    @property
    def known(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}]" if self.known else f"{self.mean:.3f}"


RANGE = "min-max over seeds"
POOLED = "95% CI pooled over seeds"


def estimate(rows: pd.DataFrame) -> Estimate:
    """Estimate from the metrics-frame rows of one (label, iteration, metric), one row per job."""
    if len(rows) == 1:
        r = rows.iloc[0]
        return Estimate(float(r.value), float(r.lo), float(r.hi), 1)
    return Estimate(float(rows.value.mean()), float(rows.value.min()), float(rows.value.max()), len(rows), RANGE)


def estimates_at(metrics: pd.DataFrame, stage: str) -> dict[str, Estimate]:
    """Estimates per metric at each job's ``"initial"`` (first) or ``"final"`` (last) evaluation."""
    pick = metrics.groupby("job").iteration.transform("min" if stage == "initial" else "max")
    return {m: estimate(g) for m, g in metrics[metrics.iteration == pick].groupby("metric", sort=False)}


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def iteration_table(run: RunData, metrics: pd.DataFrame) -> str:
    """Per evaluation: every rate with its 95% CI, plus problems and samples."""
    names = metric_names(run.final)
    rows = []
    for rec in run.records:
        it = metrics[metrics.iteration == rec["iteration"]]
        cells = [str(estimate(it[it.metric == m])) if m in set(it.metric) else "—" for m in names]
        label = f"{rec['iteration']} (initial)" if rec is run.initial else str(rec["iteration"])
        rows.append([label, *cells, rec.get("num_problems", "—"), rec.get("num_samples", "—")])
    return md_table(["Iteration", *map(display_name, names), "Problems", "Samples"], rows)


def comparison_columns(groups: dict[str, list[RunData]]) -> list[str]:
    """Pass@1/10/100 and configured ks (shown as — when not measured), any other recorded rate, execution rate."""
    ks = sorted({1, 10, 100} | {int(k) for runs in groups.values() for r in runs for k in r.info.get("ks", [])})
    names = [f"pass@{k}" for k in ks]
    names += [m for runs in groups.values() for r in runs for m in metric_names(r.final)]
    return [m for m in dict.fromkeys(names) if m != "execution_rate"] + ["execution_rate"]


def comparison_table(groups: dict[str, list[RunData]], finals: dict[str, dict[str, Estimate]]) -> str:
    """Methods × rates at the final iteration."""
    cols = comparison_columns(groups)
    rows = [[f"**{label}**", len(groups[label]), *(str(finals[label][m]) if m in finals[label] else "—"
                                                   for m in cols)] for label in groups]
    return md_table(["Method", "Jobs", *map(display_name, cols)], rows)


def change_table(initials: dict[str, dict[str, Estimate]], finals: dict[str, dict[str, Estimate]],
                 changes: dict[str, dict] | None = None) -> str:
    """Initial vs final Pass@1 and execution rate per method; Δ with its paired 95% CI where per-problem results
    were recorded (``changes``: label -> metric -> ``ieta.stats.PairedDifference``)."""
    rows = []
    for label in finals:
        row = [f"**{label}**"]
        for m in ("pass@1", "execution_rate"):
            a, b = initials[label].get(m), finals[label].get(m)
            paired = (changes or {}).get(label, {}).get(m)
            delta = paired.interval() if paired is not None else f"{b.mean - a.mean:+.3f}" if a and b else "—"
            row += [f"{a.mean:.3f}", f"{b.mean:.3f}", delta] if a and b else ["—"] * 3
        rows.append(row)
    headers = ["Method", "Pass@1 initial", "Pass@1 final", "Δ Pass@1 [95% paired CI]", "Exec. rate initial",
               "Exec. rate final", "Δ Exec. rate [95% paired CI]"]
    return md_table(headers, rows)


def reduction(initial: float, final: float) -> str:
    """Relative reduction in %; negative is an increase, ``new`` an error type absent at first."""
    if initial == 0:
        return "new" if final > 0 else "—"
    return f"{(initial - final) / initial * 100:.1f}%"


def error_reduction_rows(errors: pd.DataFrame) -> list[tuple[str, float, float]]:
    """(type, initial, final) averaged over jobs, most frequent initial first, then the total."""
    if errors.empty:
        return []
    wide = errors.pivot_table(index="error_type", columns="stage", values="frequency", aggfunc="mean").fillna(0.0)
    wide = wide[(wide.initial > 0) | (wide.final > 0)]
    if wide.empty:
        return []
    wide = wide.sort_values(["initial", "final"], ascending=False)
    rows = [(str(t), float(r.initial), float(r.final)) for t, r in wide.iterrows()]
    return [*rows, ("All errors", float(wide.initial.sum()), float(wide.final.sum()))]


def error_reduction_table(errors: pd.DataFrame) -> str:
    rows = error_reduction_rows(errors)
    if not rows:
        return "_No errors were recorded at the initial or the final evaluation._"
    cells = [[f"**{t}**" if t == "All errors" else t, f"{a:.4f}", f"{b:.4f}", reduction(a, b)] for t, a, b in rows]
    return md_table(["Error Type", "Initial", "Final", "Reduction"], cells)
