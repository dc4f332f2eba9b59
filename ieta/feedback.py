"""Feedback on a failed attempt, built ONLY from its execution on the problem's public tests.

``feedback(problem, public_record, mode)`` turns the sandbox record of a run on ``ieta.data.public_problem(problem)``
into the text a policy sees before it revises. The hidden tests never reach this module: the verdict and the rewards
come from them elsewhere. Everything the candidate wrote or produced (exception messages, values, locals, source
lines, output) is quoted as a JSON string and truncated, so it reads as data and cannot pose as instructions.

Modes (``sampler.feedback``, ``method.interactive.feedback``):

* ``trace``: outcome, public tests passed, the failing public example with expected and actual, the error and its
  line, and the last lines of the line-level trace with their locals;
* ``tests``: pass/fail per public test only (which example failed, no values, no error, no trace);
* ``none``: no information (the same turns and samples: a plain retry).
"""

from __future__ import annotations

import ast
import json

from ieta.data import Problem
from ieta.sandbox.report import source_lines

MODES = ("trace", "tests", "none")
#: characters kept of one candidate-written string (a message, a value, a line)
MAX_CHARS = 160
#: trace events shown (the last ones)
MAX_TRACE_LINES = 8
#: locals shown per trace event
MAX_LOCALS = 6


def as_data(value: object) -> str:
    """``value`` JSON-encoded on one line, in ASCII, with nothing in it that a tokenizer, its normalizer or a line split
    reads as more than text: the one way candidate-written text enters a prompt (feedback here, the AI judge's prompt
    in ``ieta.rewards``). ``<`` is escaped too: it opens the text of a special token (``<|im_end|>``, ``<tool_call>``),
    which the tokenizer turns into the token itself; every non-ASCII character is (``ensure_ascii``): U+2028, U+2029
    and U+0085 end a line for ``str.splitlines`` (a completion-format prompt comments each line), and a normalizer
    turns U+1FEF into a backtick."""
    return json.dumps(value).replace("<", "\\u003c")


def quote(value: object, limit: int = MAX_CHARS) -> str:
    """``value`` as a JSON string literal (``as_data``), truncated to ``limit`` characters (the cut is marked)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + f"...[{len(text) - limit} more chars]"
    return as_data(text)


def public_asserts(problem: Problem) -> list[str]:
    """The source of each top-level ``assert`` of the problem's public ``check`` (in order)."""
    if not problem.public_test:
        return []
    try:
        tree = ast.parse(problem.public_test)
    except SyntaxError:
        return []
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    body = check.body if check is not None else []
    return [ast.get_source_segment(problem.public_test, n) or ast.unparse(n) for n in body if isinstance(n, ast.Assert)]


def _source(problem: Problem, record: dict) -> list[str]:
    """The program's lines as Python numbers them (the record's line numbers)."""
    return source_lines(problem.prompt + record.get("completion", ""))


def _tests_lines(problem: Problem, record: dict) -> list[str]:
    """Pass/fail per public test. Tests run in order and go on after a failed assert, so those before the first
    failure passed; an exception stops the run, and what follows it is marked not run."""
    asserts = public_asserts(problem)
    if not asserts:
        return ["Public tests: this problem shows no examples; only loading the code was checked."]
    failure = record.get("first_failure") or {}
    first = next((i for i, a in enumerate(asserts) if a.strip() == (failure.get("assert") or "").strip()), None)
    passed = record.get("asserts_passed", 0)
    lines = [f"Public tests passed: {passed} of {len(asserts)}"]
    if record["passed"]:
        return lines + [f"  passed: {a}" for a in asserts]
    if first is None:  # the code failed before any public test ran (syntax, import, definition, timeout)
        return lines + [f"  not run: {a}" for a in asserts]
    rest = asserts[first + 1:]
    later_passed = passed - first
    stopped = record["outcome"] != "failed"  # an exception (not a wrong answer) ended the run
    later = ("not run" if stopped else "passed" if later_passed == len(rest) else "failed" if later_passed == 0
             else f"{later_passed} of these {len(rest)} passed")
    return (lines + [f"  passed: {a}" for a in asserts[:first]] + [f"  FAILED: {asserts[first]}"]
            + [f"  {later}: {a}" for a in rest])


def _trace_lines(problem: Problem, record: dict) -> list[str]:
    source = _source(problem, record)
    asserts = public_asserts(problem)
    parts = [f"Outcome: {record['outcome']}"]
    if asserts:
        parts.append(f"Public tests passed: {record.get('asserts_passed', 0)} of {len(asserts)}")
    else:
        parts.append("Public tests: this problem shows no examples; only loading the code was checked.")
    failure = record.get("first_failure")
    if failure and failure.get("assert"):
        parts.append(f"Failing example: {failure['assert'].strip()}")
        if failure.get("expected") is not None:
            parts.append(f"Expected: {quote(failure['expected'])}\nGot: {quote(failure.get('actual'))}")
    if record.get("exception") and record["outcome"] != "failed":
        parts.append(f"Error: {record['exception']}: {quote(record.get('message') or '')}")
        line = record.get("line")
        if line and 0 < line <= len(source):
            parts.append(f"At line {line}: {quote(source[line - 1].strip())}")
    trace = record.get("line_trace") or []
    if trace:
        shown = []
        for event in trace[-MAX_TRACE_LINES:]:
            n = event.get("line") or 0
            code = quote(source[n - 1].strip()) if 0 < n <= len(source) else '""'
            local_vars = list((event.get("locals") or {}).items())[:MAX_LOCALS]
            values = ", ".join(f"{name}={quote(v, 60)}" for name, v in local_vars)
            shown.append(f"  line {n}: {code}" + (f"    # {values}" if values else ""))
        parts.append(f"Last executed lines ({len(shown)} of {len(trace)} traced):\n" + "\n".join(shown))
    return parts


def feedback(problem: Problem, public_record: dict, mode: str) -> str:
    """Feedback text for an attempt, from ``public_record`` (its execution on the public tests) alone."""
    if mode not in MODES:
        raise ValueError(f"feedback mode must be one of {list(MODES)}; got {mode!r}")
    if mode == "none":
        return ""
    if public_record["passed"] and public_asserts(problem):
        head = "The public examples passed, but the function is still wrong on other inputs (not shown)."
    elif public_record["passed"]:
        head = "The code loads, but the function is still wrong (this problem shows no examples)."
    else:
        head = "The function failed on the public examples."
    body = _tests_lines(problem, public_record) if mode == "tests" else _trace_lines(problem, public_record)
    return "\n".join([head, *body])
