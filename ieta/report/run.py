"""Per-run report: ``<run_dir>/summary.md`` and ``<run_dir>/figures/*.png`` from the files on disk."""

from __future__ import annotations

from pathlib import Path

from ieta.io import atomic_write_text
from ieta.report import figures
from ieta.report.conclusions import run_conclusions
from ieta.report.inputs import write_inputs
from ieta.report.loading import RunData, errors_frame, load_run, loss_frame, metrics_frame
from ieta.report.paired import change
from ieta.report.sections import PAIRED_NOTE, paired_rows, PAIRED_HEADERS, power_line, training_section, turn_table
from ieta.report.tables import error_reduction_table, iteration_table, md_table

CI_NOTE = "Intervals are 95% percentile-bootstrap CIs over problems (seed and resamples in `metrics.json`)."
SAME_SET_BANNER = ("> **Same-set evaluation**: this run was evaluated on the problems it trained on "
                   "(`split={split}`); its scores are not a held-out measure.")


def split_text(info: dict) -> str:
    split = info.get("split", "unknown")
    return f"{split} (same-set evaluation)" if info.get("same_set_evaluation") else str(split)


def overview_rows(runs: list[RunData]) -> list[list[str]]:
    """Settings shared by the given runs; a setting that differs between them lists every value."""
    def value(get) -> str:
        return ", ".join(dict.fromkeys(str(get(r.info)) for r in runs))

    sampler = lambda key: lambda i: i.get("sampler", {}).get(key, "—")  # noqa: E731
    return [
        ["Dataset", value(lambda i: i.get("dataset", "—"))],
        ["Model", value(lambda i: i.get("model", "—"))],
        ["Method", value(lambda i: i.get("method", "—"))],
        ["Iterations", value(lambda i: i.get("num_iterations", "—"))],
        ["Training steps per iteration", value(lambda i: i.get("steps_per_iteration", "—"))],
        ["Split", value(split_text)],
        ["Train / eval problems",
         value(lambda i: f"{i.get('num_train_problems', '—')} / {i.get('num_eval_problems', '—')}")],
        ["Samples per problem (n)", value(sampler("n"))],
        ["Temperature", value(sampler("temperature"))],
        ["Max new tokens", value(sampler("max_new_tokens"))],
        ["Seed", value(lambda i: i.get("seed", "—"))],
        ["Device / dtype", value(lambda i: f"{i.get('device', '—')} / {i.get('dtype', '—')}")],
    ] + ([["Code", value(_code_text)]] if any("code" in r.info for r in runs) else [])


def _code_text(info: dict) -> str:
    code = info.get("code") or {}
    if not code.get("commit"):
        return "—"
    return f"commit {code['commit'][:10]}" + (" with uncommitted changes" if code.get("dirty") else "")


def write_run_report(run_dir: Path) -> Path:
    """Write ``summary.md`` and its figures for one run dir; returns the path of ``summary.md``."""
    run = load_run(Path(run_dir))
    write_inputs(run.path, run.inputs)
    labels = [run.method]
    metrics, errors, loss = (f([run], labels) for f in (metrics_frame, errors_frame, loss_frame))
    fig_dir = run.path / "figures"
    name = run.method.upper()
    pass_metrics = metrics[metrics.metric != "execution_rate"]
    figs = {
        "Pass@k rates": figures.rates_figure(pass_metrics, "metric", f"{name}: pass@k over iterations", "Pass rate",
                                             fig_dir / "pass_rates.png"),
        "Execution rate": figures.rates_figure(metrics[metrics.metric == "execution_rate"], "metric",
                                               f"{name}: execution rate over iterations", "Execution rate",
                                               fig_dir / "execution_rates.png"),
        "Error frequencies": figures.errors_figure(errors, f"{name}: error frequencies, initial vs final",
                                                   fig_dir / "error_frequencies.png"),
    }
    if not loss.empty:
        figs["Training loss"] = figures.loss_figure(loss, f"{name}: training loss", fig_dir / "training_loss.png")
    for stale in set(fig_dir.glob("*.png")) - set(figs.values()):
        stale.unlink()
    parts = [f"# IETA run: {run.method} on {run.info.get('dataset', 'unknown dataset')}", "", "## Overview", ""]
    if run.info.get("same_set_evaluation"):
        parts += [SAME_SET_BANNER.format(split=run.info.get("split", "all")), ""]
    parts += [md_table(["Setting", "Value"], overview_rows([run])), "", "## Summary of Results", "",
              iteration_table(run, metrics), "",
              *([CI_NOTE, ""] if run.final.get("ci") else []),
              *[f"- {n}" for n in run.final.get("notes", [])], "", "## Error Reduction", "",
              "Fraction of all samples with each error type, before training and after the last iteration.", "",
              error_reduction_table(errors), ""]
    paired = change([run])
    if paired:
        note = PAIRED_NOTE.replace("seed and problem", "problem")
        parts += ["## Paired Change from the Initial Evaluation", "", note,
                  "", md_table(PAIRED_HEADERS, paired_rows(run.method, paired)).replace(
                      "Reference → method", "Initial → final"), ""]
        if line := power_line([(run.method, d) for d in paired.values()], [run], "the initial evaluation"):
            parts += [line, ""]
    if turns := turn_table({run.method: [run]}):
        parts += ["## Turn-by-Turn Pass@1", "", *turns]
    parts += ["## Training Data and Rewards", "", *training_section({run.method: [run]}), "## Figures", ""]
    for title, path in figs.items():
        parts += [f"### {title}", "", f"![{name} {title}](figures/{path.name})", ""]
    parts += ["## Conclusions", "", *[f"- {c}" for c in run_conclusions(run, metrics, errors, paired)], ""]
    out = run.path / "summary.md"
    atomic_write_text(out, "\n".join(parts))
    return out
