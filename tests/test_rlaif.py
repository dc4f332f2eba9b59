"""GRPO (rlaif) really updates the LoRA weights of a tiny random Qwen2, with both rewards wired in."""

import zlib

import pytest
import torch
from safetensors.torch import load_file

import ieta.rewards as rewards
from ieta.canaries import is_canary_id
from ieta.config import ConfigError
from ieta.data import load_problems
from ieta.io import read_json, read_jsonl, write_jsonl
from ieta.models import load_model, load_tokenizer
from ieta.methods.rlaif import RlaifSettings, _judge, train_rlaif, unsolved
from tests.conftest import TINY, compose_config

#: two completions of 8 tokens per prompt, one GRPO step, no gradient checkpointing: about 15 s on 2 busy cores
FAST = ["method=rlaif", "method.per_device_train_batch_size=2", "method.learning_rate=1e-2",
        "method.rlaif.num_generations=2", "method.rlaif.max_completion_length=8", "sandbox.timeout=1",
        "+method.trainer.gradient_checkpointing=false"]


def text_hash_reward(prompts, completions, task_id, **kwargs):
    """Distinct random completions get distinct rewards, so GRPO's advantages are non-zero (TRL's test pattern):
    a random model's completions all fail to execute alike, which would leave the weights unchanged. Like every
    reward, it gives canaries none."""
    return [None if is_canary_id(t) else zlib.crc32(c.encode()) % 1000 / 1000 for c, t in zip(completions, task_id)]


def test_grpo_step_changes_lora_weights_and_logs_both_rewards(tmp_path, monkeypatch):
    """Batch of 8 = 4 prompts x 2: both problems and both canaries are drawn in the one step; the canaries' and
    only the canaries' completions get zero advantage (observed on TRL's own scoring of the batch)."""
    from trl import GRPOTrainer

    monkeypatch.setitem(rewards.REWARDS, "text_hash", text_hash_reward)
    scored = []
    score = GRPOTrainer._generate_and_score_completions

    def observe(self, inputs):
        out = score(self, inputs)
        scored.append(([x["task_id"] for x in inputs], out["advantages"].tolist()))
        return out

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", observe)
    cfg = compose_config(TINY + FAST + ["+method.rlaif.reward_weights.text_hash=1.0",
                                        "method.per_device_train_batch_size=8", "method.rlaif.canaries=2"])
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=cfg.model.random_init, seed=0)
    problems = load_problems("humaneval", limit=2)

    policy = train_rlaif(model, tok, problems, cfg, steps=1, out_dir=tmp_path, seed=0, progress=False)
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: non-zero means trained
    assert policy.peft_config

    [step, *_] = read_jsonl(tmp_path / "train_log.jsonl")
    for key in ("loss", "rewards/execution_reward/mean", "rewards/judge_reward/mean", "execution/pass_rate",
                "judge/unparsable", "reward/hack_rate"):
        assert key in step, key
    stats = read_json(tmp_path / "judge_stats.json")
    assert stats["enabled"] and stats["model"] == "policy" and stats["answers"] == 4  # 2 problems x 2, no canary
    assert stats["unparsable"] == step["judge/unparsable"] and "agreement_with_tests" in stats
    assert step["reward/hack_rate"] == 0.0
    assert read_json(tmp_path / "canary_stats.json") == {"canaries": 2, "completions": 4, "passes": 0,
                                                          "hack_rate": 0.0, "sandbox_escape": False}
    [(task_ids, advantages)] = scored
    assert sorted(map(is_canary_id, task_ids)) == [False] * 4 + [True] * 4
    assert all(a == 0 for t, a in zip(task_ids, advantages) if is_canary_id(t))
    assert any(a != 0 for t, a in zip(task_ids, advantages) if not is_canary_id(t))


def test_judge_weight_zero_skips_the_judge():
    settings = RlaifSettings.from_config({"reward_weights": {"execution": 1.0, "judge": 0.0}})
    assert list(settings.active_rewards) == ["execution"]
    assert _judge(settings, policy=None, tokenizer=None) is None


def test_rlaif_yaml_validates_and_errors_name_the_key():
    cfg = compose_config(["method=rlaif"])
    settings = RlaifSettings.from_config(cfg.method.rlaif)
    assert settings.reward_weights == {"execution": 1.0, "judge": 0.5} and settings.judge.model is None
    assert settings.canaries == 2 and settings.judge.max_field_chars == 200
    for bad, key in [({"num_generations": 1}, "method.rlaif.num_generations"),
                     ({"canaries": -1}, "method.rlaif.canaries"),
                     ({"reward_weights": {"bogus": 1.0}}, "method.rlaif.reward_weights"),
                     ({"judge": {"max_new_tokens": "many"}}, "method.rlaif.judge.max_new_tokens"),
                     ({"typo": 1}, "method.rlaif.typo")]:
        with pytest.raises(ConfigError, match=key):
            RlaifSettings.from_config(bad)


def test_rlaif_trains_on_the_problems_not_every_sample_solved(tmp_path):
    problems = load_problems("humaneval", limit=3)
    ids = [p.task_id for p in problems]
    path = tmp_path / "executions.jsonl"
    write_jsonl(path, [{"task_id": ids[0], "passed": True}, {"task_id": ids[0], "passed": True},
                       {"task_id": ids[1], "passed": True}, {"task_id": ids[1], "passed": False},
                       {"task_id": ids[2], "passed": False}])
    assert [p.task_id for p in unsolved(problems, path)] == ids[1:]
    write_jsonl(path, [{"task_id": ids[0], "passed": True, "outcome": "passed"},
                       {"task_id": ids[0], "passed": False, "outcome": "sandbox_error"},
                       {"task_id": ids[1], "passed": False, "outcome": "failed"}])
    assert [p.task_id for p in unsolved(problems, path)] == ids[1:2]  # a sandbox error is not a failure
    write_jsonl(path, [{"task_id": i, "passed": True} for i in ids])
    assert unsolved(problems, path) == problems  # every one solved: nothing to prefer, train on all
    assert unsolved(problems, tmp_path / "missing.jsonl") == problems


def test_bench_train_grpo_times_the_steps_asked_for(capsys):
    """``python -m ieta.bench train --method grpo --steps N`` times N steps after the warm-up, whatever the preset's
    own ``method.rlaif.max_steps`` says (quick's is 2)."""
    from ieta.bench.train import main as bench

    assert bench(["--method", "grpo", "--problems", "2", "--steps", "3", "--warmup", "0", "model=tiny",
                  "method.rlaif.max_completion_length=16"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("grpo"))
    assert "(median of 3; steps " in line and "ms per completion token" in line, line
