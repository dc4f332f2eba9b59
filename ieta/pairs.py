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
    }


def build_pairs(problems: Sequence[Problem], executions: Sequence[dict], cfg: PairsConfig, *,
                prompt_for: Callable[[Problem], str], iteration: int,
                references: Sequence[dict] = ()) -> list[dict]:
    """``pass_fail`` pairs per problem, capped and deduplicated.

    ``references`` are executed canonical solutions (``completion_id`` ``"reference"``); one that passed stands in
    as ``chosen`` for a problem where no sample passed, when ``cfg.reference_fallback`` is on.
    """
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in executions:
        by_task[r["task_id"]].append(r)
    passing_refs = {r["task_id"]: r for r in references if r["passed"]}
    rank = {o: i for i, o in enumerate(cfg.reject_preference)}
    pairs: list[dict] = []
    for problem in problems:
        records = by_task.get(problem.task_id, [])
        passing = _unique([r for r in records if r["passed"]])
        failing = _unique(sorted((r for r in records if not r["passed"] and r["outcome"] in rank),
                                 key=lambda r: (rank[r["outcome"]], str(r["completion_id"]))))
        strategy = "pass_fail"
        if not passing and cfg.reference_fallback and problem.task_id in passing_refs:
            passing, strategy = [passing_refs[problem.task_id]], "pass_fail_reference"
        if not passing or not failing:
            continue
        prompt = prompt_for(problem)
        count = min(cfg.max_per_problem, max(len(passing), len(failing)))
        pairs += [_pair(prompt, passing[i % len(passing)], failing[i % len(failing)], strategy, iteration)
                  for i in range(count)]
    return pairs
