"""Sweep report: every job of a Hydra multirun dir, compared in ``<sweep_dir>/summary.md`` and ``figures/``."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ieta.io import atomic_write_text
from ieta.report import figures
from ieta.report.conclusions import sweep_conclusions
from ieta.report.loading import (RunData, errors_frame, find_job_dirs, group_runs, job_labels, load_run, loss_frame,
                                 metrics_frame, slug)
from ieta.report.paired import Comparison, change, compare, pooled_rate
from ieta.report.run import overview_rows, write_run_report
from ieta.report.sections import paired_section, training_section, turn_table
from ieta.report.tables import (POOLED, Estimate, change_table, comparison_columns, comparison_table,
                                error_reduction_table, estimates_at, md_table)

log = logging.getLogger(__name__)


def _load_jobs(sweep_dir: Path) -> tuple[list[RunData], list[str]]:
    """Load every finished job (rebuilding its own report); unreadable ones are listed, not fatal."""
    runs, skipped = [], []
    for job in find_job_dirs(sweep_dir):
        try:
            write_run_report(job)
            runs.append(load_run(job))
        except (OSError, ValueError, KeyError) as e:
            log.warning("skipping job %s: %s", job, e)
            skipped.append(f"`{job.relative_to(sweep_dir)}`: {e}")
    if not runs:
        raise FileNotFoundError(f"no job dir with metrics.json under {sweep_dir}")
    return runs, skipped


def _method_section(label: str, runs: list[RunData], metrics: pd.DataFrame, errors: pd.DataFrame,
                    loss: pd.DataFrame, fig_dir: Path, sweep_dir: Path) -> list[str]:
    """One method's figures (mean ± std over its jobs when several) and links to its run reports."""
    name, stem = label.upper(), slug(label)
    jobs = ", ".join(f"[{r.path.relative_to(sweep_dir)}]({r.path.relative_to(sweep_dir)}/summary.md)"
                     f" (seed {r.seed})" for r in runs)
    figs = {
        "Pass@k Rates": figures.rates_figure(metrics[metrics.metric != "execution_rate"], "metric",
                                             f"{name}: pass@k over iterations", "Pass rate",
                                             fig_dir / f"{stem}_pass_rates.png"),
        "Execution Rates": figures.rates_figure(metrics[metrics.metric == "execution_rate"], "metric",
                                                f"{name}: execution rate over iterations", "Execution rate",
                                                fig_dir / f"{stem}_execution_rates.png"),
        "Error Frequencies": figures.errors_figure(errors, f"{name}: error frequencies, initial vs final",
                                                   fig_dir / f"{stem}_error_frequencies.png"),
    }
    if not loss.empty:
        figs["Training Loss"] = figures.loss_figure(loss, f"{name}: training loss",
                                                    fig_dir / f"{stem}_training_loss.png")
    parts = [f"### {name}", "", f"Jobs: {jobs}", ""]
    for title, path in figs.items():
        parts += [f"#### {title}", "", f"![{name} {title}](figures/{path.name})", ""]
    return parts


def reference_label(labels: list[str], against: str | None) -> str | None:
    """The label every method is compared with: ``against`` (a label or a method name), else the baseline's."""
    if against is not None:
        for lbl in labels:
            if against in (lbl, lbl.split(",")[0]):
                return lbl
        raise ValueError(f"--against {against}: no such method in the sweep; methods: {', '.join(labels)}")
    return next((lbl for lbl in labels if lbl.split(",")[0] == "baseline"), None)


def _pooled_finals(groups: dict[str, list[RunData]], finals: dict[str, dict[str, Estimate]]) -> None:
    """Several jobs of one method: replace the range over seeds with the CI pooled over seeds, where recorded."""
    for lbl, runs in groups.items():
        if len(runs) < 2:
            continue
        for m in list(finals[lbl]):
            if (got := pooled_rate(runs, m)) is not None:
                finals[lbl][m] = Estimate(*got, len(runs), POOLED)


def write_sweep_report(sweep_dir: Path, against: str | None = None) -> Path:
    """Rebuild every job's report, then write the comparison; returns the path of the sweep ``summary.md``.

    Every method is compared, paired, with ``against`` (a method name or job label; default: the baseline)."""
    sweep_dir = Path(sweep_dir)
    runs, skipped = _load_jobs(sweep_dir)
    labels = job_labels(runs)
    groups = group_runs(runs, labels)
    reference = reference_label(list(groups), against)
    metrics, errors, loss = (f(runs, labels) for f in (metrics_frame, errors_frame, loss_frame))
    per = {lbl: metrics[metrics.label == lbl] for lbl in groups}
    finals = {lbl: estimates_at(m, "final") for lbl, m in per.items()}
    _pooled_finals(groups, finals)
    initials = {lbl: estimates_at(m, "initial") for lbl, m in per.items()}
    comparisons = [compare(lbl, g, reference, groups[reference]) for lbl, g in groups.items()
                   if reference is not None and lbl != reference]
    changes = {lbl: change(g) for lbl, g in groups.items()}
    fig_dir = sweep_dir / "figures"
    for stale in fig_dir.glob("*.png"):
        stale.unlink()
    columns = [c for c in comparison_columns(groups) if any(c in f for f in finals.values())]
    comparison = figures.comparison_figure(finals, columns, fig_dir / "method_comparison.png")
    dashboard = figures.dashboard_figure(metrics, errors, loss, fig_dir / "comparison_dashboard.png")
    _write_csv(finals, comparisons, sweep_dir / "comparison.csv")

    same_set = [r for r in runs if r.info.get("same_set_evaluation")]
    banner = [f"> **Same-set evaluation** in {len(same_set)} of {len(runs)} jobs: they were evaluated on the "
              "problems they trained on, so their scores are not held-out measures.", ""] if same_set else []
    parts = [f"# IETA Framework Experimental Results: `{sweep_dir.name}`", "", "## Experiment Overview", "", *banner,
             md_table(["Setting", "Value"], [*overview_rows(runs), ["Jobs", len(runs)]]), "",
             "## Summary of Results", "", "Final iteration of each method. " + _uncertainty_note(groups), "",
             comparison_table(groups, finals), "",
             *[f"- {n}" for n in _column_notes(runs, finals, comparison_columns(groups))], "",
             "### Change from the initial evaluation", "", change_table(initials, finals, changes), ""]
    if comparisons:
        parts += [f"## Paired Comparison against {reference}", "", *paired_section(comparisons, runs, reference)]
    if turns := turn_table(groups):
        parts += ["## Turn-by-Turn Pass@1", "", *turns]
    parts += ["## Training Data and Rewards", "", *training_section(groups), "## Error Reduction", ""]
    for lbl in groups:
        parts += [f"### {lbl.upper()}", "", error_reduction_table(errors[errors.label == lbl]), ""]
    parts += ["## Method Comparison", "", f"![Method Comparison](figures/{comparison.name})", "",
              "## Comprehensive Comparison", "", f"![Comparison Dashboard](figures/{dashboard.name})", "",
              "## Detailed Results by Method", ""]
    for lbl, members in groups.items():
        parts += _method_section(lbl, members, per[lbl], errors[errors.label == lbl], loss[loss.label == lbl],
                                 fig_dir, sweep_dir)
    conclusions = sweep_conclusions(groups, finals, comparisons, changes, errors, reference)
    parts += ["## Conclusions", "", *[f"- {c}" for c in conclusions], ""]
    if skipped:
        parts += ["## Skipped Jobs", "", *[f"- {s}" for s in skipped], ""]
    out = sweep_dir / "summary.md"
    atomic_write_text(out, "\n".join(parts))
    return out


def _uncertainty_note(groups: dict[str, list[RunData]]) -> str:
    if all(len(g) == 1 for g in groups.values()):
        return "Brackets are 95% bootstrap CIs over problems."
    return ("Brackets: a single job's 95% bootstrap CI over problems; for several jobs (seeds) the mean over jobs "
            f"with the {POOLED} (problems resampled with all their seeds), or the min-max over seeds where no "
            "per-problem results were recorded.")


def _column_notes(runs: list[RunData], finals: dict, columns: list[str]) -> list[str]:
    """Why a column shows —: omitted for too few samples per problem, or not a configured k."""
    notes = []
    for m in columns:
        k = m.split("@")[-1]
        short = [r for r in runs if k.isdigit() and int(k) in r.final.get("omitted_ks", [])]
        if short:
            ns = ", ".join(dict.fromkeys(str(r.info.get("sampler", {}).get("n", "?")) for r in short))
            notes.append(f"{m} omitted in {len(short)} of {len(runs)} jobs: it needs at least {k} samples per problem "
                         f"(those jobs drew n = {ns})")
        elif not any(m in f for f in finals.values()):
            ns = [r.info.get("sampler", {}).get("n") for r in runs]
            few = (f"it needs at least {k} samples per problem (these jobs drew n = "
                   f"{', '.join(dict.fromkeys(str(n) for n in ns))}) and " if k.isdigit() and all(
                       isinstance(n, int) and n < int(k) for n in ns) else "")
            notes.append(f"{m} not measured: {few}{k} is not in the configured ks")
    return notes


def _write_csv(finals: dict, comparisons: list[Comparison], path: Path) -> None:
    """The comparison table as tidy CSV (method, metric, mean, lo, hi, interval, jobs, and the paired difference
    from the reference: delta, its CI, p-value, test, MDE), e.g. for W&B."""
    paired = {(c.label, m): (c.reference, d) for c in comparisons for m, d in c.pooled.items()}
    rows = []
    for lbl, ests in finals.items():
        for m, e in ests.items():
            ref, d = paired.get((lbl, m), (None, None))
            rows.append(dict(method=lbl, metric=m, mean=round(e.mean, 6), lo=round(e.lo, 6), hi=round(e.hi, 6),
                             interval=e.kind, jobs=e.n, reference=ref,
                             delta=None if d is None else round(d.diff, 6),
                             delta_lo=None if d is None else round(d.lo, 6),
                             delta_hi=None if d is None else round(d.hi, 6),
                             p_value=None if d is None else round(d.p_value, 6), test=None if d is None else d.test,
                             mde=None if d is None or d.mde is None else round(d.mde, 6)))
    atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))
