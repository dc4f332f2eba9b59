"""DPO's forward with what its rows share computed once: each pair's prompt, and the frozen blocks below the adapters.

**One row per pair.** TRL's DPOTrainer runs a batch of ``B`` pairs as ``2B`` right-padded rows,
``[chosen_1..B, rejected_1..B]``, so every prompt goes through the model twice, forward and backward (and once more
for the reference log-probs). Within :func:`shared_forward` the backbone packs each pair into one row instead:

    [common prefix | rest of chosen | rest of rejected]

with its own positions (the rejected rest restarts where the prefix ends) and a block mask: the prefix is causal, the
chosen rest sees the prefix and itself, the rejected rest sees the prefix and itself, never chosen. The hidden states
are then gathered back into TRL's ``2B`` layout, so the LM head, the log-probs and the loss are TRL's own. The common
prefix is the longest one of the two rows' tokens (the prompt, and any first completion tokens both share): each of its
hidden states is the same in both rows, so the values are those of the two separate rows, up to rounding.

**Frozen blocks once per pair.** With ``method.lora.top_layers`` the blocks below the first adapter have no trainable
weight and no adapter, so their output for a pair is the same in the reference pass (TRL's precomputed reference
log-probs) and in every training step. The first forward of a pair keeps it; later forwards of that pair start at the
first adapted block.

One difference from TRL's two rows: LoRA dropout draws one mask for the shared prefix instead of two.
Rows of any other shape (odd batch, left padding, a cache, ``inputs_embeds``, custom masks) run the model unchanged,
and so do models other than :data:`ieta.decode.ARCHITECTURES` (Qwen2, Llama: a backbone that is exactly embed ->
full-attention blocks -> norm; others may window their attention or scale their embeddings) and windowed configs.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ieta.decode import ARCHITECTURES

#: attention implementations that take a custom 4D mask (sdpa: boolean; eager: additive)
_MASKED = ("sdpa", "eager")


@dataclass
class Packed:
    """``B`` packed rows of length ``S`` for ``2B`` rows of length ``L``."""

    ids: torch.Tensor  # (B, S)
    positions: torch.Tensor  # (B, S)
    allowed: torch.Tensor  # (B, 1, S, S) bool: query may attend to key
    index: torch.Tensor  # (2B, L): each original position's place in the flattened (B * S) packed rows
    lengths: list[int]  # each packed row's real tokens
    keys: list[tuple[bytes, bytes]]  # each pair's (chosen, rejected) tokens: what its packed row depends on


def _common(a: torch.Tensor, b: torch.Tensor) -> int:
    m = min(len(a), len(b))
    differ = (a[:m] != b[:m]).nonzero()
    return int(differ[0]) if len(differ) else m


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> Packed | None:
    """The packed form of ``[chosen_1..B, rejected_1..B]`` right-padded rows (``None``: not that layout)."""
    rows, width = input_ids.shape
    if rows % 2 or attention_mask is None or attention_mask.dim() != 2 or attention_mask.shape != input_ids.shape:
        return None
    lengths = attention_mask.sum(-1)
    if not torch.equal(attention_mask.bool(), torch.arange(width, device=input_ids.device) < lengths[:, None]):
        return None  # not right-padded
    b, lengths = rows // 2, lengths.tolist()
    chosen = [input_ids[i, : lengths[i]] for i in range(b)]
    rejected = [input_ids[b + i, : lengths[b + i]] for i in range(b)]
    shared = [_common(c, r) for c, r in zip(chosen, rejected)]
    ends = [len(c) + len(r) - s for c, r, s in zip(chosen, rejected, shared)]
    size, device = max(ends), input_ids.device
    ids = input_ids.new_zeros(b, size)
    positions = torch.zeros(b, size, dtype=torch.long, device=device)
    segment = torch.full((b, size), -1, dtype=torch.long, device=device)  # 0 prefix, 1 chosen, 2 rejected, -1 pad
    index = torch.zeros(rows, width, dtype=torch.long, device=device)
    for i, (c, r, s, end) in enumerate(zip(chosen, rejected, shared, ends)):
        ids[i, : len(c)], ids[i, len(c) : end] = c, r[s:]
        positions[i, : len(c)] = torch.arange(len(c), device=device)
        positions[i, len(c) : end] = torch.arange(s, len(r), device=device)
        segment[i, :s], segment[i, s : len(c)], segment[i, len(c) : end] = 0, 1, 2
        index[i, : len(c)] = i * size + torch.arange(len(c), device=device)
        index[b + i, :s] = i * size + torch.arange(s, device=device)
        index[b + i, s : len(r)] = i * size + len(c) + torch.arange(len(r) - s, device=device)
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(size, size, dtype=torch.bool, device=device).tril()
    allowed = causal & (key >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(size, dtype=torch.bool, device=device)  # a padding row attends to itself: no empty softmax
    keys = [(c.cpu().numpy().tobytes(), r.cpu().numpy().tobytes()) for c, r in zip(chosen, rejected)]
    return Packed(ids, positions, allowed[:, None], index, ends, keys)


def _mask(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def full_attention_stack(config) -> bool:
    """Whether ``config`` is one of :data:`ieta.decode.ARCHITECTURES` with every layer attending over the whole row
    (no windowed layers): the backbones these forwards take."""
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return config.model_type in ARCHITECTURES and all(t == "full_attention" for t in layer_types)


def frozen_blocks(backbone: nn.Module) -> int:
    """How many blocks at the bottom of ``backbone`` (a Llama-shaped decoder stack) compute the same thing in every
    forward: no adapter, no trainable weight, no dropout, full attention. 0 when the stack is not of that shape."""
    layers, config = getattr(backbone, "layers", None), backbone.config
    if (layers is None or not full_attention_stack(config)
            or not all(hasattr(backbone, a) for a in ("embed_tokens", "rotary_emb", "norm"))
            or getattr(config, "attention_dropout", 0.0) or backbone.embed_tokens.weight.requires_grad):
        return 0
    for depth, layer in enumerate(layers):
        if any(p.requires_grad for p in layer.parameters()) or any(hasattr(m, "lora_A") for m in layer.modules()):
            return depth
    return 0  # nothing trains: no reason to keep anything


def _blocks(backbone, hidden, blocks, mask, positions, **kwargs):
    embeddings = backbone.rotary_emb(hidden, positions)
    for layer in blocks:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=embeddings, position_ids=positions, **kwargs)
    return hidden


class _Forward:
    """The backbone's forward within :func:`shared_forward`; ``kept`` maps a pair to its hidden states after the
    frozen blocks."""

    def __init__(self, backbone, original, implementation: str) -> None:
        self.backbone, self.original, self.implementation = backbone, original, implementation
        self.kept: dict[tuple[bytes, bytes], torch.Tensor] = {}

    def __call__(self, input_ids=None, attention_mask=None, **kwargs):
        usable = input_ids is not None and not any(kwargs.get(k) is not None for k in (
            "inputs_embeds", "position_ids", "cache", "past_key_values")) and not kwargs.get("use_cache")
        packed = pack(input_ids, attention_mask) if usable else None
        if packed is None:
            return self.original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        backbone = self.backbone
        mask = _mask(packed.allowed, self.implementation, backbone.embed_tokens.weight.dtype)
        frozen = frozen_blocks(backbone)
        if not frozen:
            out = self.original(input_ids=packed.ids, attention_mask=mask, position_ids=packed.positions, **kwargs)
            hidden = out.last_hidden_state
        else:
            out, hidden = None, self._after_frozen(packed, mask, frozen, kwargs)
            hidden = _blocks(backbone, hidden, backbone.layers[frozen : backbone.config.num_hidden_layers], mask,
                             packed.positions, **kwargs)
            hidden = backbone.norm(hidden)
        hidden = hidden.reshape(-1, hidden.shape[-1])[packed.index]
        if out is None:
            from transformers.modeling_outputs import BaseModelOutputWithPast

            return BaseModelOutputWithPast(last_hidden_state=hidden)
        out.last_hidden_state = hidden
        return out

    def _after_frozen(self, packed: Packed, mask, frozen: int, kwargs) -> torch.Tensor:
        backbone = self.backbone
        if all(key in self.kept for key in packed.keys):
            first = self.kept[packed.keys[0]]
            hidden = first.new_zeros(*packed.ids.shape, first.shape[-1])
            for i, (key, length) in enumerate(zip(packed.keys, packed.lengths)):
                hidden[i, :length] = self.kept[key]
            return hidden
        with torch.no_grad():
            hidden = _blocks(backbone, backbone.embed_tokens(packed.ids), backbone.layers[:frozen], mask,
                             packed.positions, **kwargs)
        for key, row, length in zip(packed.keys, hidden, packed.lengths):
            self.kept[key] = row[:length].clone()
        return hidden


@contextmanager
def shared_forward(model):
    """Within the block, ``model``'s backbone (``model.base_model``: the decoder stack without the LM head) computes
    what a preference pair's rows share once when it is called on TRL's DPO layout; other calls are unchanged."""
    backbone, config = model.base_model, model.config
    implementation = getattr(config, "_attn_implementation", None)
    if backbone is model or implementation not in _MASKED or not full_attention_stack(config):
        yield
        return
    own = backbone.__dict__.get("forward")
    backbone.forward = _Forward(backbone, backbone.forward, implementation)
    try:
        yield
    finally:
        if own is None:
            del backbone.forward
        else:
            backbone.forward = own
