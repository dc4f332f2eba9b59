"""Conclusions written from the numbers: each sentence states a measured value and its uncertainty."""

from __future__ import annotations

import pandas as pd

from ieta.report.loading import RunData, display_name
from ieta.report.tables import Estimate, error_reduction_rows, estimate, estimates_at


def _verdict(a: Estimate, b: Estimate) -> str:
    """Whether the difference between two estimates lies within their intervals."""
    overlap = a.overlaps(b)
    if overlap is None:
        return "no interval was recorded, so its significance is unknown"
    if overlap:
        return f"the {a.kind} overlap, so the difference lies within the uncertainty"
    return f"the {a.kind} do not overlap, so the difference lies outside the uncertainty"


def _change(metric: str, a: Estimate, b: Estimate, final_it: int) -> str:
    return (f"{display_name(metric)} went from {a} before training to {b} after iteration {final_it} "
            f"({b.mean - a.mean:+.3f}); {_verdict(a, b)}.")


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
    return "; ".join(parts) + "."


def _notes(runs: list[RunData], omitted: bool = True) -> list[str]:
    """Caveats: same-set evaluation, and (``omitted``) the ks left out for too few samples."""
    out = []
    if any(r.info.get("same_set_evaluation") for r in runs):
        out.append("Evaluation used the same problems as training (same-set evaluation), so gains measure fit "
                   "to those problems, not generalisation to unseen ones.")
    out += sorted({n for r in runs for n in r.final.get("notes", [])}) if omitted else []
    return out


def run_conclusions(run: RunData, metrics: pd.DataFrame, errors: pd.DataFrame) -> list[str]:
    """Initial vs final per rate, the best iteration if not the last, errors, and caveats."""
    first, last = estimates_at(metrics, "initial"), estimates_at(metrics, "final")
    final_it = run.final["iteration"]
    out = []
    if len(run.records) == 1:
        out.append(f"Only the initial evaluation exists: Pass@1 is {first.get('pass@1', 'unknown')}.")
    else:
        out += [_change(m, first[m], last[m], final_it) for m in ("pass@1", "execution_rate") if m in first]
        p1 = metrics[metrics.metric == "pass@1"]
        best = int(p1.loc[p1.value.idxmax(), "iteration"]) if not p1.empty else final_it
        if best != final_it:
            best_est = estimate(p1[p1.iteration == best])
            out.append(f"Pass@1 peaked at iteration {best} ({best_est}), above the final {last['pass@1']}; "
                       f"{_verdict(best_est, last['pass@1'])}.")
    if not run.trains and len(run.records) > 1:
        out.append("This run logged no training loss, so differences between iterations reflect sampling "
                   "variation, not learning.")
    sentence = _errors_sentence(errors) if len(run.records) > 1 else None
    return out + ([sentence] if sentence else []) + _notes([run])


def sweep_conclusions(groups: dict[str, list[RunData]], finals: dict[str, dict[str, Estimate]],
                      initials: dict[str, dict[str, Estimate]], errors: pd.DataFrame) -> list[str]:
    """Best method per rate against the runner-up and the baseline, and per-method error reductions."""
    out = []
    for metric in ("pass@1", "execution_rate"):
        ranked = sorted((lbl for lbl in finals if metric in finals[lbl]), key=lambda lbl: -finals[lbl][metric].mean)
        if not ranked:
            continue
        best = ranked[0]
        tied = [lbl for lbl in ranked if finals[lbl][metric].mean == finals[best][metric].mean]
        if len(tied) > 1:
            out.append(f"{', '.join(tied)} tie on final {display_name(metric)} ({finals[best][metric].mean:.3f}).")
            continue
        sentence = f"**{best}** has the highest final {display_name(metric)}: {finals[best][metric]}"
        if len(ranked) > 1:
            runner = ranked[1]
            sentence += (f", ahead of {runner} ({finals[runner][metric]}); "
                         f"{_verdict(finals[best][metric], finals[runner][metric])}")
        out.append(sentence + ".")
    baselines = [lbl for lbl in finals if lbl.split(",")[0] == "baseline"]
    for lbl in (lbl for lbl in finals if baselines and lbl not in baselines and "pass@1" in finals[lbl]):
        base = finals[baselines[0]]["pass@1"]
        own = finals[lbl]["pass@1"]
        out.append(f"{lbl} vs {baselines[0]}: Pass@1 {own.mean - base.mean:+.3f} at the final iteration; "
                   f"{_verdict(own, base)}.")
    for lbl in finals:
        a, b = initials[lbl].get("pass@1"), finals[lbl].get("pass@1")
        sentence = _errors_sentence(errors[errors.label == lbl])
        if a and b:
            out.append(f"{lbl}: Pass@1 {a.mean:.3f} → {b.mean:.3f} ({b.mean - a.mean:+.3f}) from the initial to the "
                       f"final evaluation." + (f" {sentence}" if sentence else ""))
    return out + _notes([r for runs in groups.values() for r in runs], omitted=False)
