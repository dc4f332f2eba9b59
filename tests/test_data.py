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
