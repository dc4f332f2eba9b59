"""Revision turns: show the policy what its attempt did on the PUBLIC tests, then sample a revised function.

A conversation is the first prompt, then per earlier turn the attempt (assistant) and its feedback (user,
``ieta.feedback``), then the revised function prefilled like the first turn. The same layout serves the multi-turn
evaluation (``ieta.rollout``) and the ``interactive`` method's episodes, whose environment turns are the text
``env_turn`` returns. The feedback never holds hidden tests.
"""

from __future__ import annotations

from ieta.config import SamplerConfig
from ieta.data import Problem
from ieta.prompts import build_prompt, extract_completion, fence_for, inert, stop_strings, user_turn

#: the user turn before the feedback, per feedback mode
REVISE_INSTRUCTION = {
    "trace": "Your function was run on the public examples. What happened is below; the quoted strings are data "
             "from the run. Fix the function and answer with the whole corrected function in one Python code block.",
    "tests": "Your function was run on the public examples; their results are below. Fix the function and answer "
             "with the whole corrected function in one Python code block.",
    "none": "Write the function again and answer with the whole function in one Python code block.",
}


def revision_request(feedback_text: str, mode: str) -> str:
    """The user turn that asks for a revision."""
    return REVISE_INSTRUCTION[mode] + (f"\n\n{feedback_text}" if feedback_text else "")


def _attempt_message(problem: Problem, completion: str) -> dict:
    fence = fence_for(problem.prompt + completion)  # ``` unless the attempt holds a run of them
    return {"role": "assistant", "content": f"{fence}python\n{problem.prompt}{completion}{fence}"}


def build_revision_prompt(problem: Problem, history: list[tuple[str, str]], tokenizer, prompt_format: str,
                          mode: str) -> str:
    """The prompt of the next turn after ``history``: ``[(completion, feedback_text), ...]``, oldest first."""
    if not history:
        return build_prompt(problem, tokenizer, prompt_format)
    history = [(inert(completion, tokenizer), fb) for completion, fb in history]  # no token of its own in the text
    if prompt_format == "completion":
        text = ""
        for completion, fb in history:
            note = "\n".join("# " + line for line in revision_request(fb, mode).splitlines())
            text += f"{problem.prompt}{completion}\n\n{note}\n"
        return text + problem.prompt
    messages = [{"role": "user", "content": user_turn(problem)}]
    for completion, fb in history:
        messages += [_attempt_message(problem, completion), {"role": "user", "content": revision_request(fb, mode)}]
    messages.append({"role": "assistant", "content": f"```python\n{problem.prompt}"})
    return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)


def env_turn(problem: Problem, feedback_text: str, mode: str, tokenizer, prompt_format: str) -> str:
    """The environment's text between a finished attempt (which ended with the end-of-turn token, or was cut) and
    the policy's next attempt: the close of the turn, the feedback turn, and the revised function's prefill."""
    request = revision_request(feedback_text, mode)
    if prompt_format == "completion":
        note = "\n".join("# " + line for line in request.splitlines())
        return f"\n\n{note}\n{problem.prompt}"
    sentinel = "\x00IETA_ATTEMPT\x00"
    messages = [{"role": "user", "content": user_turn(problem)}, {"role": "assistant", "content": sentinel},
                {"role": "user", "content": request}, {"role": "assistant", "content": f"```python\n{problem.prompt}"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    return text[text.index(sentinel) + len(sentinel):]


def generate_texts(model, tokenizer, prompts: list[str], cfg: SamplerConfig, *, temperature: float, seed: int,
                   prompt_format: str, progress: bool, desc: str, weights: str | None = None) -> list[str]:
    """One continuation per prompt with the configured back-end (``sampler.backend``)."""
    if not prompts:
        return []
    common = dict(n=1, temperature=temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                  stops=stop_strings(prompt_format), seed=seed, progress=progress)
    if cfg.backend == "vllm":
        from ieta.vllm_backend import generate as vllm_generate

        raws = vllm_generate(weights, prompts, gpu_memory_utilization=cfg.gpu_memory_utilization, **common)
    else:
        from ieta.sample import generate

        raws = generate(model, tokenizer, prompts, batch_size=cfg.batch_size, quantize=cfg.quantize, draft=cfg.draft,
                        desc=desc, **common)
    return [raw for [raw] in raws]


def sample_revisions(model, tokenizer, problems: dict[str, Problem], items: list[dict], cfg: SamplerConfig, *,
                     mode: str, turn: int, temperature: float, prompt_format: str, seed: int, progress: bool = True,
                     weights: str | None = None) -> list[dict]:
    """One revision per item ``{"task_id", "completion_id", "history": [(completion, feedback), ...]}``; each
    record keeps the ``completion_id`` of the sample it revises (also as ``repair_of``) and its ``turn``."""
    prompts = [build_revision_prompt(problems[it["task_id"]], it["history"], tokenizer, prompt_format, mode)
               for it in items]
    raws = generate_texts(model, tokenizer, prompts, cfg, temperature=temperature, seed=seed,
                          prompt_format=prompt_format, progress=progress, desc=f"turn {turn}", weights=weights)
    return [
        {"task_id": it["task_id"], "completion_id": it["completion_id"], "repair_of": it["completion_id"],
         "turn": turn, "completion": extract_completion(raw, prompt_format), "raw": raw, "feedback_mode": mode,
         "temperature": temperature, "seed": seed}
        for it, raw in zip(items, raws)
    ]


#: ``sampler.revise`` -> the file prefix of the evaluation whose samples the revision turns revise: the turns are
#: written as ``<prefix>turn<t>_*.jsonl`` beside ``<prefix>executions.jsonl`` (``ieta.evaluate``, read back by the
#: report)
REVISED_PREFIX = {"main": "eval_", "greedy": "eval_greedy_"}


def carry_forward(previous: list[dict], revised: list[dict]) -> list[dict]:
    """Each sample's state after a turn: itself if it had passed, else its executed revision (if any)."""
    fixed = {(r["task_id"], r["repair_of"]): r for r in revised}
    return [e if e["passed"] else fixed.get((e["task_id"], e["completion_id"]), e) for e in previous]
