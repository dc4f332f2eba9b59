"""The evaluate stage, called directly: real samples from the tiny model, real executions, metrics from them."""

import torch

from ieta.config import validate
from ieta.data import load_problems
from ieta.evaluate import evaluate
from ieta.io import read_jsonl
from ieta.models import load_model, load_tokenizer
from tests.conftest import TINY, compose_config


def test_evaluate_writes_samples_and_executions_and_reuses_them(tmp_path):
    cfg = validate(compose_config(TINY))
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=cfg.model.random_init, seed=0)
    problems = load_problems("humaneval", limit=2)
    record = evaluate(model, tok, problems, cfg, iteration=0, seed=1, out_dir=tmp_path)
    executions = read_jsonl(tmp_path / "eval_executions.jsonl")
    assert len(read_jsonl(tmp_path / "eval_samples.jsonl")) == len(executions) == 2 * cfg.sampler.n
    assert record["iteration"] == 0 and record["num_samples"] == len(executions)
    assert record["pass@1"] == sum(e["passed"] for e in executions) / len(executions)
    executed = sum(e["outcome"] in ("passed", "failed") for e in executions) / len(executions)
    assert record["execution_rate"] == executed
    # a second call finds the stage's files and computes the same record without sampling again
    assert evaluate(None, tok, problems, cfg, iteration=0, seed=1, out_dir=tmp_path) == record
