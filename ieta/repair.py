"""The interactive repair turn: show the model what happened when its code ran, then sample a fix."""

from __future__ import annotations

from ieta.config import SamplerConfig
from ieta.data import Problem
from ieta.prompts import extract_completion, stop_strings, user_turn

REPAIR_INSTRUCTION = ("Your function failed when it ran against the tests. Fix it and answer with the whole corrected "
                      "function in one Python code block.")


def describe_execution(problem: Problem, record: dict, max_trace_lines: int = 12) -> str:
    """Plain-text feedback from an execution record: error, failing line, failing assert, trimmed line trace."""
    source = (problem.prompt + record["completion"]).splitlines()
    parts = [f"Outcome: {record['outcome']}"]
    if record.get("asserts_total"):
        parts.append(f"Tests passed: {record['asserts_passed']} of {record['asserts_total']}")
    if record.get("exception") and record["outcome"] != "failed":
        parts.append(f"Error: {record['exception']}: {record.get('message') or ''}".rstrip(": "))
        if record.get("line") and 0 < record["line"] <= len(source):
            parts.append(f"At line {record['line']}: {source[record['line'] - 1].strip()}")
    failure = record.get("first_failure")
    if failure:
        parts.append(f"Failing test: {failure['assert'].strip()}")
        if failure.get("expected") is not None:
            parts.append(f"Expected: {failure['expected']}\nGot: {failure.get('actual')}")
    trace = record.get("line_trace") or []
    if trace:
        lines = []
        for event in trace[-max_trace_lines:]:
            code = source[event["line"] - 1].strip() if 0 < event["line"] <= len(source) else ""
            local_vars = ", ".join(f"{k}={v}" for k, v in (event.get("locals") or {}).items())
            lines.append(f"  line {event['line']}: {code}    # {local_vars}")
        parts.append(f"Last executed lines (of {len(trace)} traced):\n" + "\n".join(lines))
    return "\n".join(parts)


def build_repair_prompt(problem: Problem, record: dict, tokenizer, prompt_format: str) -> str:
    """A follow-up turn after the failing attempt; the fixed function is prefilled like the first turn."""
    feedback = describe_execution(problem, record)
    attempt = problem.prompt + record["completion"]
    if prompt_format == "completion":
        comment = "\n".join("# " + line for line in feedback.splitlines())
        return f"{attempt}\n\n# The function above failed its tests:\n{comment}\n# Fixed version:\n{problem.prompt}"
    messages = [
        {"role": "user", "content": user_turn(problem)},
        {"role": "assistant", "content": f"```python\n{attempt}```"},
        {"role": "user", "content": f"{REPAIR_INSTRUCTION}\n\n{feedback}"},
        {"role": "assistant", "content": f"```python\n{problem.prompt}"},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)


def sample_repairs(model, tokenizer, problems: dict[str, Problem], failing: list[dict], cfg: SamplerConfig, *,
                   temperature: float, prompt_format: str, seed: int, progress: bool = True) -> list[dict]:
    """One repair sample per failing execution record; ``repair_of`` names the attempt it fixes."""
    from ieta.sample import generate

    prompts = [build_repair_prompt(problems[r["task_id"]], r, tokenizer, prompt_format) for r in failing]
    raws = generate(model, tokenizer, prompts, n=1, temperature=temperature, top_p=cfg.top_p,
                    max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, stops=stop_strings(prompt_format),
                    seed=seed, quantize=cfg.quantize, progress=progress, desc="repair") if prompts else []
    return [
        {"task_id": r["task_id"], "completion_id": f"{r['completion_id']}-repair", "repair_of": r["completion_id"],
         "completion": extract_completion(raw, prompt_format), "raw": raw, "temperature": temperature, "seed": seed}
        for r, [raw] in zip(failing, raws)
    ]


def after_repair(executions: list[dict], repairs: list[dict]) -> list[dict]:
    """Each sample's final state after one repair turn: itself if it passed, else its executed repair."""
    fixed = {(r["task_id"], r["repair_of"]): r for r in repairs}
    return [e if e["passed"] else fixed.get((e["task_id"], e["completion_id"]), e) for e in executions]
