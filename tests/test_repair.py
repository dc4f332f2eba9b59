"""The repair turn on real execution traces from the sandbox."""

import torch

from ieta.config import SamplerConfig
from ieta.data import load_problems
from ieta.execute import SandboxConfig, execute_samples
from ieta.models import load_model, load_tokenizer
from ieta.repair import after_repair, build_repair_prompt, describe_execution, sample_repairs

PROBLEM = load_problems("humaneval", limit=3)[2]  # truncate_number(number) -> decimal part
BROKEN = {"task_id": PROBLEM.task_id, "completion_id": 0, "completion": "    parts = str(number).split('.')\n"
          "    return float(parts[2])\n"}
WRONG = {"task_id": PROBLEM.task_id, "completion_id": 1, "completion": "    return number\n"}


def run(samples):
    return execute_samples({PROBLEM.task_id: PROBLEM}, samples, config=SandboxConfig(timeout=5), progress=False)


def test_feedback_shows_error_line_assert_and_trace():
    broken, wrong = run([BROKEN, WRONG])
    text = describe_execution(PROBLEM, broken)
    assert "IndexError" in text and "return float(parts[2])" in text and "Last executed lines" in text
    assert "parts=" in text  # locals from the line-level trace
    text = describe_execution(PROBLEM, wrong)
    assert "Failing test: assert" in text and "Expected: 0.5" in text and "Got: 3.5" in text


def test_repair_prompt_and_samples_from_tiny_model():
    [broken] = run([BROKEN])
    tok = load_tokenizer("tiny")
    prompt = build_repair_prompt(PROBLEM, broken, tok, "chat")
    assert prompt.count("<|im_start|>user") == 2 and "IndexError" in prompt
    assert prompt.endswith("```python\n" + PROBLEM.prompt)
    model = load_model("tiny", torch.float32, "cpu", random_init={"hidden_size": 16, "intermediate_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1})
    [repair] = sample_repairs(model, tok, {PROBLEM.task_id: PROBLEM}, [broken], SamplerConfig(max_new_tokens=8),
                              temperature=0.0, prompt_format="chat", seed=0, progress=False)
    assert repair["repair_of"] == 0 and repair["task_id"] == PROBLEM.task_id


def test_after_repair_replaces_failing_samples_with_their_executed_repairs():
    broken, wrong = run([BROKEN, WRONG])
    fix = {"task_id": PROBLEM.task_id, "completion_id": "0-repair", "repair_of": 0,
           "completion": PROBLEM.canonical_solution}
    [fixed] = run([fix])
    final = after_repair([broken, wrong], [fixed])
    assert [r["passed"] for r in final] == [True, False]
