"""DPO's shared forward (ieta.dpo_forward: one unpadded segment per pair, frozen blocks kept) gives TRL's per-token
log-probs and gradients."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from trl.trainer.utils import add_fused_lm_head

from ieta.models import load_model
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ieta.dpo_forward import frozen_blocks, pack, shared_forward
from tests.test_sample import RANDOM_INIT

PROMPT = [5, 9, 31, 200, 7]
#: pairs as (prompt, chosen completion, rejected completion): completions that share their first token, that share
#: nothing, one a prefix of the other (both ways), and a pair whose prompt differs from the others' (a 1-token prompt)
PAIRS = [
    (PROMPT, [8, 41, 3], [8, 42, 3, 9, 9]),
    (PROMPT + [66, 12], [13, 14, 15, 16], [99, 98]),
    ([6, 1], [2, 77, 90], [2, 77, 90, 4, 4, 4]),
    ([44], [17, 18], [19]),
    ([3, 4], [5, 6, 7], [5]),
]


def _batch(pairs):
    """TRL's DPO layout: [chosen..., rejected...], right-padded, labels only on completion tokens."""
    rows = [p + c for p, c, _ in pairs] + [p + r for p, _, r in pairs]
    prompts = [len(p) for p, _, _ in pairs] * 2
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    completion = torch.tensor([[0] * n + [1] * (len(r) - n) + [0] * (width - len(r)) for r, n in zip(rows, prompts)])
    return ids, mask, ids.masked_fill(completion == 0, -100)


def _model(implementation: str, top: int | None = None, layers: int = 2):
    """The tiny Qwen2 with TRL's fused head and a random (non-zero) LoRA adapter on all blocks, or the ``top`` ones."""
    model = load_model("tiny", torch.float32, "cpu", random_init={**RANDOM_INIT, "num_hidden_layers": layers}, seed=0)
    model.config._attn_implementation = implementation
    add_fused_lm_head(model)
    where = None if top is None else list(range(layers - top, layers))
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
                                             lora_dropout=0.0, init_lora_weights=False, layers_to_transform=where))
    return model


def _log_probs_and_grads(model, ids, mask, labels):
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True, use_cache=False).log_probs
    out.sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _assert_same(got, want):
    (packed, packed_grads), (separate, grads) = got, want
    assert torch.allclose(packed, separate, atol=1e-5), (packed - separate).abs().max()
    for name, grad in grads.items():
        assert torch.allclose(packed_grads[name], grad, atol=1e-5, rtol=1e-4), name
    assert any(g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_pairs_give_the_separate_rows_log_probs_and_gradients(implementation):
    model = _model(implementation)
    ids, mask, labels = _batch(PAIRS)
    separate = _log_probs_and_grads(model, ids, mask, labels)
    backbone = model.get_base_model().base_model
    assert frozen_blocks(backbone) == 0  # adapters on every block: nothing to keep
    with shared_forward(model.get_base_model()):
        assert "forward" in backbone.__dict__ and implementation in ALL_ATTENTION_FUNCTIONS._local_mapping
        packed = _log_probs_and_grads(model, ids, mask, labels)
        assert not backbone.forward.kept
    assert "forward" not in backbone.__dict__  # restored
    assert implementation not in ALL_ATTENTION_FUNCTIONS._local_mapping
    assert (labels[:, 1:] != -100).sum() == (separate[0] != 0).sum()  # every completion token is scored
    _assert_same(packed, separate)


def test_frozen_blocks_are_computed_once_per_pair_and_give_the_same_training_signal():
    """Adapters on the top 2 of 4 blocks: the first forward keeps each pair's hidden states after block 2 (also
    under no_grad with the adapter off, as TRL's reference pass runs); a later forward of the same pairs, in another
    batch, starts there and gives the full forward's log-probs and LoRA gradients."""
    model = _model("sdpa", top=2, layers=4)
    backbone = model.get_base_model().base_model
    assert frozen_blocks(backbone) == 2
    ids, mask, labels = _batch(PAIRS)
    separate = _log_probs_and_grads(model, ids, mask, labels)
    with shared_forward(model.get_base_model()):
        with torch.no_grad(), model.disable_adapter():  # the reference pass, all pairs in one batch
            model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True, use_cache=False)
        kept = backbone.forward.kept
        assert len(kept) == len(PAIRS)
        hits = []
        real = backbone.layers[0].forward
        backbone.layers[0].forward = lambda *a, **k: hits.append(1) or real(*a, **k)
        try:
            steps = [_log_probs_and_grads(model, ids, mask, labels)]
            two = [0, 1, len(PAIRS), len(PAIRS) + 1]  # a batch of the first two pairs
            steps.append(_log_probs_and_grads(model, ids[two], mask[two], labels[two]))
        finally:
            del backbone.layers[0].forward
        assert not hits  # the frozen block never ran again
    _assert_same(steps[0], separate)
    assert torch.allclose(steps[1][0], separate[0][two], atol=1e-5)


def test_gradient_checkpointing_recomputes_the_segments_attention():
    """The backward pass recomputes each block's forward: it must attend per segment as the forward did."""
    model = _model("sdpa")
    model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids, mask, labels = _batch(PAIRS)
    separate = _log_probs_and_grads(model, ids, mask, labels)
    with shared_forward(model.get_base_model()):
        packed = _log_probs_and_grads(model, ids, mask, labels)
    _assert_same(packed, separate)


def test_pack_computes_each_shared_prefix_once_without_padding():
    ids, mask, _ = _batch(PAIRS)
    packed = pack(ids, mask)
    shared = (6, 7, 5, 1, 3)  # tokens the chosen and rejected rows share
    lengths = [2 * len(p) + len(c) + len(r) - s for (p, c, r), s in zip(PAIRS, shared)]
    assert packed.ids.shape == (1, sum(lengths)) and sum(lengths) < ids.numel()
    assert [s.stop - s.start for s in packed.spans] == lengths
    # pair 0: prompt + the shared first completion token once, then chosen's rest, then rejected's rest
    assert packed.ids[0, packed.spans[0]].tolist() == PROMPT + [8, 41, 3, 42, 3, 9, 9]
    assert packed.positions[0, packed.spans[0]].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9]
    chosen, rejected = packed.parts[:2]  # prefix and chosen causal; rejected's rest over the prefix and itself
    assert chosen.queries == slice(0, 8) and chosen.keys == [slice(0, 8)] and chosen.allowed is None
    assert rejected.queries == slice(8, 12) and rejected.keys == [slice(0, 6), slice(8, 12)]
    assert rejected.allowed[0, 0].tolist() == [[True] * 6 + [j <= i for j in range(4)] for i in range(4)]
    last = packed.parts[-1]  # pair 4: rejected is a prefix of chosen, so one causal call covers both
    assert last.queries == packed.spans[-1] and last.allowed is None
    assert len(packed.parts) == 2 * len(PAIRS) - 1
    for row, n in enumerate(mask.sum(-1).tolist()):  # gathered back, each of TRL's rows
        assert packed.ids[0, packed.index[row, :n]].tolist() == ids[row, :n].tolist()


def test_other_layouts_run_unchanged():
    ids, mask, _ = _batch(PAIRS)
    assert pack(ids[:3], mask[:3]) is None  # odd batch
    assert pack(ids, mask.flip(-1)) is None  # left padding
    assert pack(ids, None) is None
    model = _model("sdpa").get_base_model()
    with torch.no_grad():
        plain = model(input_ids=ids[:3], attention_mask=mask[:3]).logits
        with shared_forward(model):
            same = model(input_ids=ids[:3], attention_mask=mask[:3]).logits
    assert torch.equal(plain, same)
    model.config.model_type = "gemma"  # not a known embed -> blocks -> norm backbone: TRL's own rows
    with shared_forward(model):
        assert "forward" not in model.base_model.__dict__
