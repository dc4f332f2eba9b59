"""vLLM back-end on a GPU (`pytest -m gpu`); skipped with a reason where vLLM or CUDA is missing."""

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_vllm_greedy_matches_hf_and_draws_n(tmp_path):
    pytest.importorskip("vllm", reason="vLLM is an optional extra: pip install -e '.[vllm]'")
    from ieta.config import SamplerConfig
    from ieta.data import load_problems
    from ieta.models import load_model, load_tokenizer, resolve_path
    from ieta.sample import sample

    problems = load_problems("humaneval", limit=4)
    tok = load_tokenizer("embedded")
    cfg = SamplerConfig(backend="vllm", max_new_tokens=256)
    weights = resolve_path("embedded")
    ours = sample(None, tok, problems, cfg, n=1, temperature=0.0, prompt_format="chat", seed=0, weights=weights)
    hf = sample(load_model("embedded", torch.bfloat16, "cuda"), tok, problems, SamplerConfig(max_new_tokens=256), n=1,
                temperature=0.0, prompt_format="chat", seed=0)
    same = sum(a["completion"] == b["completion"] for a, b in zip(ours, hf))
    assert same >= 3, [(a["completion"], b["completion"]) for a, b in zip(ours, hf)]
    drawn = sample(None, tok, problems, cfg, n=3, temperature=0.8, prompt_format="chat", seed=0, weights=weights)
    assert [(r["task_id"], r["completion_id"]) for r in drawn] == [(p.task_id, j) for p in problems for j in range(3)]
