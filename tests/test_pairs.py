from ieta.config import PairsConfig
from ieta.data import Problem
from ieta.pairs import build_pairs

P = Problem("t/0", "def f():\n", "def check(c):\n    assert c() == 1\n", "f", "    return 1\n")


def rec(cid, passed, outcome, completion=None, task="t/0"):
    return {"task_id": task, "completion_id": cid, "completion": completion or f"    return {cid}\n",
            "passed": passed, "outcome": outcome, "error_type": None if passed else "X"}


def build(executions, cfg=PairsConfig(), refs=()):
    return build_pairs([P], executions, cfg, prompt_for=lambda p: "PROMPT", iteration=1, references=refs)


def test_pass_fail_pairs_prefer_runtime_errors_and_record_provenance():
    ex = [rec(0, True, "passed"), rec(1, False, "failed"), rec(2, False, "runtime_error")]
    pairs = build(ex, PairsConfig(max_per_problem=1))
    assert len(pairs) == 1
    p = pairs[0]
    assert (p["chosen_id"], p["rejected_id"], p["rejected_outcome"]) == (0, 2, "runtime_error")
    assert p["prompt"] == "PROMPT" and p["chosen"].endswith("```") and p["iteration"] == 1


def test_cap_and_dedup():
    ex = [rec(0, True, "passed"), rec(1, True, "passed", "    return 11\n"), rec(2, True, "passed", "    return 11\n")]
    ex += [rec(i, False, "failed") for i in range(3, 9)]
    pairs = build(ex, PairsConfig(max_per_problem=4))
    assert len(pairs) == 4
    assert len({(p["chosen"], p["rejected"]) for p in pairs}) == 4
    assert {p["chosen_id"] for p in pairs} == {0, 1}  # sample 2 duplicates sample 1


def test_no_pairs_without_both_sides():
    assert build([rec(0, True, "passed")]) == []
    assert build([rec(0, False, "failed")], PairsConfig(reference_fallback=False)) == []


def test_reference_fallback_needs_a_passing_reference():
    failing = [rec(0, False, "syntax_error")]
    ref = rec("reference", True, "passed", P.canonical_solution)
    pairs = build(failing, refs=[ref])
    assert len(pairs) == 1 and pairs[0]["strategy"] == "pass_fail_reference"
    assert build(failing, refs=[dict(ref, passed=False, outcome="failed")]) == []


def test_graded_pairs_from_real_executions():
    """Two failing samples of HumanEval/2: the one passing more asserts (by the margin) is chosen."""
    from ieta.data import load_problems
    from ieta.execute import SandboxConfig, execute_samples

    problem = load_problems("humaneval", limit=3)[2]
    samples = [{"task_id": problem.task_id, "completion_id": i, "completion": c}
               for i, c in enumerate(["    return number\n", "    return 0.5\n", "    return 0.5 if number > 3 else 0.0\n"])]
    executions = execute_samples([problem], samples, config=SandboxConfig(timeout=5), progress=False)
    assert [e["asserts_passed"] for e in executions] == [0, 1, 1] and not any(e["passed"] for e in executions)
    pairs = build_pairs([problem], executions, PairsConfig(strategies=["pass_fail", "graded"], graded_min_margin=0.3),
                        prompt_for=lambda p: "P", iteration=2)
    assert {(p["chosen_id"], p["rejected_id"]) for p in pairs} == {(1, 0), (2, 0)}
    assert all(p["strategy"] == "graded" for p in pairs)
    assert build_pairs([problem], executions, PairsConfig(strategies=["graded"], graded_min_margin=0.5),
                       prompt_for=lambda p: "P", iteration=2) == []


def test_sft_examples_keep_distinct_passing_samples_and_fall_back_to_the_reference():
    from ieta.pairs import sft_examples

    ex = [rec(0, True, "passed"), rec(1, True, "passed", "    return 0\n"), rec(2, False, "failed")]
    rows = sft_examples([P], ex, PairsConfig(), prompt_for=lambda p: "PROMPT")
    assert [r["completion_id"] for r in rows] == [0] and rows[0]["completion"].endswith("```")
    ref = rec("reference", True, "passed", P.canonical_solution)
    rows = sft_examples([P], [rec(2, False, "failed")], PairsConfig(), prompt_for=lambda p: "PROMPT", references=[ref])
    assert [r["completion_id"] for r in rows] == ["reference"]


def test_repair_pairs_from_real_executions():
    """Where no sample passed, a failing sample loses to its own executed repair that passed (and only then)."""
    from ieta.data import load_problems
    from ieta.execute import SandboxConfig, execute_samples

    problem = load_problems("humaneval", limit=3)[2]  # truncate_number
    config = SandboxConfig(timeout=5)
    attempts = [{"task_id": problem.task_id, "completion_id": i, "completion": c}
                for i, c in enumerate(["    return number\n", "    return int(number)\n"])]
    executions = execute_samples([problem], attempts, config=config, progress=False)
    repairs = [{"task_id": problem.task_id, "completion_id": f"{i}-repair", "repair_of": i, "completion": c}
               for i, c in enumerate(["    return number % 1.0\n", "    return number\n"])]
    repaired = execute_samples([problem], repairs, config=config, progress=False)
    assert [r["passed"] for r in executions + repaired] == [False, False, True, False]
    pairs = build_pairs([problem], executions, PairsConfig(strategies=["repair"], reference_fallback=False),
                        prompt_for=lambda p: "P", iteration=1, repairs=repaired)
    assert [(p["chosen_id"], p["rejected_id"], p["strategy"], p["repair_of"]) for p in pairs] == [("0-repair", 0, "repair", 0)]
    assert pairs[0]["prompt"] == "P" and pairs[0]["chosen"] == "    return number % 1.0\n```"


def test_chosen_source_and_canonical_share_from_real_executions():
    """One problem solved by a sample, one only by its canonical solution: half the pairs are canonical."""
    from ieta.data import load_problems
    from ieta.execute import SandboxConfig, execute_samples
    from ieta.pairs import pairs_stats

    problems = load_problems("humaneval", limit=3)[1:]  # separate_paren_groups, truncate_number
    samples = [{"task_id": problems[1].task_id, "completion_id": 0, "completion": "    return number % 1.0\n"},
               {"task_id": problems[1].task_id, "completion_id": 1, "completion": "    return number\n"},
               {"task_id": problems[0].task_id, "completion_id": 2, "completion": "    return []\n"}]
    refs = [{"task_id": problems[0].task_id, "completion_id": "reference",
             "completion": problems[0].canonical_solution}]
    config = SandboxConfig(timeout=5)
    executions = execute_samples(problems, samples, config=config, progress=False)
    references = execute_samples(problems, refs, config=config, progress=False)
    pairs = build_pairs(problems, executions, PairsConfig(), prompt_for=lambda p: "P", iteration=1,
                        references=references)
    assert sorted((p["task_id"], p["chosen_source"]) for p in pairs) == [
        (problems[0].task_id, "reference"), (problems[1].task_id, "sample")]
    stats = pairs_stats(pairs)
    assert stats["canonical_share"] == 0.5 and stats["chosen_source"] == {"sample": 1, "reference": 1, "repair": 0}
    assert pairs_stats([])["canonical_share"] is None


def test_sandbox_errors_never_enter_pairs():
    """Not even as `rejected` under the graded strategy, which pairs any two failing records."""
    ex = [rec(0, False, "sandbox_error"), dict(rec(1, False, "failed"), asserts_passed=1, asserts_total=2)]
    cfg = PairsConfig(strategies=["pass_fail", "graded"], graded_min_margin=0.1, reference_fallback=False)
    assert build(ex, cfg) == []
    sft = __import__("ieta.pairs", fromlist=["sft_examples"]).sft_examples
    assert sft([P], [dict(rec(0, True, "passed"), outcome="sandbox_error")], cfg, prompt_for=lambda p: "P") == []
