"""Seaborn figures written as PNG (Agg backend): rates over iterations, errors, loss, method comparison."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ieta.io import atomic_path  # noqa: E402
from ieta.report.loading import display_name  # noqa: E402
from ieta.report.tables import Estimate  # noqa: E402

ITERATION_LABEL = "Iteration (0 = before training)"


def _palette(levels: Sequence[str]) -> dict[str, tuple]:
    return dict(zip(levels, sns.color_palette("colorblind", max(len(levels), 1))))


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:], dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def _subplots(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (7.5, 4.5)):
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.95):
        return plt.subplots(nrows, ncols, figsize=size, layout="constrained", squeeze=False)


def _rate_ylim(ax: Axes, top: float) -> None:
    ax.set_ylim(0, min(1.02, max(top * 1.15, 0.05)))


def _lines(ax: Axes, df: pd.DataFrame, hue: str, colors: dict[str, tuple]) -> str:
    """One line per ``hue`` level over iterations with a band; returns what the band shows."""
    band, top = "95% bootstrap CI", 0.0
    for level, g in df.groupby(hue, sort=False):
        by_it = g.groupby("iteration")
        if g.job.nunique() == 1:
            agg = by_it.agg(y=("value", "first"), lo=("lo", "first"), hi=("hi", "first"))
        else:
            agg = by_it.value.agg(y="mean", lo="min", hi="max")
            band = f"min-max over {g.job.nunique()} seeds"
        name = display_name(level) if hue == "metric" else level
        ax.plot(agg.index, agg.y, marker="o", color=colors[level], label=name)
        ax.fill_between(agg.index, agg.lo, agg.hi, color=colors[level], alpha=0.18, linewidth=0)
        if len(agg) == 1 and agg.lo.notna().all():  # a band needs two points: show the interval as a bar
            ax.errorbar(agg.index, agg.y, yerr=[agg.y - agg.lo, agg.hi - agg.y], color=colors[level], capsize=4)
        top = max(top, float(np.nanmax([agg.y.max(), agg.hi.max()])))
    iterations = sorted(df.iteration.unique())
    ax.set_xticks(iterations)
    ax.set_xlim(iterations[0] - 0.3, iterations[-1] + 0.3)
    ax.set_xlabel(ITERATION_LABEL)
    _rate_ylim(ax, top)
    return band


def rates_figure(metrics: pd.DataFrame, hue: str, title: str, ylabel: str, path: Path) -> Path:
    """Rates over iterations, one line per metric (``hue="metric"``) or per method (``hue="label"``)."""
    fig, axes = _subplots()
    ax = axes[0, 0]
    band = _lines(ax, metrics, hue, _palette(list(dict.fromkeys(metrics[hue]))))
    ax.set(title=title, ylabel=ylabel)
    ax.legend(title=f"shaded: {band}", fontsize=9, title_fontsize=9, loc="best")
    return _save(fig, path)


def _error_bars(ax: Axes, errors: pd.DataFrame, hue: str, colors: dict[str, tuple]) -> str:
    """Grouped bars per error type; returns what the error bars show ("" when none)."""
    keep = errors.groupby("error_type").frequency.transform("max") > 0
    data = errors[keep]
    if data.empty:
        ax.text(0.5, 0.5, "no errors recorded", ha="center", va="center", transform=ax.transAxes)
        return ""
    order = data.groupby("error_type").frequency.mean().sort_values(ascending=False).index
    sd = ("sd" if data.groupby([hue, "error_type"]).size().max() > 1 else None)
    sns.barplot(data=data, x="error_type", y="frequency", hue=hue, order=order, errorbar=sd, palette=colors, ax=ax)
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.set_xlabel("Error type")
    ax.set_ylabel("Fraction of samples")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # headroom so the legend sits above the bars
    return "\n(bars: ± 1 std over seeds)" if sd else ""


def errors_figure(errors: pd.DataFrame, title: str, path: Path) -> Path:
    """Error frequency per type, initial vs final evaluation (mean ± std when several seeds)."""
    fig, axes = _subplots()
    ax = axes[0, 0]
    note = _error_bars(ax, errors, "stage", {"initial": "#9aa5b1", "final": sns.color_palette("colorblind")[0]})
    ax.set_title(title)
    if ax.get_legend():
        ax.legend(title="Evaluation" + note, fontsize=9, title_fontsize=9)
    return _save(fig, path)


def _loss_lines(ax: Axes, loss: pd.DataFrame, hue: str, colors: dict) -> None:
    multi = loss.groupby([hue, "step"]).size().max() > 1
    sns.lineplot(data=loss, x="step", y="loss", hue=hue, palette=colors, errorbar="sd" if multi else None, ax=ax)
    ax.set(xlabel="Training step (cumulative over iterations)", ylabel="Loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def loss_figure(loss: pd.DataFrame, title: str, path: Path) -> Path:
    """Training loss over cumulative steps, coloured by iteration."""
    fig, axes = _subplots()
    ax = axes[0, 0]
    iterations = sorted(loss.iteration.unique())
    colors = dict(zip(iterations, sns.color_palette("viridis", len(iterations))))
    _loss_lines(ax, loss, "iteration", colors)
    ax.set_title(title)
    ax.legend(title="Iteration", fontsize=9, title_fontsize=9, ncols=max(1, len(iterations) // 6))
    return _save(fig, path)


def _comparison_bars(ax: Axes, finals: dict[str, dict[str, Estimate]], columns: list[str], colors: dict) -> None:
    labels = list(finals)
    width = 0.8 / len(labels)
    x = np.arange(len(columns))
    for i, label in enumerate(labels):
        ests = [finals[label].get(m) for m in columns]
        ys = [e.mean if e else np.nan for e in ests]
        err = np.array([[e.mean - e.lo, e.hi - e.mean] if e and e.known else [0, 0] for e in ests]).T
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, ys, width, yerr=err, capsize=3, color=colors[label],
               label=label, error_kw={"elinewidth": 1})
    ax.set_xticks(x, [display_name(m) for m in columns])
    ax.set(xlabel="Metric (final iteration)", ylabel="Rate")
    tops = [e.hi if e.known else e.mean for f in finals.values() for e in f.values()]
    _rate_ylim(ax, max(tops, default=0.0))


def comparison_figure(finals: dict[str, dict[str, Estimate]], columns: list[str], path: Path) -> Path:
    """Grouped bars: methods × rates at the final iteration, with their intervals."""
    fig, axes = _subplots(size=(8.5, 4.8))
    ax = axes[0, 0]
    _comparison_bars(ax, finals, columns, _palette(list(finals)))
    ax.set_title("Method comparison at the final iteration")
    kinds = sorted({e.kind for f in finals.values() for e in f.values()})
    ax.legend(title="error bars:\n" + "\nor ".join(kinds), fontsize=9, title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def dashboard_figure(metrics: pd.DataFrame, errors: pd.DataFrame, loss: pd.DataFrame, path: Path) -> Path:
    """Four panels per method: Pass@1 and execution rate over iterations, final errors, training loss."""
    labels = list(dict.fromkeys(metrics.label))
    colors = _palette(labels)
    fig, axes = _subplots(2, 2, size=(13, 8.5))
    for ax, metric in zip(axes[0], ("pass@1", "execution_rate")):
        band = _lines(ax, metrics[metrics.metric == metric], "label", colors)
        ax.set(title=f"{display_name(metric)} over iterations", ylabel=display_name(metric))
        ax.legend(title=f"shaded: {band}", fontsize=8, title_fontsize=8)
    ax = axes[1, 0]
    note = _error_bars(ax, errors[errors.stage == "final"], "label", colors)
    ax.set_title("Error frequencies at the final iteration")
    if ax.get_legend():
        ax.legend(title="Method" + note, fontsize=8, title_fontsize=8)
    ax = axes[1, 1]
    if loss.empty:
        ax.text(0.5, 0.5, "no method logged a training loss", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        _loss_lines(ax, loss, "label", colors)
        ax.legend(title="Method", fontsize=8, title_fontsize=8)
    ax.set_title("Training loss")
    fig.suptitle("Comparison dashboard", fontsize=15)
    return _save(fig, path)
