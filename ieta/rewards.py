"""Reward functions for online RL (``rlaif``): a registry of plain functions, as in open-r1's ``rewards.py``.

Each reward has TRL's signature ``fn(prompts, completions, **kwargs) -> list[float]``; the dataset column
``task_id`` arrives in ``kwargs``. What a reward needs beyond that (problems, sandbox, judge) is bound once per
training run as the keyword-only ``context`` (``bind_rewards``). Both rewards share one execution per completion:
the judge reads the trace the execution reward produced.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial

import torch

from ieta.data import Problem
from ieta.execute import SandboxConfig, execute_samples
from ieta.prompts import extract_completion

log = logging.getLogger(__name__)

#: default penalty added per outcome; passing > failing > crashing (runtime_error) > timeout
DEFAULT_PENALTIES = {"failed": 0.0, "runtime_error": -0.25, "syntax_error": -0.5, "crashed": -0.5,
                     "memory_limit": -0.75, "timeout": -0.75}
JUDGE_INSTRUCTION = ("Rate the candidate solution from 0 (wrong) to 10 (correct and clean), using the test results. "
                     "Answer with one line: SCORE: <0-10>")
JUDGE_PREFILL = "SCORE:"


@dataclass
class ExecutionRewardSettings:
    """``passed`` if every assert passes, else ``partial_credit * share_of_asserts_passed + penalty``."""

    passed: float = 1.0
    partial_credit: float = 0.5
    penalties: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PENALTIES))
    error_type_penalties: dict[str, float] = field(default_factory=dict)


@dataclass
class JudgeSettings:
    model: str | None = None
    max_new_tokens: int = 8
    batch_size: int = 8
    neutral: float = 0.5
    trace_events: int = 8
    max_code_chars: int = 2000


@dataclass
class JudgeStats:
    """Counts for ``judge_stats.json``; a few raw unparsable answers are kept to debug the prompt or the parser."""

    answers: int = 0
    unparsable: int = 0
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self) | {"unparsable_fraction": self.unparsable / self.answers if self.answers else 0.0}


# ---------------------------------------------------------------- execution reward

def execution_score(record: dict, settings: ExecutionRewardSettings) -> float:
    """Grade one sandbox record; the ordering of outcomes comes from ``settings.penalties``."""
    if record["passed"]:
        return settings.passed
    share = record["asserts_passed"] / record["asserts_total"] if record.get("asserts_total") else 0.0
    penalty = settings.penalties.get(record["outcome"], min(settings.penalties.values(), default=0.0))
    penalty += settings.error_type_penalties.get(record.get("error_type") or "", 0.0)
    return settings.partial_credit * share + penalty


# ---------------------------------------------------------------- judge

_NUM = r"(-?\d+(?:\.\d+)?)"
_SCORE = re.compile(rf"(?:score|rating)[^\w-]{{0,4}}(?:is\s*|of\s*)?{_NUM}\s*(?:(?:/|out of)\s*{_NUM})?\s*(%)?", re.I)
_ANY = re.compile(rf"{_NUM}\s*(?:(?:/|out of)\s*{_NUM})?\s*(%)?", re.I)


def _normalise(value: str, scale: str | None, percent: str | None) -> float | None:
    v = float(value)
    if v < 0:
        return None
    if scale is not None:
        s = float(scale)
        return v / s if 0 < s and v <= s else None
    if percent:
        return v / 100 if v <= 100 else None
    if "." in value and v <= 1:
        return v  # "0.7": already a fraction
    return v / 10 if v <= 10 else None


def parse_judge_score(text: str) -> float | None:
    """A score in [0, 1] from a judge's answer ("SCORE: 7/10", "7", "Score: 0.7", '{"score": 7}'); else ``None``.

    Integers are read on the 0-10 scale the prompt asks for; an explicit "/N", "out of N" or "%" wins.
    """
    if not text or not text.strip():
        return None
    for blob in re.findall(r"\{[^{}]*\}", text):
        try:
            obj = json.loads(blob)
        except json.JSONDecodeError:
            continue
        for key, value in obj.items() if isinstance(obj, dict) else ():
            if key.lower() in ("score", "rating") and isinstance(value, (int, float, str)) and not isinstance(value, bool):
                return parse_judge_score(f"SCORE: {value}")
    match = _SCORE.search(text) or _ANY.search(text)
    return _normalise(*match.groups()) if match else None


def _trace_summary(record: dict, settings: JudgeSettings) -> str:
    lines = [f"outcome: {record['outcome']}; asserts passed: {record['asserts_passed']}/{record['asserts_total']}"]
    if record.get("error_type"):
        where = f" at line {record['line']}: {record['source_line']}" if record.get("line") else ""
        lines.append(f"error: {record['error_type']} {record.get('message') or ''}".rstrip() + where)
    if ff := record.get("first_failure"):
        lines.append(f"first failing assert: {ff['assert']} (expected {ff.get('expected')}, got {ff.get('actual')})")
    events = (record.get("line_trace") or [])[: settings.trace_events]
    if events:
        lines.append("line trace (first events):")
        lines += [json.dumps(e, ensure_ascii=False)[:160] for e in events]
    return "\n".join(lines)


class Judge:
    """An LLM that scores (problem, code, execution trace). ``model`` may be set later: the policy being trained."""

    def __init__(self, settings: JudgeSettings, model=None, tokenizer=None):
        self.settings, self.model, self.tokenizer, self.stats = settings, model, tokenizer, JudgeStats()

    def prompt(self, problem: Problem, code: str, record: dict) -> str:
        code = (problem.prompt + code)[-self.settings.max_code_chars:]
        user = (f"Problem and candidate solution:\n```python\n{code}```\n\nTest results:\n"
                f"{_trace_summary(record, self.settings)}\n\n{JUDGE_INSTRUCTION}")
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": user}, {"role": "assistant", "content": JUDGE_PREFILL}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
        return f"{user}\n{JUDGE_PREFILL}"

    @torch.no_grad()
    def generate(self, texts: list[str]) -> list[str]:
        """Greedy, batched, short; the policy is switched to eval mode for this and back afterwards."""
        model, tok = self.model, self.tokenizer
        was_training, side = model.training, tok.padding_side
        model.eval()
        tok.padding_side = "left"
        out: list[str] = []
        try:
            for i in range(0, len(texts), self.settings.batch_size):
                enc = tok(texts[i:i + self.settings.batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(model.device)
                gen = model.generate(**enc, max_new_tokens=self.settings.max_new_tokens, do_sample=False,
                                     use_cache=True, pad_token_id=tok.pad_token_id)
                out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        finally:
            tok.padding_side = side
            model.train(was_training)
        return out

    def score(self, problems: Sequence[Problem], codes: Sequence[str], records: Sequence[dict]) -> tuple[list[float], int]:
        """Scores in [0, 1] and the number of unparsable answers (scored ``settings.neutral``)."""
        answers = self.generate([self.prompt(p, c, r) for p, c, r in zip(problems, codes, records)])
        scores, bad = [], 0
        for answer in answers:
            value = parse_judge_score(JUDGE_PREFILL + answer)
            if value is None:
                bad += 1
                if len(self.stats.examples) < 5:
                    self.stats.examples.append(answer)
            scores.append(self.settings.neutral if value is None else value)
        self.stats.answers += len(answers)
        self.stats.unparsable += bad
        if bad:
            log.info("judge: %d/%d answers unparsable (neutral score %.2f)", bad, len(answers), self.settings.neutral)
        return scores, bad


# ---------------------------------------------------------------- shared context and the registry

@dataclass
class RewardContext:
    """What the rewards of one training run share; executions are cached for the batch both rewards score."""

    problems: Mapping[str, Problem]
    prompt_format: str
    sandbox: SandboxConfig
    execution: ExecutionRewardSettings = field(default_factory=ExecutionRewardSettings)
    judge: Judge | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def code(self, completion) -> str:
        if isinstance(completion, list):  # conversational: the last message's content
            completion = completion[-1]["content"]
        return extract_completion(completion, self.prompt_format)

    def execute(self, task_ids: Sequence[str], codes: Sequence[str]) -> list[dict]:
        """Sandbox records for this batch, in parallel; reused when the next reward asks for the same batch."""
        keys = list(zip(task_ids, codes))
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            samples = [{"task_id": t, "completion": c, "completion_id": i} for i, (t, c) in enumerate(todo)]
            records = execute_samples(self.problems, samples, config=self.sandbox, progress=False)
            self._cache = {k: self._cache[k] for k in keys if k in self._cache} | dict(zip(todo, records))
        return [self._cache[k] for k in keys]


def execution_reward(prompts: list, completions: list, *, task_id: list[str], context: RewardContext,
                     log_metric: Callable[[str, float], None] | None = None, **kwargs) -> list[float]:
    """Graded by the share of asserts passed, with penalties per outcome and error type."""
    codes = [context.code(c) for c in completions]
    records = context.execute(task_id, codes)
    if log_metric is not None:
        log_metric("execution/pass_rate", sum(r["passed"] for r in records) / len(records))
    return [execution_score(r, context.execution) for r in records]


def judge_reward(prompts: list, completions: list, *, task_id: list[str], context: RewardContext,
                 log_metric: Callable[[str, float], None] | None = None, **kwargs) -> list[float]:
    """An LLM judge's score of the problem, the code and its execution trace; neutral when unparsable."""
    if context.judge is None or context.judge.model is None:
        raise RuntimeError("judge_reward needs context.judge with a model (the policy or a judge.model)")
    codes = [context.code(c) for c in completions]
    records = context.execute(task_id, codes)
    scores, bad = context.judge.score([context.problems[t] for t in task_id], codes, records)
    if log_metric is not None:
        log_metric("judge/unparsable", float(bad))
        log_metric("judge/unparsable_total", float(context.judge.stats.unparsable))
    return scores


REWARDS: dict[str, Callable[..., list[float]]] = {"execution": execution_reward, "judge": judge_reward}


def bind_rewards(names: Sequence[str], context: RewardContext) -> list[Callable[..., list[float]]]:
    """The named rewards with ``context`` bound (``functools.partial``: TRL logs them under the function's name)."""
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; registered: {sorted(REWARDS)}")
    return [partial(REWARDS[n], context=context) for n in names]
