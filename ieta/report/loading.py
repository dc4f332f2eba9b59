"""Read run dirs and Hydra sweep dirs from disk into tidy frames; nothing here runs the pipeline."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ieta.io import read_json, read_jsonl
from ieta.report.inputs import collect_inputs

#: Overrides that never distinguish methods: jobs differing only in these are replicates.
REPLICATE_KEYS = ("seed",)


@dataclass
class RunData:
    """Everything a report needs from one run dir (see the run-dir contract in ``ieta/report/__init__``)."""

    path: Path
    info: dict
    records: list[dict]
    train_logs: dict[int, list[dict]] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    #: ``report_inputs.json`` content (``ieta.report.inputs``): per-problem results, pairs, judge, canaries
    inputs: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.info.get("method", "unknown"))

    @property
    def seed(self) -> int | None:
        return self.info.get("seed")

    @property
    def initial(self) -> dict:
        return self.records[0]

    @property
    def final(self) -> dict:
        return self.records[-1]

    @property
    def trains(self) -> bool:
        return any("loss" in e for log in self.train_logs.values() for e in log)

    def iteration_inputs(self, iteration: int) -> dict:
        return self.inputs.get("iterations", {}).get(str(iteration), {})

    def per_problem(self, iteration: int, kind: str = "eval") -> dict[str, list[int]] | None:
        """``{task_id: [samples, passing, executed]}`` of one evaluation (``eval`` or ``greedy``), if recorded."""
        return self.iteration_inputs(iteration).get("per_problem", {}).get(kind)


def load_run(run_dir: Path) -> RunData:
    """Load one run dir; ``metrics.json`` is required, the rest is optional."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path} not found: not a finished run dir")
    records = read_json(metrics_path)
    if not isinstance(records, list) or not records:
        raise ValueError(f"{metrics_path}: expected a non-empty list of evaluation records")
    info = read_json(run_dir / "run_info.json") if (run_dir / "run_info.json").is_file() else {}
    inputs = collect_inputs(run_dir, records, info)
    train_logs = {int(k): [{"step": s, "loss": v} for s, v in it["loss"]]  # stored, for dirs without the logs
                  for k, it in inputs["iterations"].items() if it.get("loss")}
    for log in run_dir.glob("iter_*/train_log.jsonl"):
        train_logs[int(log.parent.name.removeprefix("iter_"))] = read_jsonl(log)
    overrides_path = run_dir / ".hydra" / "overrides.yaml"
    overrides = (yaml.safe_load(overrides_path.read_text()) or []) if overrides_path.is_file() else []
    return RunData(run_dir, info, records, dict(sorted(train_logs.items())), [str(o) for o in overrides], inputs)


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Job dirs below a sweep dir (those holding ``metrics.json``), in natural order (0, 1, ..., 10)."""
    jobs = [p.parent for p in Path(sweep_dir).rglob("metrics.json") if p.parent != Path(sweep_dir)]
    return sorted(jobs, key=lambda p: _natural(str(p.relative_to(sweep_dir))))


def _natural(text: str) -> list[int | str]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", text)]


def job_labels(runs: list[RunData]) -> list[str]:
    """Name each job by its method plus the overrides that vary across the sweep, except replicate keys.

    A sweep over methods gives ``baseline``, ``dpo``; one over methods and temperatures gives
    ``dpo, sampler.temperature=0.2``; jobs differing only in seed share a label and are averaged.
    """
    parsed = [dict(o.lstrip("+~").split("=", 1) for o in r.overrides if "=" in o) for r in runs]
    keys = sorted({k for p in parsed for k in p})
    methods = {r.method for r in runs}
    varying = [k for k in keys if k not in (*REPLICATE_KEYS, "method") and len({p.get(k) for p in parsed}) > 1
               and len({(r.method, p.get(k)) for r, p in zip(runs, parsed)}) > len(methods)]  # adds to method
    return [", ".join([r.method, *(f"{k}={p.get(k)}" for k in varying)]) for r, p in zip(runs, parsed)]


_PASS_KEY = re.compile(r"^(?P<prefix>\w*?)_?pass@(?P<k>\d+)(?:_turn(?P<turn>\d+))?$")


def _metric_order(key: str) -> tuple:
    """pass@k by k first, then greedy and other prefixed rates, then turn-by-turn pass@1 by turn."""
    m = _PASS_KEY.match(key)
    if not m:
        return (3, 0, 0, key)
    group = 2 if m["turn"] else 1 if m["prefix"] else 0
    return (group, int(m["turn"] or 0), int(m["k"]), key)


def metric_names(record: dict) -> list[str]:
    """The rate metrics of a record: pass@k by k, greedy/other pass rates, pass@1 per turn, then execution rate."""
    passes = sorted((k for k, v in record.items() if "pass@" in k and isinstance(v, (int, float))
                     and not isinstance(v, bool)), key=_metric_order)
    return [*passes, "execution_rate"] if "execution_rate" in record else passes


def display_name(metric: str) -> str:
    if metric == "execution_rate":
        return "Execution Rate"
    m = _PASS_KEY.match(metric)
    if not m:
        return metric
    name = f"Pass@{m['k']}"
    if m["prefix"] == "greedy":
        name = f"Greedy {name}"
    elif m["prefix"] == "repair":  # older runs: one repair turn (sampler.repair_turn)
        name += " after repair"
    elif m["prefix"]:
        name = f"{m['prefix']} {name}"
    return f"{name} turn {m['turn']}" if m["turn"] else name


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_").lower() or "run"


def metrics_frame(runs: list[RunData], labels: list[str]) -> pd.DataFrame:
    """One row per (job, iteration, metric): value and its bootstrap CI (NaN when not recorded)."""
    rows = []
    for job, (run, label) in enumerate(zip(runs, labels)):
        for rec in run.records:
            for m in metric_names(rec):
                lo, hi = rec.get("ci", {}).get(m, (float("nan"), float("nan")))
                rows.append(dict(label=label, job=job, seed=run.seed, iteration=rec["iteration"], metric=m,
                                 value=float(rec[m]), lo=lo, hi=hi))
    return pd.DataFrame(rows, columns=["label", "job", "seed", "iteration", "metric", "value", "lo", "hi"])


def errors_frame(runs: list[RunData], labels: list[str]) -> pd.DataFrame:
    """Error frequency per type at the initial and final evaluation; types a job never hit count as 0."""
    types = sorted({t for r in runs for rec in (r.initial, r.final) for t in rec.get("error_frequencies", {})})
    rows = []
    for job, (run, label) in enumerate(zip(runs, labels)):
        for stage, rec in (("initial", run.initial), ("final", run.final)):
            for t in types:
                rows.append(dict(label=label, job=job, seed=run.seed, stage=stage, error_type=t,
                                 frequency=float(rec.get("error_frequencies", {}).get(t, 0.0))))
    return pd.DataFrame(rows, columns=["label", "job", "seed", "stage", "error_type", "frequency"])


def loss_frame(runs: list[RunData], labels: list[str]) -> pd.DataFrame:
    """Training loss against a global step that continues across iterations (each restarts at step 1)."""
    rows = []
    for job, (run, label) in enumerate(zip(runs, labels)):
        offset = 0
        for it, log in run.train_logs.items():
            steps = [int(e.get("step", i + 1)) for i, e in enumerate(log)]
            for e, step in zip(log, steps):
                if "loss" in e:
                    rows.append(dict(label=label, job=job, seed=run.seed, iteration=it, step=offset + step,
                                     loss=float(e["loss"])))
            offset += max(steps, default=0)
    return pd.DataFrame(rows, columns=["label", "job", "seed", "iteration", "step", "loss"])


def group_runs(runs: list[RunData], labels: list[str]) -> dict[str, list[RunData]]:
    """Runs by label, in order of first appearance."""
    groups: dict[str, list[RunData]] = defaultdict(list)
    for run, label in zip(runs, labels):
        groups[label].append(run)
    return dict(groups)
