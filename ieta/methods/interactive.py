"""``interactive``: online GRPO over multi-turn episodes with execution feedback (RLEF-style; TRL ``GRPOTrainer``).

An episode: the policy writes the function (turn 1); the environment runs it on the problem's PUBLIC tests in the
sandbox and answers with feedback (``method.interactive.feedback``: ``trace``, ``tests`` or ``none``, see
``ieta.feedback``); the policy revises (turns 2..``max_turns``) until the public tests pass or the turns run out.
The reward is the HIDDEN tests' grade of the final attempt (``ieta.rewards.execution_score``, as in ``rlaif``) plus
optional per-turn terms, each with its weight (``reward_weights``). The episode is one GRPO completion: the
policy's tokens and the environment's, with TRL's ``env_mask`` (0 on environment tokens) keeping the environment's
tokens out of the loss. TRL's ``rollout_func`` runs the episodes; nothing in TRL is patched.

Per iteration ``iter_<k>/`` gets ``interactive_rollouts.jsonl`` (each episode's turns, public outcomes, feedback,
hidden verdict and reward), ``canary_stats.json`` (hack-rate canaries, ``ieta.canaries``) and the adapter.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


from ieta.canaries import CanaryMonitor, mix_in
from ieta.config import RunConfig, check_block, parse_block
from ieta.data import Problem, public_problem
from ieta.execute import SandboxConfig, execute_samples
from ieta.feedback import MODES, feedback
from ieta.io import append_jsonl
from ieta.methods.base import Method
from ieta.metrics import SANDBOX_ERROR
from ieta.prompts import build_prompt, extract_completion
from ieta.repair import env_turn
from ieta.rewards import ExecutionRewardSettings, execution_score

log = logging.getLogger(__name__)
ROLLOUTS_FILE = "interactive_rollouts.jsonl"
#: the reward terms ``reward_weights`` may weigh (see ``episode_reward``)
REWARD_TERMS = ("final", "first", "improvement", "turns")


@dataclass
class InteractiveSettings:
    """The ``method.interactive`` block; TRL's GRPOConfig stays the schema of ``method.trainer``."""

    max_turns: int = 2
    feedback: str = "trace"
    num_generations: int = 4
    max_steps: int | None = None
    max_completion_length: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    skip_solved: bool = True
    feedback_chars: int = 1500
    reward_weights: dict[str, float] = field(default_factory=lambda: {"final": 1.0, "first": 0.0,
                                                                      "improvement": 0.0, "turns": 0.0})
    execution_reward: ExecutionRewardSettings = field(default_factory=ExecutionRewardSettings)
    canaries: int = 2

    def __post_init__(self) -> None:
        checks = [
            (self.max_turns >= 1, "max_turns", "must be >= 1 (1: single-turn GRPO on the hidden-test reward)"),
            (self.feedback in MODES, "feedback", f"must be one of {list(MODES)}; got {self.feedback!r}"),
            (self.num_generations >= 2, "num_generations", "must be >= 2 (GRPO compares episodes of a prompt)"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1 or null"),
            (self.max_completion_length >= 1, "max_completion_length", "must be >= 1"),
            (self.temperature > 0, "temperature", "must be > 0 (GRPO needs diverse episodes)"),
            (0 < self.top_p <= 1, "top_p", "must be in (0, 1]"),
            (self.feedback_chars >= 1, "feedback_chars", "must be >= 1"),
            (not (bad := sorted(set(self.reward_weights) - set(REWARD_TERMS))), "reward_weights",
             f"has unknown terms {bad}; allowed: {list(REWARD_TERMS)}"),
            (any(w != 0 for w in self.reward_weights.values()), "reward_weights", "needs a non-zero weight"),
            (self.canaries >= 0, "canaries", "must be >= 0 (0 disables the hack-rate canaries)"),
        ]
        check_block(checks, "method.interactive")

    @classmethod
    def from_config(cls, raw: Any) -> InteractiveSettings:
        """Validate ``cfg.method.interactive`` (a dict or DictConfig); errors name ``method.interactive.<key>``."""
        return parse_block(cls, raw, "method.interactive")


@dataclass
class Episodes:
    """The environment of one training run: problems by prompt, the sandbox, and what the episodes did."""

    problems: list[Problem]
    tokenizer: Any
    prompt_format: str
    sandbox: SandboxConfig
    settings: InteractiveSettings
    canaries: CanaryMonitor
    out_dir: Path | None = None

    def __post_init__(self) -> None:
        self.by_id = {p.task_id: p for p in self.problems}
        self.public = {p.task_id: public_problem(p) for p in self.problems}
        # the prompt names its problem (canaries that share a prompt share its public test too)
        self.by_prompt = {build_prompt(p, self.tokenizer, self.prompt_format): p for p in self.problems}

    def prompt_rows(self) -> list[dict]:
        return [{"prompt": build_prompt(p, self.tokenizer, self.prompt_format), "task_id": p.task_id}
                for p in self.problems]

    def run_public(self, problems: Sequence[Problem], codes: Sequence[str]) -> list[dict]:
        """Run attempts on the PUBLIC tests (the only runs feedback comes from)."""
        samples = [{"task_id": p.task_id, "completion_id": i, "completion": c}
                   for i, (p, c) in enumerate(zip(problems, codes))]
        return execute_samples(self.public, samples, config=self.sandbox, progress=False)

    def run_hidden(self, problems: Sequence[Problem], codes: Sequence[str]) -> list[dict]:
        """Run attempts on the HIDDEN tests (the verdict and the reward)."""
        samples = [{"task_id": p.task_id, "completion_id": i, "completion": c}
                   for i, (p, c) in enumerate(zip(problems, codes))]
        return execute_samples(self.by_id, samples,
                               config=replace(self.sandbox, trace=False), progress=False)

    def env_ids(self, problem: Problem, attempt_ids: list[int], text: str) -> list[int]:
        """Token ids of the environment's turn after an attempt (the end-of-turn token is dropped when the attempt
        already ended with it)."""
        turn = env_turn(problem, text, self.settings.feedback, self.tokenizer, self.prompt_format)
        eos = self.tokenizer.eos_token or ""
        if eos and attempt_ids and attempt_ids[-1] == self.tokenizer.eos_token_id and turn.startswith(eos):
            turn = turn[len(eos):]
        return self.tokenizer(turn, add_special_tokens=False)["input_ids"]

    def rollout(self, prompts: list[str], generate: Callable[[list[list[int]]], list[list[int]]]) -> dict:
        """Run one episode per prompt; ``generate`` continues token-id contexts (one completion each)."""
        s = self.settings
        problems = [self.by_prompt[p] for p in prompts]
        prompt_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        completion_ids: list[list[int]] = [[] for _ in prompts]
        env_mask: list[list[int]] = [[] for _ in prompts]
        turns: list[list[dict]] = [[] for _ in prompts]
        active = list(range(len(prompts)))
        for turn in range(1, s.max_turns + 1):
            new = generate([prompt_ids[i] + completion_ids[i] for i in active])
            for i, ids in zip(active, new):
                completion_ids[i] += list(ids)
                env_mask[i] += [1] * len(ids)
                raw = self.tokenizer.decode(ids, skip_special_tokens=True)
                turns[i].append({"turn": turn, "completion": extract_completion(raw, self.prompt_format)})
            if turn == s.max_turns:
                break
            public = self.run_public([problems[i] for i in active], [turns[i][-1]["completion"] for i in active])
            still = []
            for i, ids, record in zip(active, new, public):
                step = turns[i][-1]
                step.update(public_outcome=record["outcome"], public_passed=record["passed"])
                if record["passed"] or record["outcome"] == SANDBOX_ERROR:
                    continue  # solved on the public tests (or no verdict): the episode ends
                text = feedback(problems[i], record, s.feedback)[: s.feedback_chars]
                step["feedback"] = text
                env = self.env_ids(problems[i], list(ids), text)
                completion_ids[i] += env
                env_mask[i] += [0] * len(env)
                still.append(i)
            active = still
            if not active:
                break
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None, "env_mask": env_mask,
                "episode": [json.dumps(t) for t in turns]}

    def score(self, task_ids: Sequence[str], episodes: Sequence[str], step: int | None,
              log_metric: Callable[[str, float], None] | None) -> list[float | None]:
        """Each episode's reward from the hidden tests (None for canaries and sandbox errors: zero advantage)."""
        s = self.settings
        turns = [json.loads(e) for e in episodes]
        problems = [self.by_id[t] for t in task_ids]
        final = self.run_hidden(problems, [t[-1]["completion"] for t in turns])
        revised = [i for i, t in enumerate(turns) if len(t) > 1]  # the others' first attempt is their final one
        first = list(final)
        for i, record in zip(revised, self.run_hidden([problems[i] for i in revised],
                                                      [turns[i][0]["completion"] for i in revised])):
            first[i] = record
        self.canaries.observe(task_ids, [t[-1]["completion"] for t in turns], final, log_metric=log_metric,
                              step=step)
        rewards, rows = [], []
        for task, ts, fin, fst in zip(task_ids, turns, final, first):
            uses_first = any(s.reward_weights.get(k) for k in ("first", "improvement"))
            verdicts = (fin, fst) if uses_first else (fin,)
            scored = all(r["outcome"] != SANDBOX_ERROR for r in verdicts) and not self.canaries.is_canary(task)
            terms = episode_terms(ts, fin, fst, s.execution_reward)
            reward = sum(s.reward_weights.get(k, 0.0) * v for k, v in terms.items()) if scored else None
            rewards.append(reward)
            rows.append({"step": step, "task_id": task, "turns": ts, "final_outcome": fin["outcome"],
                         "final_passed": fin["passed"], "first_passed": fst["passed"], "terms": terms,
                         "reward": reward})
        if log_metric is not None:
            judged = [r for r in rows if r["reward"] is not None]
            if judged:
                log_metric("interactive/final_pass_rate", sum(r["final_passed"] for r in judged) / len(judged))
                log_metric("interactive/first_pass_rate", sum(r["first_passed"] for r in judged) / len(judged))
                log_metric("interactive/turns_mean", sum(len(r["turns"]) for r in judged) / len(judged))
        if self.out_dir is not None:
            append_jsonl(self.out_dir / ROLLOUTS_FILE, rows)
        return rewards


def episode_terms(turns: list[dict], final: dict, first: dict, grading: ExecutionRewardSettings) -> dict[str, float]:
    """The reward terms of one episode: ``final`` (hidden-test grade of the final attempt), ``first`` (of the first
    attempt), ``improvement`` (final - first) and ``turns`` (revisions used, so a negative weight is a turn cost)."""
    f, s = execution_score(final, grading), execution_score(first, grading)
    return {"final": f, "first": s, "improvement": f - s, "turns": float(len(turns) - 1)}


def episode_reward(prompts: list, completions: list, *, task_id: list[str], episode: list[str], env: Episodes,
                   log_metric=None, trainer_state=None, **kwargs) -> list[float | None]:
    """TRL reward function: the episode's weighted reward terms, graded on the hidden tests."""
    return env.score(task_id, episode, getattr(trainer_state, "global_step", None), log_metric)


def make_trainer(model, tokenizer, problems: list[Problem], cfg: RunConfig, *, steps: int, out_dir: Path,
                 seed: int, progress: bool = True):
    """The GRPOTrainer whose rollouts are the episodes of ``Episodes`` (``rollout_func``), and that environment."""
    from datasets import Dataset
    from trl import GRPOConfig

    from ieta.grpo_sampling import trainer_class

    from ieta.methods.rlaif import unsolved
    from ieta.train import as_base_model, lora_config, trainer_args

    if not problems:
        raise ValueError("no training problems for interactive")
    settings = InteractiveSettings.from_config(getattr(cfg.method, "interactive", None))
    if settings.skip_solved:
        problems = unsolved(problems, out_dir / "executions.jsonl")
    problems, canaries = mix_in(problems, settings.canaries, seed, out_dir)
    method = cfg.method
    model = as_base_model(model)
    args = GRPOConfig(
        beta=method.beta, num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length, temperature=settings.temperature,
        top_p=settings.top_p,
        **trainer_args(model, method, steps=settings.max_steps or steps, out_dir=out_dir, seed=seed, progress=progress),
    )
    env = Episodes(problems, tokenizer, cfg.model.prompt_format, SandboxConfig(**cfg.sandbox), settings, canaries,
                   out_dir)
    rows = env.prompt_rows()
    needed = -(-args.generation_batch_size // settings.num_generations)
    dataset = Dataset.from_list(rows * -(-needed // len(rows)))

    def rollout_func(batch_prompts: list[str], trainer) -> dict:
        # TRL's own single-turn generation (the call its tool loop makes), with the trainer's sampling settings
        return env.rollout(batch_prompts, lambda ids: trainer._generate_single_turn(ids, None, {}, 1)[0])

    def hidden_tests(prompts, completions, **kwargs):  # TRL logs a reward under its function's name
        return episode_reward(prompts, completions, env=env, **kwargs)

    trainer = trainer_class()(model=model, reward_funcs=[hidden_tests], args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora_config(method.lora, model),
                          rollout_func=rollout_func)
    return trainer, env


def train_interactive(model, tokenizer, problems: list[Problem], cfg: RunConfig, *, steps: int, out_dir: Path,
                      seed: int, progress: bool = True):
    """Run ``steps`` GRPO steps over multi-turn episodes on ``problems``; save the adapter (last) and the logs."""
    from ieta.lm_head import cpu_lm_head
    from ieta.train import save_training

    (out_dir / ROLLOUTS_FILE).unlink(missing_ok=True)  # a retrained iteration logs its own episodes only
    with cpu_lm_head():
        trainer, env = make_trainer(model, tokenizer, problems, cfg, steps=steps, out_dir=out_dir, seed=seed,
                                    progress=progress)
        trainer.train()
    if trainer.args.should_save:
        env.canaries.write_stats()
    return save_training(trainer, out_dir)  # the adapter last: it marks the iteration's training done


class Interactive(Method):
    """``interactive``: online GRPO over write -> public-test feedback -> revise episodes, hidden-test reward."""

    name = "interactive"
    trainer_config = "trl.GRPOConfig"

    def check_config(self, cfg: RunConfig) -> None:
        InteractiveSettings.from_config(cfg.method.interactive)

    def train(self, model, tokenizer, problems, rows, cfg, *, steps, out_dir, seed, progress):
        return train_interactive(model, tokenizer, problems, cfg, steps=steps, out_dir=out_dir, seed=seed,
                                 progress=progress)


METHOD = Interactive()
