"""Multi-turn evaluation on real executions: public-test feedback, hidden-test verdicts, metrics from the files."""

import torch

from ieta.config import validate
from ieta.data import load_problems
from ieta.evaluate import evaluate
from ieta.io import read_jsonl, write_jsonl
from ieta.metrics import compute_metrics
from ieta.models import load_model, load_tokenizer
from tests.conftest import TINY, compose_config

PROBLEMS = load_problems("humaneval", limit=3)[1:]  # separate_paren_groups, truncate_number


def tiny(cfg):
    return load_model("tiny", torch.float32, "cpu", random_init=cfg.model.random_init, seed=0), load_tokenizer("tiny")


def test_turns_greedy_and_their_metrics_come_from_the_executions_on_disk(tmp_path):
    cfg = validate(compose_config([*TINY, "sampler.turns=3", "sampler.greedy_eval=true", "sampler.feedback=trace"]))
    model, tok = tiny(cfg)
    record = evaluate(model, tok, PROBLEMS, cfg, iteration=0, seed=1, out_dir=tmp_path)
    first = read_jsonl(tmp_path / "eval_executions.jsonl")
    assert record["pass@1_turn1"] == record["pass@1"] == compute_metrics(first, [1])["pass@1"]
    assert record["multi_turn"] == {"max_turns": 3, "feedback": "trace", "revised": "main",
                                    "protocol": "public-test feedback, hidden-test verdict"}
    failing = {(r["task_id"], r["completion_id"]) for r in first if not r["passed"]}
    for t in (2, 3):
        fb = read_jsonl(tmp_path / f"eval_turn{t}_feedback.jsonl")
        revised = read_jsonl(tmp_path / f"eval_turn{t}_executions.jsonl")
        assert {(r["task_id"], r["completion_id"]) for r in revised} <= failing
        assert all(r["turn"] == t and r["repair_of"] == r["completion_id"] for r in revised)
        assert all(f["public_asserts"] is not None and f["feedback"] for f in fb)  # from real public runs
        hidden_only = "123.456"  # truncate_number's hidden input, not among its public examples
        assert not any(hidden_only in f["feedback"] for f in fb)
    assert record["pass@1_turn1"] <= record["pass@1_turn2"] <= record["pass@1_turn3"]
    greedy = read_jsonl(tmp_path / "eval_greedy_executions.jsonl")
    assert len(greedy) == len(PROBLEMS) and record["greedy_pass@1"] == compute_metrics(greedy, [1])["pass@1"]
    assert all(s["temperature"] == 0.0 for s in read_jsonl(tmp_path / "eval_greedy_samples.jsonl"))


def test_revise_greedy_revises_the_greedy_samples_at_t0(tmp_path):
    cfg = validate(compose_config([*TINY, "sampler.turns=2", "sampler.greedy_eval=true", "sampler.revise=greedy",
                                   "sampler.temperature=0.8"]))
    model, tok = tiny(cfg)
    record = evaluate(model, tok, PROBLEMS, cfg, iteration=0, seed=1, out_dir=tmp_path)
    greedy = read_jsonl(tmp_path / "eval_greedy_executions.jsonl")
    assert record["pass@1_turn1"] == record["greedy_pass@1"] == compute_metrics(greedy, [1])["pass@1"]
    assert record["multi_turn"]["revised"] == "greedy" and not (tmp_path / "eval_turn2_samples.jsonl").exists()
    revised = read_jsonl(tmp_path / "eval_greedy_turn2_samples.jsonl")
    assert {(r["task_id"], r["repair_of"]) for r in revised} == {
        (r["task_id"], r["completion_id"]) for r in greedy if not r["passed"]}
    assert all(r["temperature"] == 0.0 for r in revised)


def test_a_revision_that_passes_its_hidden_tests_counts_at_its_turn_and_after(tmp_path):
    cfg = validate(compose_config([*TINY, "sampler.turns=3", "sampler.feedback=tests"]))
    model, tok = tiny(cfg)
    wrong = [{"task_id": p.task_id, "completion_id": j, "completion": "    return None\n"}
             for p in PROBLEMS for j in range(2)]
    write_jsonl(tmp_path / "eval_samples.jsonl", wrong)  # the stage's files: reused, then executed for real
    fixed = dict(wrong[2], completion=PROBLEMS[1].canonical_solution, repair_of=0, turn=2)
    write_jsonl(tmp_path / "eval_turn2_samples.jsonl", [fixed])
    record = evaluate(model, tok, PROBLEMS, cfg, iteration=0, seed=1, out_dir=tmp_path)
    assert record["pass@1"] == 0.0 and record["pass@1_turn2"] == 0.25
    assert record["pass@1_turn3"] >= 0.25 and record["multi_turn"]["feedback"] == "tests"
    turn3 = read_jsonl(tmp_path / "eval_turn3_executions.jsonl")
    assert len(turn3) == 3 and (PROBLEMS[1].task_id, 0) not in {(r["task_id"], r["completion_id"]) for r in turn3}
