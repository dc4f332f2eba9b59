"""Rollouts: sample, then execute in the sandbox; and revision turns with public-test feedback, hidden verdicts.

``run_in_sandbox`` is the pipeline's one way to execute samples (outside this process, ``cfg.sandbox``);
``run_public`` runs them on the public tests only, the runs feedback is built from. Each stage reuses its files
under ``out_dir`` when they exist, so a killed run resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from ieta.config import RunConfig
from ieta.data import Problem, public_problem
from ieta.execute import SandboxConfig, execute_samples
from ieta.feedback import feedback
from ieta.io import read_jsonl, write_jsonl
from ieta.metrics import SANDBOX_ERROR
from ieta.repair import carry_forward, sample_revisions
from ieta.sample import sample

_RUN_FIELDS = ("task_id", "completion_id", "completion")


def run_in_sandbox(problems: list[Problem], samples: list[dict], cfg: RunConfig) -> list[dict]:
    """Run ``samples`` against their problems' (hidden) tests in the configured sandbox, never in this process."""
    if not samples:
        return []
    return execute_samples({p.task_id: p for p in problems}, samples, config=SandboxConfig(**cfg.sandbox),
                           progress=cfg.progress)


def run_public(problems: list[Problem], samples: list[dict], cfg: RunConfig) -> list[dict]:
    """Run ``samples`` on the public tests only (``ieta.data.public_problem``): what feedback may be built from."""
    return run_in_sandbox([public_problem(p) for p in problems], [{k: s[k] for k in _RUN_FIELDS} for s in samples],
                          cfg)


def sample_and_execute(model, tokenizer, problems: list[Problem], cfg: RunConfig, *, n: int, temperature: float,
                       seed: int, out_dir: Path, prefix: str = "", weights: str | None = None) -> list[dict]:
    """Sample then execute, reusing ``<prefix>samples.jsonl``/``<prefix>executions.jsonl`` when a stage already ran."""
    return _staged(problems, cfg, out_dir / f"{prefix}samples.jsonl", out_dir / f"{prefix}executions.jsonl",
                   lambda: sample(model, tokenizer, problems, cfg.sampler, n=n, temperature=temperature,
                                  prompt_format=cfg.model.prompt_format, seed=seed, progress=cfg.progress,
                                  desc=f"{out_dir.name} {prefix}sample", weights=weights))


def _staged(problems: list[Problem], cfg: RunConfig, samples_path: Path, executions_path: Path,
            make_samples) -> list[dict]:
    """A sample-then-execute stage through its files: finished executions are reused, then finished samples;
    otherwise ``make_samples()`` draws them. Each file is written once its stage completes."""
    if executions_path.exists():
        return read_jsonl(executions_path)
    if samples_path.exists():
        samples = read_jsonl(samples_path)
    else:
        samples = make_samples()
        write_jsonl(samples_path, samples)
    executions = run_in_sandbox(problems, samples, cfg)
    write_jsonl(executions_path, executions)
    return executions


def _failing(executions: list[dict]) -> list[dict]:
    """Samples to revise: those failing their hidden tests (a sandbox failure is not the model's)."""
    return [e for e in executions if not e["passed"] and e.get("outcome") != SANDBOX_ERROR]


def _feedback_records(problems: list[Problem], attempts: list[dict], cfg: RunConfig, mode: str, path: Path,
                      turn: int) -> list[dict]:
    """Feedback on each attempt from its run on the public tests (``path``; reused when it exists)."""
    if path.exists():
        return read_jsonl(path)
    pmap = {p.task_id: p for p in problems}
    public = run_public(problems, attempts, cfg) if mode != "none" else [None] * len(attempts)
    records = [
        {"task_id": a["task_id"], "completion_id": a["completion_id"], "turn": turn, "completion": a["completion"],
         "mode": mode, "public_outcome": p["outcome"] if p else None, "public_passed": p["passed"] if p else None,
         "public_asserts": [p["asserts_passed"], p["asserts_total"]] if p else None,
         "feedback": feedback(pmap[a["task_id"]], p, mode) if p else ""}
        for a, p in zip(attempts, public)
    ]
    write_jsonl(path, records)
    return records


def _revise(model, tokenizer, problems: list[Problem], attempts: list[dict], history: dict, cfg: RunConfig, *,
            mode: str, turn: int, temperature: float, seed: int, out_dir: Path, stem: str,
            weights: str | None, id_suffix: str = "") -> list[dict]:
    """One revision turn for ``attempts`` (files ``<stem>_feedback/_samples/_executions.jsonl``); ``history``
    (``(task_id, completion_id) -> [(completion, feedback), ...]``) gains this turn's feedback."""
    fb = _feedback_records(problems, attempts, cfg, mode, out_dir / f"{stem}_feedback.jsonl", turn - 1)
    for f in fb:
        history.setdefault((f["task_id"], f["completion_id"]), []).append((f["completion"], f["feedback"]))

    def revise() -> list[dict]:
        items = [{"task_id": f["task_id"], "completion_id": f["completion_id"],
                  "history": history[(f["task_id"], f["completion_id"])]} for f in fb]
        samples = sample_revisions(model, tokenizer, {p.task_id: p for p in problems}, items, cfg.sampler,
                                   mode=mode, turn=turn, temperature=temperature,
                                   prompt_format=cfg.model.prompt_format, seed=seed, progress=cfg.progress,
                                   weights=weights)
        for s in samples if id_suffix else ():
            s["completion_id"] = f"{s['completion_id']}{id_suffix}"
        return samples

    return _staged(problems, cfg, out_dir / f"{stem}_samples.jsonl", out_dir / f"{stem}_executions.jsonl", revise)


def revision_turns(model, tokenizer, problems: list[Problem], executions: list[dict], cfg: RunConfig, *,
                   turns: int, mode: str, temperature: float, seed: int, out_dir: Path, prefix: str = "",
                   weights: str | None = None) -> list[list[dict]]:
    """Every sample's state after each of ``turns`` turns (index 0: ``executions``, turn 1).

    Turn t >= 2: each sample still failing its hidden tests is run on the public tests, gets feedback from that run
    (``mode``), and one revision is sampled and executed on the hidden tests (``<prefix>turn<t>_*.jsonl``). A
    sample that passed at a turn keeps passing at later ones.
    """
    states, history = [executions], {}
    for t in range(2, turns + 1):
        failing = _failing(states[-1])
        revised = _revise(model, tokenizer, problems, failing, history, cfg, mode=mode, turn=t,
                          temperature=temperature, seed=seed + t, out_dir=out_dir, stem=f"{prefix}turn{t}",
                          weights=weights)
        states.append(carry_forward(states[-1], revised))
    return states


def repair_turn(model, tokenizer, problems: list[Problem], executions: list[dict], cfg: RunConfig, *,
                temperature: float, seed: int, out_dir: Path, prefix: str = "") -> list[dict]:
    """One revision per failing sample with public-test feedback (``sampler.feedback``), executed on the hidden
    tests (``<prefix>repair_*.jsonl``); ``repair_of`` names the sample it fixes (repair pairs)."""
    return _revise(model, tokenizer, problems, _failing(executions), {}, cfg, mode=cfg.sampler.feedback, turn=2,
                   temperature=temperature, seed=seed, out_dir=out_dir, stem=f"{prefix}repair", weights=None,
                   id_suffix="-repair")
