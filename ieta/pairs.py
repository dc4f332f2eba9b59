"""Preference pairs from execution traces: a passing completion is preferred over a failing one."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from ieta.config import PairsConfig
from ieta.data import Problem

#: Chosen completions end by closing the code block the prompt opened.
CLOSE_FENCE = "```"


def _unique(records: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for r in records:
        if r["completion"].strip() not in seen:
            seen.add(r["completion"].strip())
            out.append(r)
    return out


def _pair(prompt: str, chosen: dict, rejected: dict, strategy: str, iteration: int) -> dict:
    return {
        "task_id": rejected["task_id"], "strategy": strategy, "iteration": iteration, "prompt": prompt,
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
    for r in executions:
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
        passing = _unique([r for r in executions if r["task_id"] == problem.task_id and r["passed"]])
        if not passing and cfg.reference_fallback and problem.task_id in passing_refs:
            passing = [passing_refs[problem.task_id]]
        rows += [{"task_id": problem.task_id, "prompt": prompt_for(problem), "completion": r["completion"] + CLOSE_FENCE,
                  "completion_id": r["completion_id"]} for r in passing[: cfg.max_per_problem]]
    return rows
