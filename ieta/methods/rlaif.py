"""``rlaif``: online RL with TRL's GRPOTrainer + a fresh PEFT LoRA adapter per iteration.

Rewards come from ``ieta.rewards``: the sandbox's execution reward and an AI judge's score of the code and its
trace, weighted by ``method.rlaif.reward_weights`` (a weight of 0 drops that reward, and with it the judge's
generation). ``method.rlaif.canaries`` hack-rate canaries (``ieta.canaries``) are mixed into the prompts: their
pass rate is ``reward/hack_rate``, and they get no reward (zero advantage). As in ``ieta.train.train_dpo``, earlier adapters are merged first, so the starting policy and the KL
reference of iteration k (adapter disabled) are the policy at the start of that iteration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from ieta.canaries import mix_in
from ieta.config import RunConfig, check_block, parse_block
from ieta.data import Problem
from ieta.execute import SandboxConfig
from ieta.io import read_jsonl, write_json
from ieta.lm_head import cpu_lm_head
from ieta.metrics import model_records
from ieta.methods.base import Method
from ieta.prompts import build_prompt
from ieta.rewards import REWARDS, ExecutionRewardSettings, Judge, JudgeSettings, RewardContext, bind_rewards
from ieta.train import as_base_model, lora_config, save_training, trainer_args

log = logging.getLogger(__name__)


@dataclass
class RlaifSettings:
    """The ``method.rlaif`` block; TRL's GRPOConfig stays the schema of ``method.trainer``."""

    num_generations: int = 4
    max_steps: int | None = None
    max_completion_length: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    skip_solved: bool = True
    canaries: int = 2
    reward_weights: dict[str, float] = field(default_factory=lambda: {"execution": 1.0, "judge": 0.5})
    execution_reward: ExecutionRewardSettings = field(default_factory=ExecutionRewardSettings)
    judge: JudgeSettings = field(default_factory=JudgeSettings)

    def __post_init__(self) -> None:
        checks = [
            (self.num_generations >= 2, "num_generations", "must be >= 2 (GRPO compares completions of a prompt)"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1 or null"),
            (self.canaries >= 0, "canaries", "must be >= 0 (0 disables the hack-rate canaries)"),
            (self.max_completion_length >= 1, "max_completion_length", "must be >= 1"),
            (self.temperature > 0, "temperature", "must be > 0 (GRPO needs diverse samples)"),
            (0 < self.top_p <= 1, "top_p", "must be in (0, 1]"),
            (not (bad := sorted(set(self.reward_weights) - set(REWARDS))), "reward_weights",
             f"has unknown rewards {bad}; registered: {sorted(REWARDS)}"),
            (any(w != 0 for w in self.reward_weights.values()), "reward_weights", "needs at least one non-zero weight"),
            (self.judge.max_new_tokens >= 1, "judge.max_new_tokens", "must be >= 1"),
            (self.judge.batch_size >= 1, "judge.batch_size", "must be >= 1"),
            (0 <= self.judge.neutral <= 1, "judge.neutral", "must be in [0, 1]"),
            (self.judge.max_field_chars >= 1, "judge.max_field_chars", "must be >= 1"),
        ]
        check_block(checks, "method.rlaif")

    @classmethod
    def from_config(cls, raw: Any) -> RlaifSettings:
        """Validate ``cfg.method.rlaif`` (a dict or DictConfig); errors name ``method.rlaif.<key>``."""
        return parse_block(cls, raw, "method.rlaif")

    @property
    def active_rewards(self) -> dict[str, float]:
        return {name: w for name, w in self.reward_weights.items() if w != 0}


def _judge(settings: RlaifSettings, policy, tokenizer) -> Judge | None:
    """``judge.model: null`` judges with the policy being trained (bound after the trainer wraps it)."""
    if "judge" not in settings.active_rewards:
        return None
    if settings.judge.model is None:
        return Judge(settings.judge, tokenizer=tokenizer)
    from ieta.models import load_model, load_tokenizer

    judge_model = load_model(settings.judge.model, policy.dtype, policy.device.type)
    return Judge(settings.judge, judge_model, load_tokenizer(settings.judge.model))


def unsolved(problems: list[Problem], executions_path: Path) -> list[Problem]:
    """The problems not every sample of this iteration solved (``executions_path``): GRPO learns nothing from a
    group whose completions all pass, since their rewards, and so their advantages, are equal. All problems when
    every one was solved or nothing was sampled. A sandbox error is no verdict: it leaves a problem as it was."""
    if not executions_path.exists():
        return problems
    failed = {r["task_id"] for r in model_records(read_jsonl(executions_path)) if not r["passed"]}
    return [p for p in problems if p.task_id in failed] or problems


def train_rlaif(model, tokenizer, problems: list[Problem], cfg: RunConfig, *, steps: int, out_dir: Path, seed: int,
                progress: bool = True):
    """Run ``steps`` GRPO steps on ``problems``; save the adapter, the log history and the judge's stats."""
    from trl import GRPOConfig

    from ieta.grpo_sampling import trainer_class

    if not problems:
        raise ValueError("no training problems for rlaif")
    settings = RlaifSettings.from_config(getattr(cfg.method, "rlaif", None))
    if settings.skip_solved:
        problems = unsolved(problems, out_dir / "executions.jsonl")
    # canaries detect forged verdicts; their completions get no reward, so zero advantage (ieta.canaries)
    problems, canaries = mix_in(problems, settings.canaries, seed, out_dir)
    method = cfg.method
    model = as_base_model(model)
    weights = settings.active_rewards
    args = GRPOConfig(
        beta=method.beta, num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length, temperature=settings.temperature,
        top_p=settings.top_p, reward_weights=list(weights.values()),
        **trainer_args(model, method, steps=settings.max_steps or steps, out_dir=out_dir, seed=seed, progress=progress),
    )
    judge = _judge(settings, model, tokenizer)
    # the judge reads traces; without it, failing samples need not be re-run under the tracer
    sandbox = SandboxConfig(**(dict(cfg.sandbox) | ({} if judge else {"trace": False})))
    context = RewardContext({p.task_id: p for p in problems}, cfg.model.prompt_format, sandbox,
                            settings.execution_reward, judge, canaries)
    from datasets import Dataset

    rows = [{"prompt": build_prompt(p, tokenizer, cfg.model.prompt_format), "task_id": p.task_id} for p in problems]
    # a generation batch draws generation_batch_size / num_generations distinct prompts; fewer would yield no step
    needed = -(-args.generation_batch_size // settings.num_generations)
    dataset = Dataset.from_list(rows * -(-needed // len(rows)))
    with cpu_lm_head():
        trainer = trainer_class()(model=model, reward_funcs=bind_rewards(list(weights), context), args=args,
                              train_dataset=dataset, processing_class=tokenizer,
                              peft_config=lora_config(method.lora, model))
        if judge is not None and judge.model is None:
            judge.model = trainer.model
        trainer.train()
    stats = judge.stats.to_dict() if judge else {}
    if trainer.args.should_save:  # the main process's judge and canary stats under accelerate launch
        write_json(out_dir / "judge_stats.json", {"enabled": judge is not None, "seed": seed,
                                                  "model": (settings.judge.model or "policy") if judge else None,
                                                  **stats})
        canaries.write_stats()
    if stats.get("unparsable"):
        log.warning("judge: %d/%d answers were unparsable and scored neutral (%s)", stats["unparsable"],
                    stats["answers"], out_dir / "judge_stats.json")
    return save_training(trainer, out_dir)  # the adapter last: it marks the iteration's training done


class Rlaif(Method):
    """``rlaif``: online GRPO on the training problems, rewarded by the sandbox and an AI judge."""

    name = "rlaif"
    trainer_config = "trl.GRPOConfig"

    def check_config(self, cfg: RunConfig) -> None:
        RlaifSettings.from_config(cfg.method.rlaif)

    def train(self, model, tokenizer, problems, rows, cfg, *, steps, out_dir, seed, progress):
        return train_rlaif(model, tokenizer, problems, cfg, steps=steps, out_dir=out_dir, seed=seed,
                           progress=progress)


METHOD = Rlaif()
