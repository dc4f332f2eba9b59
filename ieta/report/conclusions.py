"""Conclusions written from the paired statistics: a difference whose paired CI contains 0 is no difference."""

from __future__ import annotations

import pandas as pd

from ieta.report.loading import RunData, display_name
from ieta.report.paired import Comparison, change
from ieta.report.sections import fmt_mde, fmt_p
from ieta.report.tables import Estimate, error_reduction_rows, estimates_at
from ieta.stats import ALPHA, PairedDifference

#: the metrics conclusions speak about, in this order, when measured
HEADLINE = ("pass@1", "greedy_pass@1", "pass@10", "execution_rate")


def verdict(d: PairedDifference) -> str:
    """The paired reading of one difference, with its numbers."""
    p = fmt_p(d.p_value)
    stats = f"{d.interval()}, p {p if p.startswith('<') else '= ' + p} ({d.test})"
    if d.differs:
        direction = "rise" if d.diff > 0 else "fall"
        return f"{stats}: the paired CI excludes 0 and the test rejects, so this is a real {direction}"
    if d.ci_excludes_zero:
        return (f"{stats}: inconclusive, since the paired CI excludes 0 but the test does not reject at {ALPHA}; "
                "not claimed as a difference")
    return (f"{stats}: the paired CI contains 0, so this is no difference at this scale (smallest detectable: "
            f"{fmt_mde(d.mde)})")


def _errors_sentence(errors: pd.DataFrame) -> str | None:
    rows = error_reduction_rows(errors)
    if not rows:
        return None
    (*types, (_, total_a, total_b)) = rows
    parts = [f"The total error frequency went from {total_a:.3f} to {total_b:.3f}"]
    reduced = [(t, (a - b) / a) for t, a, b in types if a > 0 and b < a]
    if reduced:
        t, r = max(reduced, key=lambda x: x[1])
        parts.append(f"the largest relative reduction was {t} ({r:.0%})")
    grown = [t for t, a, b in types if b > a]
    if grown:
        parts.append(f"{', '.join(grown)} became more frequent")
    return "; ".join(parts) + " (descriptive: not tested)."


def _notes(runs: list[RunData], omitted: bool = True) -> list[str]:
    """Caveats: same-set evaluation, and (``omitted``) the ks left out for too few samples."""
    out = []
    if any(r.info.get("same_set_evaluation") for r in runs):
        out.append("Evaluation used the same problems as training (same-set evaluation), so gains measure fit "
                   "to those problems, not generalisation to unseen ones.")
    out += sorted({n for r in runs for n in r.final.get("notes", [])}) if omitted else []
    return out


def _headline(diffs: dict[str, PairedDifference]) -> list[str]:
    turns = [m for m in diffs if m.startswith("pass@1_turn")]
    return [m for m in HEADLINE[:-1] if m in diffs] + turns + [m for m in HEADLINE[-1:] if m in diffs]


def run_conclusions(run: RunData, metrics: pd.DataFrame, errors: pd.DataFrame,
                    paired: dict[str, PairedDifference]) -> list[str]:
    """Initial vs final (paired) per headline rate, the best iteration if not the last, errors, and caveats."""
    first, last = estimates_at(metrics, "initial"), estimates_at(metrics, "final")
    final_it = run.final["iteration"]
    out = []
    if len(run.records) == 1:
        out.append(f"Only the initial evaluation exists: Pass@1 is {first.get('pass@1', 'unknown')}.")
    else:
        for m in _headline(paired):
            d = paired[m]
            out.append(f"{display_name(m)} went from {d.mean_a:.3f} before training to {d.mean_b:.3f} after "
                       f"iteration {final_it}: {verdict(d)}.")
        if not paired:
            out += [f"{display_name(m)} went from {first[m].mean:.3f} to {last[m].mean:.3f}; no per-problem results "
                    "were recorded, so the change was not tested." for m in ("pass@1", "execution_rate") if m in first]
        p1 = metrics[metrics.metric == "pass@1"]
        best = int(p1.loc[p1.value.idxmax(), "iteration"]) if not p1.empty else final_it
        if best != final_it and p1.value.max() > last["pass@1"].mean:
            d = change([run], before=best, after=final_it).get("pass@1")
            tested = f"the final against it: {verdict(d)}" if d else "not tested (no per-problem results)"
            out.append(f"Pass@1 peaked at iteration {best} ({p1[p1.iteration == best].value.iloc[0]:.3f}), above the "
                       f"final {last['pass@1'].mean:.3f}; {tested}.")
    if not run.trains and len(run.records) > 1:
        out.append("This run logged no training loss, so differences between iterations reflect sampling "
                   "variation, not learning.")
    sentence = _errors_sentence(errors) if len(run.records) > 1 else None
    return out + ([sentence] if sentence else []) + _notes([run])


def sweep_conclusions(groups: dict[str, list[RunData]], finals: dict[str, dict[str, Estimate]],
                      comparisons: list[Comparison], changes: dict[str, dict[str, PairedDifference]],
                      errors: pd.DataFrame, against: str | None) -> list[str]:
    """Each method against the reference (paired), the overall reading, and each method's change from its initial
    evaluation."""
    out = []
    for c in comparisons:
        for m in _headline(c.pooled):
            out.append(f"{c.label} vs {c.reference}: {display_name(m)} {c.pooled[m].mean_b:.3f} against "
                       f"{c.pooled[m].mean_a:.3f}, {verdict(c.pooled[m])}.")
    if comparisons:
        primary = [(c.label, c.pooled["pass@1"]) for c in comparisons if "pass@1" in c.pooled]
        better = [lbl for lbl, d in primary if d.differs and d.diff > 0]
        worse = [lbl for lbl, d in primary if d.differs and d.diff < 0]
        if primary and not better and not worse:
            out.append(f"No method differs from {against} on Pass@1 at this scale.")
        if better:
            out.append(f"Higher Pass@1 than {against}, beyond the paired uncertainty: {', '.join(better)}.")
        if worse:
            out.append(f"Lower Pass@1 than {against}, beyond the paired uncertainty: {', '.join(worse)}.")
    elif against is None and len(groups) > 1:
        out.append("No baseline job in this sweep, so no method was compared (name one with "
                   "`python -m ieta.report <dir> --against <method>`).")
    for lbl in finals:
        sentence = _errors_sentence(errors[errors.label == lbl])
        d = changes.get(lbl, {}).get("pass@1")
        if d is not None:
            out.append(f"{lbl}: Pass@1 from the initial to the final evaluation {verdict(d)}."
                       + (f" {sentence}" if sentence else ""))
        elif sentence:
            out.append(f"{lbl}: {sentence}")
    return out + _notes([r for runs in groups.values() for r in runs], omitted=False)
