"""Rewards on real sandbox executions of hand-written completions, and the judge's answer parser."""

import pytest

import ieta.rewards as rewards
from ieta.data import load_problems
from ieta.execute import SandboxConfig
from ieta.rewards import (ExecutionRewardSettings, Judge, JudgeSettings, RewardContext, bind_rewards,
                          execution_reward, judge_reward, parse_judge_score)

TASK = "HumanEval/2"  # truncate_number: three asserts
#: raw model outputs in the chat format: the body, then the closing fence and prose that extraction drops
RAW = {
    "passed": "    return number % 1.0\n```\nThis returns the decimal part.",
    "partial": "    return 0.5\n```",  # passes the first of three asserts
    "failed": "    return 0.0\n```",
    "runtime_error": "    return number.decimal\n```",
    "timeout": "    while True:\n        pass\n```",
}


@pytest.fixture(scope="module")
def context() -> RewardContext:
    problems = {p.task_id: p for p in load_problems("humaneval", limit=3)}
    return RewardContext(problems, "chat", SandboxConfig(timeout=1.0, workers=2), ExecutionRewardSettings())


@pytest.fixture(scope="module")
def scored(context) -> dict[str, float]:
    values = execution_reward(["p"] * len(RAW), list(RAW.values()), task_id=[TASK] * len(RAW), context=context)
    return dict(zip(RAW, values))


def test_execution_reward_orders_pass_fail_crash_timeout(scored):
    assert scored["passed"] > scored["partial"] > scored["failed"] > scored["runtime_error"] > scored["timeout"]
    assert scored["passed"] == 1.0


def test_execution_reward_penalises_error_types(context):
    harsh = RewardContext(context.problems, "chat", context.sandbox,
                          ExecutionRewardSettings(error_type_penalties={"AttributeError": -1.0}))
    harsh._cache = context._cache  # same completions: reuse the records
    [crash] = execution_reward(["p"], [RAW["runtime_error"]], task_id=[TASK], context=harsh)
    [timeout] = execution_reward(["p"], [RAW["timeout"]], task_id=[TASK], context=harsh)
    assert crash < timeout


class CannedJudge(Judge):
    """A judge whose 'model' answers from a list: tests the prompt, the scoring and the counting."""

    def __init__(self, answers: list[str]):
        super().__init__(JudgeSettings(neutral=0.5), model=object())
        self.answers, self.prompts = answers, []

    def generate(self, texts):
        self.prompts += texts
        return self.answers[: len(texts)]


def test_judge_reward_reads_the_trace_and_counts_unparsable(context, scored, monkeypatch):
    calls = []
    monkeypatch.setattr(rewards, "execute_samples", lambda *a, **k: calls.append(a) or [])
    judge = CannedJudge([" 9/10", " banana", ' {"score": 0.2}'])
    ctx = RewardContext(context.problems, "chat", context.sandbox, judge=judge, _cache=context._cache)
    logged = {}
    completions = [RAW["passed"], RAW["runtime_error"], RAW["failed"]]
    values = judge_reward(["p"] * 3, completions, task_id=[TASK] * 3, context=ctx,
                          log_metric=logged.__setitem__)
    assert values == [0.9, 0.5, 0.2]
    assert not calls  # the execution reward's records were reused, not re-executed
    assert judge.stats.unparsable == 1 and judge.stats.examples == [" banana"]
    assert logged["judge/unparsable"] == 1.0
    crash_prompt = judge.prompts[1]
    assert "runtime_error" in crash_prompt and "AttributeError" in crash_prompt and "line trace" in crash_prompt
    assert "def truncate_number" in crash_prompt and "SCORE" in crash_prompt


def test_bind_rewards_names_and_rejects_unknown(context):
    funcs = bind_rewards(["execution", "judge"], context)
    assert [f.func.__name__ for f in funcs] == ["execution_reward", "judge_reward"]
    with pytest.raises(ValueError, match="unknown reward"):
        bind_rewards(["bogus"], context)


@pytest.mark.parametrize("text, expected", [
    ("SCORE: 7/10", 0.7), ("SCORE: 7", 0.7), ("7", 0.7), ("Score: 0.7", 0.7), ('{"score": 7}', 0.7),
    ("SCORE: 10", 1.0), ("SCORE: 0", 0.0), ("score = 3 out of 5", 0.6), ("Rating: 80%", 0.8),
    ("SCORE: 8.5\nThe code is fine", 0.85), ("SCORE:  6/10.", 0.6), ('```json\n{"Score": "9"}\n```', 0.9),
    ("I think SCORE: 4", 0.4), ("SCORE: 1.0", 1.0),
])
def test_parse_judge_score_reads_common_formats(text, expected):
    assert parse_judge_score(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", [
    "", "   ", "SCORE:", "SCORE: great", "::::::::", "SCORE: -3", "SCORE: 11/10", "SCORE: 42", "{\"score\": null}",
    '{"score": true}', "SCORE: 150%", "no digits here", "SCORE: 5/0",
])
def test_parse_judge_score_rejects_malformed(text):
    assert parse_judge_score(text) is None
