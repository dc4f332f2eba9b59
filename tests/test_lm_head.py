"""ieta.lm_head: TRL's fused LM head on CPU gives TRL's values and gradients."""

from __future__ import annotations

import pytest
import torch
from trl.kernels import ChunkedLogProbFunction

import ieta.lm_head as lm_head
from ieta.lm_head import CpuLogProbs, cpu_lm_head
from ieta.models import load_model
from tests.test_sample import RANDOM_INIT

OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def _case(dtype, tokens=37, vocab=1000, hidden=16):
    g = torch.Generator().manual_seed(0)
    weight = (torch.randn(vocab, hidden, generator=g) * 0.5).to(dtype)
    weight[7] = weight[3]  # two tokens with the same logit everywhere: the first one is the argmax
    targets = torch.randint(0, vocab, (tokens,), generator=g)
    targets[:6] = torch.tensor([3, 7, 3, 7, 3, 7])
    states = torch.randn(tokens, hidden, generator=g)
    states[:6] = weight[targets[:6]].float() * 3  # these rows' target is (one of) the top logits
    return states.to(dtype), weight, targets, torch.randn(tokens, generator=g), torch.randn(tokens, generator=g)


def _run(function, states, weight, targets, grad_lp, grad_ent, temperature, scale, entropy_grad):
    x = states.clone().requires_grad_()
    out = function.apply(x, weight, None, targets, temperature, 128, None, scale, OUTPUTS)
    loss = (out[0] * grad_lp).sum() + ((out[1] * grad_ent).sum() if entropy_grad else 0)
    loss.backward()
    return out, x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature,scale", [(1.0, 1.0), (0.7, 1.3)])
@pytest.mark.parametrize("buffer", ["one chunk, kept", "one chunk, kept, 3-row blocks",
                                    "5-token chunks, recomputed, 2-row blocks"])
@pytest.mark.parametrize("entropy_grad", [True, False])
def test_cpu_log_probs_match_trls_kernel(monkeypatch, dtype, temperature, scale, buffer, entropy_grad):
    """All five outputs, and the gradient through the log-probs (and the entropy), against TRL's own kernel; in one
    chunk with the logits kept for the backward, and in several chunks with them recomputed; the elementwise passes
    over the whole chunk or in blocks of rows (37 tokens: the last block and chunk are short)."""
    states, weight, targets, grad_lp, grad_ent = _case(dtype)
    if buffer.startswith("5"):
        monkeypatch.setattr(lm_head, "BUFFER_BYTES", 4 * weight.shape[0] * 5)
    if "row blocks" in buffer:
        monkeypatch.setattr(lm_head, "BLOCK_BYTES", 4 * weight.shape[0] * int(buffer.split("-row")[0][-1]))
    theirs, their_grad = _run(ChunkedLogProbFunction, states, weight, targets, grad_lp, grad_ent, temperature, scale,
                              entropy_grad)
    ours, our_grad = _run(lm_head._Dispatch(ChunkedLogProbFunction), states, weight, targets, grad_lp, grad_ent,
                          temperature, scale, entropy_grad)
    for name, a, b in zip(OUTPUTS[:4], theirs, ours):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-5), name
    assert torch.equal(theirs[4], ours[4]) and 0 < int(ours[4][:6].sum()) < 6  # ties: only the first index counts
    assert our_grad.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 4e-3  # bf16: both round the gradient to bf16 once
    assert (our_grad.float() - their_grad.float()).abs().max() <= tolerance * their_grad.float().abs().max()


def test_cpu_log_probs_under_no_grad_and_without_requested_outputs():
    states, weight, targets, _, _ = _case(torch.float32)
    with torch.no_grad():
        out = CpuLogProbs.apply(states, weight, targets, 1.0, ("log_probs",))
    assert out[1:] == (None, None, None, None)
    expected = torch.log_softmax(states @ weight.t(), -1).gather(-1, targets[:, None]).squeeze(-1)
    assert torch.allclose(out[0], expected, atol=1e-5)


def test_dispatch_leaves_what_it_does_not_cover_to_trl():
    """A bias, softcapping or a trained head go to TRL's kernel."""
    calls = []

    class Spy:
        @staticmethod
        def apply(*args):
            calls.append(args)
            return ChunkedLogProbFunction.apply(*args)

    states, weight, targets, _, _ = _case(torch.float32)
    dispatch = lm_head._Dispatch(Spy)
    dispatch.apply(states, weight, torch.zeros(weight.shape[0]), targets, 1.0, 128, None, 1.0, OUTPUTS)
    dispatch.apply(states, weight, None, targets, 1.0, 128, 30.0, 1.0, OUTPUTS)
    dispatch.apply(states, weight.clone().requires_grad_(), None, targets, 1.0, 128, None, 1.0, OUTPUTS)
    assert len(calls) == 3
    dispatch.apply(states, weight, None, targets, 1.0, 128, None, 1.0, OUTPUTS)
    assert len(calls) == 3


def test_cpu_lm_head_scores_the_same_labelled_positions():
    """Through a model's fused forward: TRL's values and parameter gradients on the positions the loss uses, zero
    elsewhere; TRL's globals are restored after the block."""
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=0)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    ids = torch.tensor([[5, 9, 31, 200, 7, 8, 41, 3], [6, 1, 2, 77, 90, 4, 12, 11]])
    labels = ids.masked_fill(torch.arange(8) < 4, -100)  # a 4-token prompt, then the completion
    scored = labels[:, 1:] != -100
    layer = model.model.layers[0].mlp.down_proj.weight

    def run():
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.log_probs[scored].sum().backward()
        return out, layer.grad.clone()

    original = (trl_utils._use_triton, trl_utils._ChunkedLogProbFunction)
    every, every_grad = run()
    with cpu_lm_head():
        compact, compact_grad = run()
    assert (trl_utils._use_triton, trl_utils._ChunkedLogProbFunction) == original
    assert torch.allclose(compact.log_probs[scored], every.log_probs[scored], atol=1e-5)
    assert not compact.log_probs[~scored].any()
    assert torch.allclose(compact.entropy[scored], every.entropy[scored], atol=1e-4)
    assert torch.allclose(compact_grad, every_grad, atol=1e-6, rtol=1e-4) and compact_grad.abs().sum() > 0
