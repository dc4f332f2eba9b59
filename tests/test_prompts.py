"""Prompt formats and code extraction, on raw outputs recorded from the embedded model."""

import pytest

from ieta.data import load_problems
from ieta.models import load_tokenizer
from ieta.prompts import build_prompt, extract_completion

# Raw generations recorded from Qwen2.5-Coder-0.5B-Instruct (chat format, greedy) and shapes seen in the wild.
RECORDED = {
    "fence": ("    return [s for s in strings if substring in s]\n```", "    return [s for s in strings if substring in s]\n"),
    "prose": ("    return a + b\n```\n\nThis function adds two numbers.", "    return a + b\n"),
    "script": ("    return a + b\n\nprint(add(1, 2))\nassert add(2, 2) == 4\n", "    return a + b\n"),
    "main": ("    return a + b\n\nif __name__ == '__main__':\n    print(add(1, 2))\n", "    return a + b\n"),
    "helper": ("    return helper(a) + b\n\ndef helper(x):\n    return x\n\n# Example usage\nprint(1)",
               "    return helper(a) + b\n\ndef helper(x):\n    return x\n"),
    "constant": ("    return a + OFFSET\n\nOFFSET = 0\nprint(add(1, 2))", "    return a + OFFSET\n\nOFFSET = 0\n"),
}


@pytest.mark.parametrize("name", RECORDED)
def test_extract_completion_chat(name):
    raw, expected = RECORDED[name]
    assert extract_completion(raw, "chat") == expected


def test_extract_completion_repeated_signature_is_kept_whole():
    raw = "def add(a, b):\n    return a + b\n```"
    program = "def add(a, b):\n    \"\"\"Add.\"\"\"\n" + extract_completion(raw, "chat")
    namespace: dict = {}
    exec(compile(program, "<test>", "exec"), namespace)  # test-local code we wrote, not a model sample
    assert namespace["add"](2, 3) == 5


def test_completion_format_uses_codex_stops():
    assert extract_completion("    return 1\ndef other():\n    pass", "completion") == "    return 1\n"


def test_chat_prompt_prefills_the_function():
    tok = load_tokenizer("tiny")
    problem = load_problems("humaneval", limit=1)[0]
    text = build_prompt(problem, tok, "chat")
    assert text.endswith("<|im_start|>assistant\n```python\n" + problem.prompt)
    assert build_prompt(problem, tok, "completion") == problem.prompt
