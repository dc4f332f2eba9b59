import json

import pytest

from ieta.data import load_problems, select_splits, split_problems


def test_humaneval_is_read_from_the_package():
    problems = load_problems("humaneval")
    assert len(problems) == 164
    assert problems[0].task_id == "HumanEval/0" and problems[0].canonical_solution
    assert len(load_problems("humaneval", limit=5)) == 5


def test_split_is_deterministic_and_disjoint():
    problems = load_problems("humaneval")
    train, evaluation = split_problems(problems, 0.5, 1234)
    assert {p.task_id for p in train}.isdisjoint(p.task_id for p in evaluation)
    assert len(train) + len(evaluation) == 164
    assert split_problems(problems, 0.5, 1234) == (train, evaluation)
    assert split_problems(problems, 0.5, 7) != (train, evaluation)


def test_split_modes():
    problems = load_problems("humaneval", limit=2)
    train, evaluation = select_splits(problems, "eval", 0.5, 0)
    assert len(train) == len(evaluation) == 1 and train != evaluation
    assert select_splits(problems, "all", 0.5, 0) == (problems, problems)
    train, evaluation = select_splits(problems, "train", 0.5, 0)
    assert train == evaluation and len(train) == 1


def test_jsonl_problems(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"task_id": "t/0", "prompt": "def f():\n", "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    [problem] = load_problems(str(path))
    assert problem.entry_point == "f" and problem.canonical_solution == ""


@pytest.mark.parametrize("line, message", [
    ("{not json", "p.jsonl:2: invalid JSON"),
    ('{"task_id": "t/1", "prompt": "x"}', "p.jsonl:2: missing"),
    ('{"task_id": "t/0", "prompt": "x", "test": "y", "entry_point": "f"}', "p.jsonl:2: duplicate task_id"),
])
def test_malformed_jsonl_names_the_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    good = json.dumps({"task_id": "t/0", "prompt": "x", "test": "y", "entry_point": "f"})
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        load_problems(str(path))


# ---------------------------------------------------------------- public tests


def test_public_tests_from_docstring_examples_in_each_style():
    from ieta.data import docstring_test

    prompt = ('def f(x):\n    """Doc.\n    >>> f(1)\n    [1,\n     2]\n    >>> f(2) == 3\n    f(3) ==> True\n'
              "    * f(4) => false\n    f(5) -> 'a' (a remark)\n    f(6) should return 2.50\n"
              '    f(7) = 19 - 5 - 6 = 8\n    f(8) ➞ ("x")\n    >>> f(9)\n    hello world\n    """\n')
    assert docstring_test(prompt, "f").splitlines() == [
        "def check(candidate):", "    assert candidate(1) == [1, 2]", "    assert candidate(2) == 3",
        "    assert candidate(3) == True", "    assert candidate(4) == False", "    assert candidate(5) == 'a'",
        "    assert round(candidate(6), 1) == 2.5"]  # 7 (prose after the value), 8 ("x" is not a tuple), 9 dropped
    assert docstring_test('def f(n):\n    """f(n) = f(n - 1) + 1\n    f(1) = 3\n    """\n', "f") == ""  # a recurrence


def test_public_problem_swaps_in_the_public_test_and_hides_the_answer():
    from ieta.data import EMPTY_CHECK, public_problem

    problems = load_problems("humaneval")
    with_examples = sum(bool(p.public_test) for p in problems)
    assert with_examples >= 130  # 135 of 164 with the rules of ieta.data.docstring_test
    p = public_problem(problems[2])
    assert p.test == problems[2].public_test and p.canonical_solution == "" and p.prompt == problems[2].prompt
    assert public_problem(problems[38]).test == EMPTY_CHECK


def test_every_canonical_solution_passes_its_public_tests_in_the_sandbox():
    from ieta.data import public_problem
    from ieta.execute import SandboxConfig, execute_samples

    problems = load_problems("humaneval")
    samples = [{"task_id": p.task_id, "completion": p.canonical_solution} for p in problems]
    records = execute_samples([public_problem(p) for p in problems], samples, SandboxConfig(timeout=5),
                              progress=False)
    assert [r["task_id"] for r in records if not r["passed"]] == []
    assert sum(r["asserts_total"] for r in records) >= 380  # 383 public asserts


def test_mbpp_shows_its_first_test_and_jsonl_may_give_public_tests(tmp_path):
    from ieta.data import _mbpp_to_problem

    row = {"task_id": 2, "text": "Add.", "code": "def add(a, b):\n    return a + b\n",
           "test_list": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"], "test_setup_code": ""}
    problem = _mbpp_to_problem(row)
    assert problem.public_test == "def check(candidate):\n    assert candidate(1, 2) == 3\n"
    assert "candidate(2, 2)" in problem.test and "(2, 2)" not in problem.public_test
    path = tmp_path / "p.jsonl"
    rows = [{"task_id": "t/0", "prompt": "def f():\n    '''Doc.\n    >>> f()\n    1\n    '''\n", "entry_point": "f",
             "test": "def check(c):\n    assert c() == 1\n", "public_test": "def check(c):\n    assert c() != 2\n"},
            {"task_id": "t/1", "prompt": "def f():\n    '''Doc.\n    >>> f()\n    1\n    '''\n", "entry_point": "f",
             "test": "def check(c):\n    assert c() == 1\n"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    given, parsed = load_problems(str(path))
    assert given.public_test == rows[0]["public_test"]
    assert parsed.public_test == "def check(candidate):\n    assert candidate() == 1\n"
