"""Execute samples against their problems' tests in the sandbox; the pipeline and the CLI share this.

Samples file policy: every line is validated before anything runs.  A bad JSON line, an unknown
``task_id`` or a missing/ill-typed field is reported with its line number and nothing is executed
(exit code 2), unless ``--skip-invalid`` is given: then the valid samples run, and the invalid lines
are listed (file:line and reason) on stderr and in ``<out>.rejected.jsonl``.  No valid record is dropped.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence

from ieta.data import Problem, load_problems
from ieta.io import scan_jsonl, write_jsonl
from ieta.sandbox import SandboxConfig, SandboxError, isolation_summary
from ieta.sandbox.instrument import instrument_test, prompt_helpers
from ieta.sandbox.report import build_record, source_lines
from ieta.sandbox.runner import Pool

__all__ = ["SandboxConfig", "execute_samples", "load_samples", "main"]


def _problem_map(problems: Mapping[str, Problem] | Sequence[Problem]) -> dict[str, Problem]:
    if isinstance(problems, Mapping):
        return dict(problems)
    return {p.task_id: p for p in problems}


def validate_sample(sample: object, problems: Mapping[str, Problem]) -> str | None:
    """Why ``sample`` cannot run, or ``None``."""
    if not isinstance(sample, dict):
        return f"expected a JSON object, got {type(sample).__name__}"
    for key in ("task_id", "completion"):
        if not isinstance(sample.get(key), str):
            return f"missing or non-string field {key!r}"
    if sample["task_id"] not in problems:
        return f"unknown task_id {sample['task_id']!r}"
    return None


def _request(problem: Problem, completion: str, config: SandboxConfig, trace: bool) -> tuple[dict, object]:
    candidate = problem.prompt + completion
    offset = len(source_lines(candidate))  # the test's lines are numbered after the candidate's
    test = instrument_test(problem.test, offset)
    req = {"candidate": candidate, "helpers": prompt_helpers(problem.prompt, problem.entry_point), "test": test.code,
           "test_line_offset": offset,
           "entry_point": problem.entry_point, "timeout": min(config.timeout, 1.0) if trace else config.timeout,
           "trace": trace, "trace_max_events": config.trace_max_events, "trace_repr_chars": config.trace_repr_chars}
    return req, test


def _run(pool: Pool, pmap: dict[str, Problem], samples: Sequence[dict], indices: list[int], config: SandboxConfig,
         trace: bool, on_done=None) -> list[dict]:
    """Records of ``samples[i]`` for ``i`` in ``indices``, in that order. The requests are built before the first
    one waits for the pool (whose zygotes boot meanwhile)."""
    jobs = [_request(pmap[samples[i]["task_id"]], samples[i]["completion"], config, trace) for i in indices]
    out = []
    for i, (req, test), resp in zip(indices, jobs, pool.map((j[0] for j in jobs), on_done)):
        p = pmap[samples[i]["task_id"]]
        out.append(build_record(resp, p.prompt + samples[i]["completion"], p.test, p.entry_point, test, config))
    return out


def execute_samples(problems: Mapping[str, Problem] | Sequence[Problem], samples: Sequence[dict],
                    config: SandboxConfig | None = None, progress: bool = True) -> list[dict]:
    """One record per sample, in input order (see ``ieta.sandbox.report`` for the fields).

    Failing samples are re-run under the line tracer (if ``config.trace``) so passing ones pay nothing.
    A ``sandbox_error`` (the sandbox failed, not the sample) is retried once; ``sandbox_retried`` says so.
    """
    config = config or SandboxConfig()
    pmap = _problem_map(problems)
    for i, s in enumerate(samples):
        if (why := validate_sample(s, pmap)) is not None:
            raise ValueError(f"sample {i}: {why}")
    if not samples:
        return []
    counters: dict[str, int] = defaultdict(int)
    records = []
    for s in samples:
        rec = dict(s)
        if rec.get("completion_id") is None:
            rec["completion_id"] = counters[s["task_id"]]
        counters[s["task_id"]] += 1
        records.append(rec)
    bar = None
    if progress:
        from tqdm.auto import tqdm  # (it imports asyncio: 50 ms that a quiet call does not pay)

        bar = tqdm(total=len(samples), desc="execute", unit="sample", dynamic_ncols=True)
    with Pool(config) as pool:  # the zygotes boot while the requests are built
        verdicts = _run(pool, pmap, samples, list(range(len(samples))), config, False, bar and bar.update)
        isolation = isolation_summary(pool.info | {"backend": config.backend})
        for rec, verdict in zip(records, verdicts):
            rec.update(verdict, isolation=isolation)
        if bar is not None:
            bar.close()
        again = [i for i, r in enumerate(records) if r["outcome"] == "sandbox_error"]
        for i, verdict in zip(again, _run(pool, pmap, samples, again, config, False)):
            records[i].update(verdict, sandbox_retried=True)
        failing = [i for i, r in enumerate(records) if not r["passed"] and r["outcome"] not in
                   ("syntax_error", "sandbox_error")]
        if config.trace and failing:
            for i, traced in zip(failing, _run(pool, pmap, samples, failing, config, True)):
                records[i]["line_trace"] = traced["line_trace"] or []
    return records


def load_samples(path: str, problems: Mapping[str, Problem]) -> tuple[list[dict], list[dict]]:
    """``(valid, rejected)``; a rejected entry names its line: ``{"line": "file:12", "error": ...}``."""
    valid, rejected = [], []
    for where, record, error in scan_jsonl(path):
        if error is None and (why := validate_sample(record, problems)) is not None:
            error = why
        if error is None:
            valid.append(record)
        else:
            rejected.append({"line": where, "error": error})
    return valid, rejected


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ieta.execute", description=__doc__.split("\n")[0])
    ap.add_argument("--problems", required=True, help="'humaneval' or a JSONL file in HumanEval's schema")
    ap.add_argument("--samples", required=True, help="JSONL with task_id and completion per line")
    ap.add_argument("--out", required=True, help="results JSONL, one record per sample, input order")
    ap.add_argument("--workers", type=int, default=None, help="parallel sandboxes (default: CPU count)")
    ap.add_argument("--timeout", type=float, default=None, help="per-sample wall clock, seconds")
    ap.add_argument("--backend", choices=("process", "bwrap"), default=None, help="sandbox back-end")
    ap.add_argument("--no-trace", action="store_true", help="skip line traces of failing samples")
    ap.add_argument("--skip-invalid", action="store_true",
                    help="run the valid samples and list invalid lines instead of stopping")
    ap.add_argument("--allow-weaker", action="store_true",
                    help="run even where a required isolation feature is missing (sandbox.allow_weaker)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in (("workers", args.workers), ("timeout", args.timeout),
                                   ("backend", args.backend)) if v is not None}
    try:
        config = SandboxConfig(**overrides, **({"trace": False} if args.no_trace else {}),
                               **({"allow_weaker": True} if args.allow_weaker else {}))
        problems = {p.task_id: p for p in load_problems(args.problems)}
        samples, rejected = load_samples(args.samples, problems)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in rejected:
        print(f"error: {r['line']}: {r['error']}", file=sys.stderr)
    if rejected and not args.skip_invalid:
        print(f"error: {len(rejected)} invalid line(s); nothing was run (use --skip-invalid to run the rest)",
              file=sys.stderr)
        return 2
    if rejected:
        write_jsonl(args.out + ".rejected.jsonl", rejected)
    try:
        records = execute_samples(problems, samples, config, progress=not args.quiet)
    except SandboxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    write_jsonl(args.out, records)
    n_pass = sum(r["passed"] for r in records)
    n_err = sum(r["outcome"] == "sandbox_error" for r in records)
    print(f"{n_pass}/{len(records)} passed" + (f", {n_err} sandbox errors (not the samples' fault)" if n_err else "")
          + f" -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
