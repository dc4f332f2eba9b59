"""What a verdict means: decoding an answer is the judge's cost, not the candidate's (a huge answer that came at once
fails, well within the timeout), and a candidate's exception is caught, and classed, as what it is, not by its name."""

from __future__ import annotations

import pytest

from ieta.data import Problem
from ieta.execute import SandboxConfig, execute_samples

TIMEOUT = 3.0
ADD = Problem("sem/add", "def add(a, b):\n", "def check(candidate):\n    assert candidate(1, 2) == 3\n"
              "    assert candidate(2, 2) == 4\n", "add")
RANGE = Problem("sem/range", "def upto(n):\n", "def check(candidate):\n    assert candidate(10) == list(range(10))\n"
                "    assert candidate(100000) == list(range(100000))\n", "upto")
# the test expects a ValueError for a negative argument (as HumanEval-style tests do with try/except)
RAISES = Problem("sem/sqrt", "def root(x):\n", "def check(candidate):\n    assert candidate(4) == 2\n"
                 "    try:\n        candidate(-1)\n        assert False, 'no ValueError'\n    except ValueError:\n"
                 "        pass\n", "root")
POSITIVE = "    if x >= 0:\n        return int(x ** 0.5)\n"
# an honest test that calls often for moderate answers: 2,000 lists of 600, more than one answer's budget in all
MANY = Problem("sem/many", "def upto(n):\n", "def check(candidate):\n    for _ in range(2000):\n"
               "        assert candidate(600) == list(range(600))\n", "upto")


def _raw_reply(expr: str) -> str:
    """A body that writes the frame of ``("ret", <expr>)`` itself on the reply channel (fd 4), as marshal makes it."""
    return ("    import os, marshal\n    body = marshal.dumps(('ret', " + expr + "), 2)\n"
            "    os.write(4, len(body).to_bytes(4, 'little') + body)\n    return a + b\n")


HUGE = {  # each answers at once (in far less than the timeout) with something that takes long to decode
    "big_int": (ADD, "    return 1 << 3 * 10**6\n"),
    "many_nones": (ADD, "    return [None] * (30 * 2**20)\n"),
    "many_lists": (ADD, "    return [[]] * (15 * 2**20)\n"),
    "long_range": (ADD, "    return list(range(5*10**6))\n"),
    # frames the candidate writes itself (its process's copy and its check bypassed): the judge's own budget
    "raw_many_lists": (ADD, _raw_reply("[[]] * (6 * 2**20)")),  # each list counted: refused before decoding
    "raw_big_dict": (ADD, _raw_reply("dict.fromkeys(range(2**20), [[]] * 4)")),  # no count: refused on the way
    "raw_huge_int": (ADD, _raw_reply("1 << 15 * 2**21")),
}
EXCEPTIONS = {  # (problem, body, expected outcome)
    # a class merely named ValueError is no ValueError: the test's ``except ValueError`` does not catch it
    "fake_value_error": (RAISES, POSITIVE + "    raise type('ValueError', (Exception,), {})('negative')\n",
                         "runtime_error"),
    # a real subclass of ValueError is one: json's, and the candidate's own
    "json_decode_error": (RAISES, POSITIVE + "    import json\n    return json.loads('not json')\n", "passed"),
    "own_value_error": (RAISES, POSITIVE + "    class Negative(ValueError):\n        pass\n    raise Negative(x)\n",
                        "passed"),
    "real_value_error": (RAISES, POSITIVE + "    raise ValueError(x)\n", "passed"),
    # a class named MemoryError is no memory limit
    "fake_memory_error": (ADD, "    raise type('MemoryError', (Exception,), {})()\n", "runtime_error"),
    "fake_memory_error_in_test": (RAISES, POSITIVE + "    raise type('MemoryError', (Exception,), {})()\n",
                                  "runtime_error"),
}


@pytest.fixture(scope="module")
def records():
    cases = {**{k: (p, b) for k, (p, b) in HUGE.items()}, **{k: (p, b) for k, (p, b, _) in EXCEPTIONS.items()},
             "long_right_answer": (RANGE, "    return list(range(n))\n"),
             "long_wrong_answer": (RANGE, "    return list(range(n + 1))\n"),
             "many_moderate_answers": (MANY, "    return list(range(n))\n")}
    samples = [{"task_id": p.task_id, "completion": b, "case": name} for name, (p, b) in cases.items()]
    config = SandboxConfig(workers=1, timeout=TIMEOUT, trace=False, base_uid=65000)
    recs = execute_samples([ADD, RANGE, RAISES, MANY], samples, config, progress=False)
    return {r["case"]: r for r in recs}


@pytest.mark.parametrize("name", sorted(HUGE))
def test_a_huge_answer_fails_well_within_the_timeout(records, name):
    rec = records[name]
    assert rec["outcome"] == "failed", (rec["outcome"], rec["message"])
    assert rec["duration_s"] < TIMEOUT / 3, rec["duration_s"]


def test_a_huge_answer_past_the_budget_says_so(records):
    for name in ("many_nones", "many_lists", "long_range", "raw_many_lists", "raw_big_dict", "raw_huge_int"):
        assert "non-data" in records[name]["message"] and "budget" in records[name]["message"], \
            (name, records[name]["message"])


def test_a_long_answer_within_the_budget_is_judged(records):
    assert records["long_right_answer"]["outcome"] == "passed"
    rec = records["long_wrong_answer"]
    assert rec["outcome"] == "failed" and rec["asserts_passed"] == 0 and "budget" not in rec["message"]


@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
def test_an_exception_is_caught_and_classed_as_its_class_not_its_name(records, name):
    rec = records[name]
    assert rec["outcome"] == EXCEPTIONS[name][2], (rec["outcome"], rec["exception"], rec["message"])
    assert rec["passed"] is (EXCEPTIONS[name][2] == "passed")


def test_a_fake_builtin_name_is_recorded_as_its_builtin(records):
    assert records["fake_memory_error"]["exception"] == "Exception"
    assert records["fake_memory_error"]["error_type"] == "Other"
    assert records["fake_value_error"]["exception"] == "Exception"
    assert records["fake_value_error"]["error_type"] == "Other"


def test_the_budget_is_each_answers_not_the_samples(records):
    """A correct solution that a test calls 2,000 times for lists of 600 passes: shared by all of a sample's answers,
    the budget failed it as a non-data answer."""
    rec = records["many_moderate_answers"]
    assert rec["outcome"] == "passed", (rec["outcome"], rec["message"])
