"""Preference pairs from execution traces: a passing completion is preferred over a failing one."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from ieta.config import PairsConfig
from ieta.data import Problem
from ieta.metrics import model_records

#: Chosen completions end by closing the code block the prompt opened.
CLOSE_FENCE = "```"
#: Where a pair's ``chosen`` came from: the policy's own sample, the problem's canonical solution, or a repair turn.
CHOSEN_SOURCES = ("sample", "reference", "repair")


def _unique(records: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for r in records:
        if r["completion"].strip() not in seen:
            seen.add(r["completion"].strip())
            out.append(r)
    return out


def chosen_source(pair: dict) -> str:
    """``chosen_source`` of a pair (inferred from its strategy for pairs written before the field existed)."""
    if "chosen_source" in pair:
        return pair["chosen_source"]
    return {"pass_fail_reference": "reference", "repair": "repair"}.get(pair["strategy"], "sample")


def _pair(prompt: str, chosen: dict, rejected: dict, strategy: str, iteration: int) -> dict:
    source = ("reference" if chosen.get("completion_id") == "reference"
              else "repair" if "repair_of" in chosen else "sample")
    return {
        "task_id": rejected["task_id"], "strategy": strategy, "chosen_source": source, "iteration": iteration,
        "prompt": prompt,
        "chosen": chosen["completion"] + CLOSE_FENCE, "rejected": rejected["completion"] + CLOSE_FENCE,
        "chosen_id": chosen.get("completion_id"), "rejected_id": rejected["completion_id"],
        "chosen_outcome": chosen["outcome"], "rejected_outcome": rejected["outcome"],
        "rejected_error_type": rejected.get("error_type"),
        **({"repair_of": chosen["repair_of"]} if "repair_of" in chosen else {}),
    }


def _share(record: dict) -> float:
    return record["asserts_passed"] / record["asserts_total"] if record.get("asserts_total") else 0.0


def _graded(failing: list[dict], min_margin: float) -> list[tuple[dict, dict]]:
    """Between failing samples, prefer the one passing a larger share of the asserts (largest margins first)."""
    return sorted(((a, b) for a in failing for b in failing if _share(a) - _share(b) >= min_margin),
                  key=lambda ab: -(_share(ab[0]) - _share(ab[1])))


def build_pairs(problems: Sequence[Problem], executions: Sequence[dict], cfg: PairsConfig, *,
                prompt_for: Callable[[Problem], str], iteration: int,
                references: Sequence[dict] = (), repairs: Sequence[dict] = ()) -> list[dict]:
    """Pairs per problem from the configured strategies, deduplicated and capped at ``max_per_problem``.

    ``pass_fail``: a passing sample over a failing one (failures ranked by ``reject_preference``). ``references``
    are executed canonical solutions; one that passed stands in as ``chosen`` where no sample passed, when
    ``cfg.reference_fallback`` is on. ``graded``: between two failing samples, the one passing a larger share of the
    asserts, by at least ``graded_min_margin``. ``repair``: a failing sample loses to its own passing repair
    (``repairs`` are executed repair-turn samples naming the attempt they fix in ``repair_of``), under the original
    prompt, so the policy learns to write the fix at the first attempt, even where no sample passed.
    """
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in model_records(executions):  # a sandbox error says nothing about the sample: never in a pair
        by_task[r["task_id"]].append(r)
    passing_refs = {r["task_id"]: r for r in references if r["passed"]}
    fixed = {(r["task_id"], r["repair_of"]): r for r in repairs if r["passed"]}
    rank = {o: i for i, o in enumerate(cfg.reject_preference)}
    pairs: list[dict] = []
    for problem in problems:
        records = by_task.get(problem.task_id, [])
        passing = _unique([r for r in records if r["passed"]])
        failing = _unique(sorted((r for r in records if not r["passed"] and r["outcome"] in rank),
                                 key=lambda r: (rank[r["outcome"]], str(r["completion_id"]))))
        candidates: list[tuple[dict, dict, str]] = []
        for strategy in cfg.strategies:
            if strategy == "graded":
                candidates += [(a, b, "graded") for a, b in _graded(failing, cfg.graded_min_margin)]
                continue
            if strategy == "repair":
                candidates += [(fixed[key], r, "repair") for r in failing
                               if (key := (r["task_id"], r["completion_id"])) in fixed]
                continue
            chosen, name = passing, "pass_fail"
            if not chosen and cfg.reference_fallback and problem.task_id in passing_refs:
                chosen, name = [passing_refs[problem.task_id]], "pass_fail_reference"
            if chosen and failing:
                count = max(len(chosen), len(failing))
                candidates += [(chosen[i % len(chosen)], failing[i % len(failing)], name) for i in range(count)]
        seen: set[tuple[str, str]] = set()
        prompt = None
        for chosen, rejected, name in candidates:
            key = (chosen["completion"], rejected["completion"])
            if key in seen or len(seen) >= cfg.max_per_problem:
                continue
            seen.add(key)
            prompt = prompt or prompt_for(problem)
            pairs.append(_pair(prompt, chosen, rejected, name, iteration))
    return pairs


def sft_examples(problems: Sequence[Problem], executions: Sequence[dict], cfg: PairsConfig, *,
                 prompt_for: Callable[[Problem], str], references: Sequence[dict] = ()) -> list[dict]:
    """Rejection sampling: up to ``max_per_problem`` distinct passing completions per problem, as SFT targets
    (a passing canonical solution where no sample passed, when ``cfg.reference_fallback`` is on)."""
    passing_refs = {r["task_id"]: r for r in references if r["passed"]}
    rows = []
    for problem in problems:
        passing = _unique([r for r in model_records(executions) if r["task_id"] == problem.task_id and r["passed"]])
        if not passing and cfg.reference_fallback and problem.task_id in passing_refs:
            passing = [passing_refs[problem.task_id]]
        rows += [{"task_id": problem.task_id, "prompt": prompt_for(problem), "completion": r["completion"] + CLOSE_FENCE,
                  "completion_id": r["completion_id"]} for r in passing[: cfg.max_per_problem]]
    return rows


def pairs_stats(pairs: Sequence[dict]) -> dict:
    """What the pairs of one iteration are made of: counts by ``chosen_source`` and strategy, and the share of pairs
    whose ``chosen`` is a canonical solution (DPO on those distils the references rather than the policy's own
    successes)."""
    sources = Counter(chosen_source(p) for p in pairs)
    return {"pairs": len(pairs), "problems": len({p["task_id"] for p in pairs}),
            "chosen_source": {s: sources.get(s, 0) for s in CHOSEN_SOURCES},
            "strategy": dict(sorted(Counter(p["strategy"] for p in pairs).items())),
            "canonical_share": sources.get("reference", 0) / len(pairs) if pairs else None}
