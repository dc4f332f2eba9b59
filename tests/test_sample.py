import pytest
import torch

from ieta.config import SamplerConfig
from ieta.data import load_problems
from ieta.models import load_model, load_tokenizer
from ieta.sample import sample

RANDOM_INIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2}


def test_sample_n_per_problem_in_order_and_reproducible():
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=0)
    problems = load_problems("humaneval", limit=3)
    cfg = SamplerConfig(max_new_tokens=12, batch_size=4)
    kwargs = dict(n=3, temperature=1.0, prompt_format="chat", progress=False)
    first = sample(model, tok, problems, cfg, seed=5, **kwargs)
    assert [(r["task_id"], r["completion_id"]) for r in first] == [(p.task_id, j) for p in problems for j in range(3)]
    assert all(isinstance(r["completion"], str) and r["raw"] is not None for r in first)
    assert sample(model, tok, problems, cfg, seed=5, **kwargs) == first  # same seed, same samples
    assert sample(model, tok, problems, cfg, seed=6, **kwargs) != first
    greedy = sample(model, tok, problems[:1], cfg, seed=0, n=2, temperature=0.0, prompt_format="chat", progress=False)
    assert greedy[0]["raw"] == greedy[1]["raw"]


def test_shared_prefill_matches_plain_generate():
    """Prefilling once and repeating the KV cache gives the same greedy tokens as HF's own generate."""
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=3)
    problems = load_problems("humaneval", limit=2)
    from ieta.prompts import build_prompt
    from ieta.sample import generate

    prompts = [build_prompt(p, tok, "chat") for p in problems]
    ours = generate(model, tok, prompts, n=2, temperature=0.0, top_p=1.0, max_new_tokens=10, batch_size=4,
                    stops=[], seed=0, progress=False)
    for prompt, samples in zip(prompts, ours):
        enc = tok(prompt, return_tensors="pt")
        plain = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
        expected = tok.decode(plain[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        assert samples == [expected, expected]


def test_nucleus_sampling_keeps_hf_top_p_set():
    """Our top-p (candidates first, full sort for wide nuclei) samples exactly from HF's TopPLogitsWarper set."""
    from transformers.generation.logits_process import TopPLogitsWarper

    from ieta.token_picker import TokenPicker

    torch.manual_seed(0)
    logits = torch.randn(3, 4000)
    logits[0, :3] += 12  # narrow nucleus: a few tokens
    logits[1] *= 0.01  # nearly flat: the nucleus is wider than the candidates
    kept = TopPLogitsWarper(top_p=0.9)(None, logits / 0.7).isfinite()
    pick = TokenPicker(0.7, 0.9)
    draws = torch.stack([pick(logits) for _ in range(300)])
    for row in range(3):
        assert kept[row, draws[:, row]].all()
    assert set(draws[:, 0].tolist()) == set(kept[0].nonzero().squeeze(-1).tolist())
    assert kept[1].sum() > 1024 and len(set(draws[:, 1].tolist())) > 200


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_picker_probabilities_and_grouped_top_k_are_softmax_and_topk(dtype):
    """The reused buffer gives ``softmax(logits / T)`` bitwise, at fewer rows than before too; the grouped top-k (a
    vocabulary of 300 groups) gives torch.topk's values, ties included (bf16 logits tie often), at the right tokens."""
    from ieta.token_picker import GROUP, TokenPicker, top_k

    torch.manual_seed(0)
    pick = TokenPicker(0.8, 0.95)
    for rows in (5, 3):
        logits = (torch.randn(rows, 300 * GROUP) * 3).to(dtype)
        logits[:, 7 * GROUP + 5] += 20  # one peaked row element, in a middle group
        probs = pick.probabilities(logits)
        assert torch.equal(probs, (logits.float() / 0.8).softmax(-1))
        for k in (1, 64):
            want, got = probs.topk(k, dim=-1), top_k(probs, k)
            assert torch.equal(got[0], want.values) and torch.equal(probs.gather(1, got[1]), got[0])
            assert all(len(set(r)) == k for r in got[1].tolist())  # k distinct tokens
    assert pick.buffer.shape == (5, 300 * GROUP)  # grown once, reused for the smaller step


def test_finished_rows_leave_the_batch_without_changing_the_others():
    """A row ends as soon as its generated text contains a stop string; the rows still decoding are unaffected."""
    from ieta.prompts import build_prompt
    from ieta.sample import generate

    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=3)
    prompts = [build_prompt(p, tok, "chat") for p in load_problems("humaneval", limit=3)]
    kwargs = dict(n=1, temperature=0.0, top_p=1.0, max_new_tokens=12, batch_size=4, seed=0, progress=False)
    free = generate(model, tok, prompts, stops=[], **kwargs)
    ids = tok(free[0][0])["input_ids"]
    stop = tok.decode(ids[1:3])  # occurs in prompt 0's continuation once its 3rd token is out
    stopped = generate(model, tok, prompts, stops=[stop], **kwargs)
    ends = [j for j in range(1, len(ids) + 1) if stop in tok.decode(ids[:j])]
    assert stopped[0][0] == tok.decode(ids[: ends[0]])  # generated text only: HF also matches across the prompt
    assert len(stopped[0][0]) < len(free[0][0])
    for i in (1, 2):
        assert stopped[i] == free[i] or stop in stopped[i][0]


def test_prompts_joining_a_running_batch_decode_as_if_alone():
    """Continuous batching: a prompt prefilled into a batch mid-flight (left-padded into its KV cache) gets the
    same greedy tokens as when it is decoded alone."""
    from ieta.sample import generate

    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=1)
    # this random model continues prompt 0 with " return return return TITLE ...": the stop ends that row at step 4,
    # so prompt 3 joins while prompt 2 (the longest, admitted first) is still decoding, then prompt 1 joins prompt 3
    prompts = ["def f():\n    return", "1 2 3 4 5 6 7", "hello world, this is a longer prompt than the others",
               "import os\nimport"]
    kwargs = dict(n=1, temperature=0.0, top_p=1.0, max_new_tokens=16, stops=["TITLE"], seed=0, progress=False)
    alone = [generate(model, tok, [p], batch_size=1, **kwargs)[0] for p in prompts]
    assert alone[0] == [" return return return TITLE"] and all("TITLE" not in a[0] for a in alone[1:])
    assert generate(model, tok, prompts, batch_size=2, **kwargs) == alone
