"""Speculative decoding: prompt-lookup guesses, the decoder's multi-token step, the same tokens as plain greedy
decoding, and exact speculative sampling."""

import pytest
import torch

from ieta.config import SamplerConfig
from ieta.decode import Decoder
from ieta.drafts import prompt_lookup
from ieta.models import load_model, load_tokenizer
from ieta.sample import generate
from tests.test_sample import RANDOM_INIT


def test_prompt_lookup_follows_the_latest_occurrence_of_the_longest_suffix():
    #           0  1  2  3  4  5  6  7  8  9 10 11
    context = [5, 1, 2, 3, 9, 9, 1, 2, 3, 7, 1, 2]
    assert prompt_lookup(context + [3], 2) == [7, 1]  # [1, 2, 3] last seen at 6..8, then 7, 1
    assert prompt_lookup(context, 3) == [3, 7, 1]  # [7, 1, 2] never occurred before: [1, 2] last seen at 6..7
    assert prompt_lookup(context, 1) == [3]
    assert prompt_lookup([4, 1, 2, 8, 6, 1, 2], 5) == [8, 6, 1, 2]  # the guess runs up to the context's end
    assert prompt_lookup([1, 2, 3, 4], 4) == []  # no suffix of 2 or 3 tokens occurs before
    assert prompt_lookup([1, 1], 3) == [] and prompt_lookup([7, 7, 7], 2) == [7]
    assert prompt_lookup(context, 0) == [] and prompt_lookup([], 4) == []


def _model(seed=0):
    return load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=seed).eval()


@pytest.mark.parametrize("lengths", [None, [3, 1, 3]])
@torch.inference_mode()
def test_a_step_with_drafts_gives_the_logits_of_feeding_the_tokens_one_by_one(lengths):
    """Rows at different positions run their pending token and 3 guesses in one forward: the logits after each are
    the plain steps' (fp32). Keeping 0, 1 and 3 guesses (``advance``) leaves each row's cache as if it had decoded
    them; the next plain step agrees too, though the rejected guesses' K and V were written. With ``lengths`` the
    middle row runs only its first guess (its later logits are zero) and the forward computes 10 tokens, not 12."""
    tok = load_tokenizer("tiny")
    model = _model()
    prompts = [tok(p)["input_ids"] for p in ("def add(a, b):\n    return", "import os", "x = [1, 2, 3]\ny = x")]
    torch.manual_seed(0)
    tokens = torch.randint(0, 1000, (3, 5))  # per row: pending token, 3 guesses, one more
    plain, fast = Decoder(model, "float32", 3, 40), Decoder(model, "float32", 3, 40)
    for d in (plain, fast):
        for ids in prompts:
            d.prefill([(ids, 1)])
        d.last[:3] = tokens[:, 0]
    drafted = fast.step(tokens[:, 1:4], None if lengths is None else torch.tensor(lengths))
    assert drafted.shape[:2] == (3, 4) and torch.equal(fast.pos[:3], plain.pos[:3])  # positions do not advance
    assert fast.work[-1] == ("step", 12 if lengths is None else 10)
    real = [3, 3, 3] if lengths is None else lengths
    stepped = []
    for j in range(4):
        stepped.append(plain.step())
        plain.last[:3] = tokens[:, j + 1]
    for r in range(3):
        for j in range(4):
            want = stepped[j][r] if j <= real[r] else torch.zeros_like(stepped[j][r])
            assert torch.allclose(drafted[r, j], want, atol=1e-4)
    keep = torch.tensor([0, 1, 3])
    fast.advance(keep)
    fast.last[:3] = torch.stack([tokens[r, keep[r] + 1] for r in range(3)])
    again = fast.step()
    for r in range(3):  # a fresh decoder fed row r's prompt and its kept tokens one by one
        one = Decoder(model, "float32", 1, 40)
        one.prefill([(prompts[r], 1)])
        one.last[0] = tokens[r, 0]
        for t in tokens[r, 1 : keep[r] + 2]:
            one.step()
            one.last[0] = t
        assert torch.allclose(again[r], one.step()[0], atol=1e-4)


@pytest.mark.parametrize("max_new_tokens, stops", [(24, []), (40, ["\n\n"]), (3, [])])
@torch.inference_mode()
def test_greedy_with_prompt_lookup_gives_plain_greedys_tokens(max_new_tokens, stops):
    """Same completions as plain greedy decoding, several tokens per forward where the guesses hold: prompts that
    repeat themselves (so guesses exist), n = 2, stop strings, the token limit, rows that finish at different steps."""
    tok = load_tokenizer("tiny")
    model = _model(seed=1)
    prompts = ["def f(x):\n    return x + 1\n\ndef f(x):\n    return", "a b c d a b c d a b c",
               "for i in range(10):\n    print(i)\nfor i in range(10):\n"]
    kwargs = dict(n=2, temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens, batch_size=6, stops=stops, seed=0,
                  progress=False)
    work = {}
    out = {}
    for draft in ("none", "prompt_lookup"):
        work[draft] = []
        out[draft] = generate(model, tok, prompts, draft=draft, work=work[draft], **kwargs)
    assert out["prompt_lookup"] == out["none"]
    kept = sum(c for kind, c in work["prompt_lookup"] if kind == "kept")
    forwards = [sum(1 for kind, _ in work[d] if kind == "step") for d in ("none", "prompt_lookup")]
    if max_new_tokens > 3:
        assert kept > 0 and forwards[1] < forwards[0]  # guesses were kept: fewer forwards for the same tokens
    assert sum(c for kind, c in work["none"] if kind == "guessed") == 0


def test_sampler_draft_is_validated():
    assert SamplerConfig().draft == "prompt_lookup"  # conf/sampler/hf.yaml
    with pytest.raises(ValueError, match="sampler.draft"):
        SamplerConfig(draft="ngram")


@torch.inference_mode()
def test_guesses_past_the_cache_end_of_a_row_near_its_limit_spill_into_the_last_column():
    """Rows decode at different output lengths (later prompts join a running batch), so one row's guesses can run
    past the cache end of another row's padding: those writes go to the last column, which no real token uses, and
    every real position keeps its logits."""
    tok = load_tokenizer("tiny")
    model = _model()
    prompts = [tok(p)["input_ids"] for p in ("def add(a, b):\n    return a + b", "import os")]
    longest = max(len(p) for p in prompts)
    tight, roomy = Decoder(model, "float32", 2, longest + 2), Decoder(model, "float32", 2, longest + 8)
    for d in (tight, roomy):
        for ids in prompts:
            d.prefill([(ids, 1)])
    guesses = torch.tensor([[11, 12, 13, 14], [21, 22, 23, 24]])  # row 0 at the cache's end has no room for them
    got = tight.step(guesses)
    want = roomy.step(guesses)
    assert torch.allclose(got[0, 0], want[0, 0], atol=1e-4)  # row 0's pending token
    assert torch.allclose(got[1], want[1], atol=1e-4)  # row 1: its pending token and every guess


def _reference(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """HF's sampling distribution: softmax over TopPLogitsWarper's nucleus of ``logits / temperature``."""
    from transformers.generation.logits_process import TopPLogitsWarper

    return TopPLogitsWarper(top_p=top_p)(None, logits[None] / temperature).softmax(-1)[0]


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_sampled_verification_keeps_the_pickers_distribution(top_p):
    """Speculative sampling is exact: over 40k rows with the same logits and guesses, the first token kept is
    distributed as a plain pick at position 0; given the first guess was kept, the second as a pick at position 1;
    given both, the third at position 2. The first guess has chance 0.3, the second 0.06 and lies outside the
    nucleus at top-p 0.9 (never kept there); half the rows have a single real guess. Keeping a guess without its chance, or drawing after a
    rejection with the guess still in, moves a probability here by 0.1-0.2, far outside the tolerance."""
    from ieta.token_picker import TokenPicker

    rows, vocab, temperature = 40_000, 256, 0.8
    torch.manual_seed(0)
    probs = torch.rand(3, vocab) * 0.02 / vocab + 0.01 / vocab  # the tail: 1.0-1.5% of the mass
    probs[0, :4] = torch.tensor([0.25, 0.3, 0.25, 0.19])
    probs[1, :3] = torch.tensor([0.5, 0.42, 0.06])  # 2 lies past 0.9 of the mass before it
    probs[2] = torch.rand(vocab)
    logits = temperature * (probs / probs.sum(-1, keepdim=True)).log()
    guess = torch.tensor([1, 2])
    ref = [_reference(logits[j], temperature, top_p) for j in range(3)]
    assert (ref[1][2] == 0) == (top_p < 1)
    real = torch.ones(rows, 2, dtype=torch.bool)
    real[rows // 2 :, 1] = False
    pick = TokenPicker(temperature, top_p, torch.Generator().manual_seed(1))
    accepted, following = pick.verify(logits.expand(rows, 3, vocab), guess.expand(rows, 2), real)

    def close(tokens: torch.Tensor, want: torch.Tensor) -> None:
        got = torch.bincount(tokens, minlength=vocab).double() / len(tokens)
        sd = (want.double() * (1 - want.double()) / len(tokens)).sqrt()
        assert ((got - want.double()).abs() <= 5 * sd + 2e-3).all(), float((got - want).abs().max())

    first = torch.where(accepted > 0, guess[0], following)
    close(first, ref[0])
    after = accepted > 0
    second = torch.where(accepted[after] > 1, guess[1], following[after])
    close(second, ref[1])
    both = accepted == 2
    assert (both.sum() > 0) == (top_p >= 1) and not both[rows // 2 :].any()  # a guess past a row's real ones: never
    if both.any():
        close(following[both], ref[2])


def test_greedy_verification_keeps_guesses_equal_to_the_argmax():
    from ieta.token_picker import TokenPicker

    logits = torch.zeros(2, 3, 5)
    logits[:, 0, 1] = logits[:, 1, 2] = logits[:, 2, 4] = 1
    guess, real = torch.tensor([[1, 2], [1, 3]]), torch.tensor([[True, True], [True, True]])
    accepted, following = TokenPicker(0.0, 1.0).verify(logits, guess, real)
    assert accepted.tolist() == [2, 1] and following.tolist() == [4, 2]
    real[0, 1] = False
    accepted, following = TokenPicker(0.0, 1.0).verify(logits, guess, real)
    assert accepted.tolist() == [1, 1] and following.tolist() == [2, 2]


@torch.inference_mode()
def test_sampling_with_prompt_lookup_runs_guesses_and_is_seeded():
    """At a temperature, too, the sampler runs and keeps guesses (several tokens per forward) and the same seed gives
    the same samples."""
    tok = load_tokenizer("tiny")
    model = _model(seed=1)
    prompts = ["def f(x):\n    return x + 1\n\ndef f(x):\n    return", "a b c d a b c d a b c"]
    kwargs = dict(n=2, temperature=0.02, top_p=0.95, max_new_tokens=24, batch_size=4, stops=[], progress=False,
                  draft="prompt_lookup")
    work: list = []
    out = generate(model, tok, prompts, seed=3, work=work, **kwargs)
    assert out == generate(model, tok, prompts, seed=3, **kwargs)
    assert dict((k, c) for k, c in work if k in ("guessed", "kept"))["kept"] > 0
