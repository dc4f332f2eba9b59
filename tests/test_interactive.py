"""``method=interactive`` on the tiny model: episodes that really run in the sandbox, public feedback in the
prompt, hidden tests in the reward, environment tokens masked from the loss, and a LoRA that moves."""

import json

import pytest
import torch

from ieta.canaries import mix_in
from ieta.config import validate
from ieta.data import load_problems
from ieta.execute import SandboxConfig
from ieta.io import read_jsonl
from ieta.methods import get_method
from ieta.methods.interactive import ROLLOUTS_FILE, Episodes, InteractiveSettings, make_trainer
from ieta.models import load_model, load_tokenizer
from tests.conftest import TINY, compose_config

PROBLEM = load_problems("humaneval", limit=3)[2]  # truncate_number: public 3.5 -> 0.5; hidden also 1.33, 123.456
WRONG = "    return number\n```"  # fails the public example
PUBLIC_ONLY = "    return 0.5\n```"  # passes the public example, fails the hidden tests
RIGHT = "    return number % 1.0\n```"
SHORT = ["method=interactive", "method.interactive.num_generations=2", "method.per_device_train_batch_size=2",
         "method.interactive.max_completion_length=12", "method.interactive.max_steps=1", "method.interactive.canaries=0",
         "method.interactive.skip_solved=false", "method.learning_rate=0.01"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


def episodes(tok, mode="trace", turns=2, out_dir=None):
    settings = InteractiveSettings(max_turns=turns, feedback=mode, canaries=0)
    problems, monitor = mix_in([PROBLEM], 0, 0)
    return Episodes(problems, tok, "chat", SandboxConfig(timeout=5), settings, monitor, out_dir)


def scripted(tok, *turns):
    """A fixed policy: turn t answers ``turns[t-1]`` (with the end-of-turn token), whatever the context."""
    calls = []

    def generate(contexts):
        calls.append(contexts)
        text = turns[len(calls) - 1]
        return [tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for _ in contexts]
    return generate


def test_episode_runs_public_tests_shows_feedback_and_masks_the_environment(tok):
    env = episodes(tok)
    [prompt] = [r["prompt"] for r in env.prompt_rows()]
    out = env.rollout([prompt], scripted(tok, WRONG, RIGHT))
    [ids], [mask] = out["completion_ids"], out["env_mask"]
    assert len(ids) == len(mask) and 0 in mask and mask[0] == 1 and mask[-1] == 1
    policy = tok.decode([t for t, m in zip(ids, mask) if m])
    environment = tok.decode([t for t, m in zip(ids, mask) if not m])
    assert "return number\n" in policy and "return number % 1.0" in policy and "Failing example" not in policy
    # the environment's turn holds the real public run: the failing public example with the value computed
    assert "Failing example: assert round(candidate(3.5), 1) == 0.5" in environment and 'Got: "3.5"' in environment
    assert "123.456" not in environment and "1.33" not in environment  # hidden inputs never shown
    [episode] = [json.loads(e) for e in out["episode"]]
    assert [t["public_outcome"] for t in episode[:1]] == ["failed"] and len(episode) == 2


def test_reward_grades_the_final_attempt_on_the_hidden_tests(tok, tmp_path):
    env = episodes(tok, out_dir=tmp_path)
    [prompt] = [r["prompt"] for r in env.prompt_rows()]
    fooled = env.rollout([prompt], scripted(tok, PUBLIC_ONLY))  # public tests pass: the episode ends at turn 1
    fixed = env.rollout([prompt], scripted(tok, WRONG, RIGHT))
    assert len(json.loads(fooled["episode"][0])) == 1
    rewards = env.score([PROBLEM.task_id] * 2, fooled["episode"] + fixed["episode"], 0, None)
    assert rewards[1] == 1.0 and rewards[0] < 1.0  # passing the public example alone is not enough
    rows = read_jsonl(tmp_path / ROLLOUTS_FILE)
    assert [r["final_passed"] for r in rows] == [False, True] and rows[1]["first_passed"] is False
    assert rows[1]["terms"]["turns"] == 1.0 and rows[1]["terms"]["improvement"] > 0


def test_feedback_ablations_give_different_environment_turns(tok):
    texts = {}
    for mode in ("trace", "tests", "none"):
        env = episodes(tok, mode)
        out = env.rollout([env.prompt_rows()[0]["prompt"]], scripted(tok, WRONG, RIGHT))
        [ids], [mask] = out["completion_ids"], out["env_mask"]
        texts[mode] = tok.decode([t for t, m in zip(ids, mask) if not m])
    assert len(set(texts.values())) == 3
    assert 'Got: "3.5"' in texts["trace"] and "FAILED: assert" in texts["tests"] and "Got" not in texts["tests"]
    assert "assert" not in texts["none"]


def test_a_grpo_step_masks_environment_tokens_and_trains_the_lora(tmp_path):
    # 4 rollouts: with 2, the random model's pair often scored the same (3 of 4 seeds: no advantage, no update)
    cfg = validate(compose_config([*TINY, *SHORT, "method.interactive.num_generations=4",
                                   "method.per_device_train_batch_size=4"]))
    get_method("interactive").check_config(cfg)
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=cfg.model.random_init, seed=0)
    trainer, env = make_trainer(model, tok, [PROBLEM], cfg, steps=1, out_dir=tmp_path, seed=0, progress=False)
    batch = [next(iter(trainer.get_train_dataloader()))][0]
    scored = trainer._generate_and_score_completions(batch)
    assert "tool_mask" in scored  # TRL took our env_mask: loss mask = completion_mask * tool_mask
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    rows_before = len(read_jsonl(tmp_path / ROLLOUTS_FILE))
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before if "lora_B" in n)
    rows = read_jsonl(tmp_path / ROLLOUTS_FILE)
    assert len(rows) > rows_before and all(r["task_id"] == PROBLEM.task_id for r in rows)
    assert all(r["turns"][0].get("public_outcome") for r in rows if len(r["turns"]) > 1)
    masked = scored["tool_mask"] * scored["completion_mask"]
    episodes_with_feedback = [r for r in rows[:rows_before] if len(r["turns"]) > 1]
    assert bool(episodes_with_feedback) == bool((masked.sum(1) < scored["completion_mask"].sum(1)).any())
