"""Revision turns on real sandbox runs: the prompt carries public-test feedback, revisions keep their sample's id."""

import torch

from ieta.config import SamplerConfig
from ieta.data import load_problems, public_problem
from ieta.execute import SandboxConfig, execute_samples
from ieta.feedback import feedback
from ieta.models import load_model, load_tokenizer
from ieta.prompts import build_prompt
from ieta.repair import build_revision_prompt, carry_forward, env_turn, sample_revisions

PROBLEM = load_problems("humaneval", limit=3)[2]  # truncate_number(number) -> decimal part
BROKEN = {"task_id": PROBLEM.task_id, "completion_id": 0, "completion": "    parts = str(number).split('.')\n"
          "    return float(parts[2])\n"}
WRONG = {"task_id": PROBLEM.task_id, "completion_id": 1, "completion": "    return number\n"}
TINY_INIT = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 1}


def run(samples, problem=PROBLEM):
    return execute_samples({problem.task_id: problem}, samples, config=SandboxConfig(timeout=5), progress=False)


def test_revision_prompt_holds_the_attempt_and_its_public_feedback_and_prefills_the_function():
    [broken] = run([BROKEN], public_problem(PROBLEM))
    tok = load_tokenizer("tiny")
    text = feedback(PROBLEM, broken, "trace")
    prompt = build_revision_prompt(PROBLEM, [(BROKEN["completion"], text)], tok, "chat", "trace")
    assert prompt.count("<|im_start|>user") == 2 and "IndexError" in prompt and "parts[2]" in prompt
    assert prompt.endswith("```python\n" + PROBLEM.prompt) and "123.456" not in prompt  # a hidden input
    assert build_revision_prompt(PROBLEM, [], tok, "chat", "trace") == build_prompt(PROBLEM, tok, "chat")
    # the environment's text after a finished attempt continues the same conversation
    first = build_prompt(PROBLEM, tok, "chat")
    attempt = "    return number\n```"
    two_turn = build_revision_prompt(PROBLEM, [("    return number\n", text)], tok, "chat", "trace")
    assert first + attempt + tok.eos_token + env_turn(PROBLEM, text, "trace", tok, "chat")[len(tok.eos_token):] \
        == two_turn.replace(f"```python\n{PROBLEM.prompt}    return number\n```", "```python\n" + PROBLEM.prompt + attempt, 1)


def test_revisions_from_tiny_model_keep_the_id_of_the_sample_they_revise():
    [broken] = run([BROKEN], public_problem(PROBLEM))
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=TINY_INIT)
    items = [{"task_id": PROBLEM.task_id, "completion_id": 0,
              "history": [(BROKEN["completion"], feedback(PROBLEM, broken, "trace"))]}]
    [revision] = sample_revisions(model, tok, {PROBLEM.task_id: PROBLEM}, items, SamplerConfig(max_new_tokens=8),
                                  mode="trace", turn=2, temperature=0.0, prompt_format="chat", seed=0, progress=False)
    assert revision["completion_id"] == revision["repair_of"] == 0 and revision["turn"] == 2


def test_carry_forward_replaces_failing_samples_with_their_executed_revisions():
    broken, wrong = run([BROKEN, WRONG])
    fix = {"task_id": PROBLEM.task_id, "completion_id": 0, "repair_of": 0, "completion": PROBLEM.canonical_solution}
    [fixed] = run([fix])
    final = carry_forward([broken, wrong], [fixed])
    assert [r["passed"] for r in final] == [True, False]
    assert carry_forward(final, []) == final
