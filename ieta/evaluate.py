"""Evaluation stage: sample the eval problems, execute them, compute metrics from the real executions.

The main evaluation draws ``sampler.n`` samples at ``sampler.temperature`` (``eval_*.jsonl``); with
``sampler.greedy_eval`` adds one greedy sample per problem (``eval_greedy_*.jsonl``, ``greedy_pass@1``); with
``sampler.turns >= 2`` each sample still failing its hidden tests is revised after feedback from its run on the
public tests (``pass@1_turn<t>``): the main samples (``eval_turn<t>_*.jsonl``) or, with ``sampler.revise=greedy``,
the greedy ones (``eval_greedy_turn<t>_*.jsonl``). Verdicts always come from the hidden tests.
"""

from __future__ import annotations

from pathlib import Path

from ieta.config import RunConfig
from ieta.data import Problem
from ieta.io import read_jsonl, write_jsonl
from ieta.metrics import compute_metrics
from ieta.repair import REVISED_PREFIX
from ieta.rollout import revision_turns, sample_and_execute

#: how the multi-turn numbers were obtained, stated beside them in metrics.json and the reports
PROTOCOL = "public-test feedback, hidden-test verdict"


def seed_free_files(cfg: RunConfig) -> tuple[str, ...]:
    """Glob patterns of the evaluation files that depend on the policy and not on the stage's seed: those drawn at
    T=0 (all of them when ``sampler.temperature`` is 0; else the greedy sample and, with ``sampler.revise=greedy``,
    its revisions). An unchanged policy would make them again, identically."""
    if cfg.sampler.temperature == 0:
        return ("eval_*.jsonl",)
    if not cfg.sampler.greedy_eval:
        return ()
    greedy = ("eval_greedy_samples.jsonl", "eval_greedy_executions.jsonl")
    return greedy + (("eval_greedy_turn*_*.jsonl",) if cfg.sampler.revise == "greedy" else ())


def multi_turn_metrics(states: list[list[dict]], mode: str) -> dict:
    """``pass@1_turn<t>`` for each turn's states (``ieta.rollout.revision_turns``) and the protocol label."""
    out = {f"pass@1_turn{t}": compute_metrics(state, [1])["pass@1"] for t, state in enumerate(states, 1)}
    return out | {"multi_turn": {"max_turns": len(states), "feedback": mode, "protocol": PROTOCOL}}


def _greedy(model, tokenizer, problems: list[Problem], cfg: RunConfig, executions: list[dict], *, seed: int,
            out_dir: Path, weights: str | None) -> list[dict]:
    """One T=0 sample per problem; when the main evaluation already is that, its records are the greedy ones."""
    if cfg.sampler.temperature == 0 and cfg.sampler.n == 1:
        path = out_dir / "eval_greedy_executions.jsonl"
        if not path.exists():
            write_jsonl(out_dir / "eval_greedy_samples.jsonl", read_jsonl(out_dir / "eval_samples.jsonl"))
            write_jsonl(path, executions)
        return executions
    return sample_and_execute(model, tokenizer, problems, cfg, n=1, temperature=0.0, seed=seed, out_dir=out_dir,
                              prefix="eval_greedy_", weights=weights)


def evaluate(model, tokenizer, problems: list[Problem], cfg: RunConfig, *, iteration: int, seed: int,
             out_dir: Path, weights: str | None = None) -> dict:
    """One metrics record (a ``metrics.json`` entry) for the policy after ``iteration`` (0: before training)."""
    executions = sample_and_execute(model, tokenizer, problems, cfg, n=cfg.sampler.n,
                                    temperature=cfg.sampler.temperature, seed=seed, out_dir=out_dir, prefix="eval_",
                                    weights=weights)
    record = {"iteration": iteration, "split": cfg.dataset.split.value, **compute_metrics(executions, cfg.ks)}
    greedy = None
    if cfg.sampler.greedy_eval:
        greedy = _greedy(model, tokenizer, problems, cfg, executions, seed=seed, out_dir=out_dir, weights=weights)
        record["greedy_pass@1"] = compute_metrics(greedy, [1])["pass@1"]
    if cfg.sampler.turns >= 2:
        # sampler.revise: the main samples at their temperature, or the greedy ones at T=0 (eval_greedy_turn<t>_*)
        first, temperature = ((greedy, 0.0) if cfg.sampler.revise == "greedy"
                              else (executions, cfg.sampler.temperature))
        states = revision_turns(model, tokenizer, problems, first, cfg, turns=cfg.sampler.turns,
                                mode=cfg.sampler.feedback, temperature=temperature, seed=seed + 1,
                                out_dir=out_dir, prefix=REVISED_PREFIX[cfg.sampler.revise], weights=weights)
        record |= multi_turn_metrics(states, cfg.sampler.feedback)
        record["multi_turn"]["revised"] = cfg.sampler.revise
    return record
