"""DPO's forward with what its rows share computed once: each pair's prompt, and the frozen blocks below the adapters.

**One segment per pair, no padding.** TRL's DPOTrainer runs a batch of ``B`` pairs as ``2B`` right-padded rows,
``[chosen_1..B, rejected_1..B]``, so every prompt goes through the model twice, forward and backward (and once more
for the reference log-probs), and every row is padded to the longest. Within :func:`shared_forward` the backbone
runs the batch as one row of ``B`` segments, one per pair, back to back and unpadded:

    [common prefix | rest of chosen | rest of rejected] [next pair ...]

each with its own positions (the rejected rest restarts where the prefix ends). Attention runs per segment in two
calls of the model's own attention function (sdpa or eager): the prefix and chosen rest, causal; the rejected rest
over the prefix and itself, never chosen. The hidden states are then gathered back into TRL's ``2B`` layout, so the
LM head, the log-probs and the loss are TRL's own. The common prefix is the longest one of the two rows' tokens (the
prompt, and any first completion tokens both share): each of its hidden states is the same in both rows, so the
values are those of the two separate rows, up to rounding. The linear layers see only real tokens.

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

import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ieta.decode import ARCHITECTURES

#: attention implementations whose function :func:`shared_forward` calls per segment
_MASKED = ("sdpa", "eager")
#: the keyword that carries a forward's :class:`Segments` from the blocks to the attention function
SEGMENTS = "ieta_segments"


@dataclass
class Part:
    """One attention call of a segment: its queries' span in the row, its keys' spans, and its mask
    (``None``: causal over the keys, which are then the queries' own span)."""

    queries: slice
    keys: list[slice]
    allowed: torch.Tensor | None  # (1, 1, queries, keys) bool: query may attend to key


@dataclass
class Packed:
    """One unpadded row of ``B`` segments for ``2B`` right-padded rows of length ``L``."""

    ids: torch.Tensor  # (1, N)
    positions: torch.Tensor  # (1, N)
    parts: list[Part]  # the attention calls, in row order
    index: torch.Tensor  # (2B, L): each original position's place in the row
    spans: list[slice]  # each pair's segment
    keys: list[tuple[bytes, bytes]]  # each pair's (chosen, rejected) tokens: what its segment depends on


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
    b, lengths, device = rows // 2, lengths.tolist(), input_ids.device
    chosen = [input_ids[i, : lengths[i]] for i in range(b)]
    rejected = [input_ids[b + i, : lengths[b + i]] for i in range(b)]
    ids, positions, parts, spans = [], [], [], []
    index = torch.zeros(rows, width, dtype=torch.long, device=device)
    start = 0
    for i, (c, r) in enumerate(zip(chosen, rejected)):
        s = _common(c, r)
        rest = len(r) - s  # rejected's tokens after the shared prefix
        ids += [c, r[s:]]
        positions += [torch.arange(len(c), device=device), torch.arange(s, len(r), device=device)]
        parts.append(Part(slice(start, start + len(c)), [slice(start, start + len(c))], None))
        if rest:
            allowed = torch.ones(rest, s + rest, dtype=torch.bool, device=device)
            allowed[:, s:] = torch.ones(rest, rest, dtype=torch.bool, device=device).tril()
            own = slice(start + len(c), start + len(c) + rest)
            parts.append(Part(own, [slice(start, start + s), own], allowed[None, None]))
        index[i, : len(c)] = start + torch.arange(len(c), device=device)
        index[b + i, :s] = start + torch.arange(s, device=device)
        index[b + i, s : len(r)] = start + len(c) + torch.arange(rest, device=device)
        spans.append(slice(start, start + len(c) + rest))
        start += len(c) + rest
    keys = [(c.cpu().numpy().tobytes(), r.cpu().numpy().tobytes()) for c, r in zip(chosen, rejected)]
    return Packed(torch.cat(ids)[None], torch.cat(positions)[None], parts, index, spans, keys)


class Segments:
    """A packed forward's attention calls, with their masks in the form ``implementation`` takes (sdpa: boolean, a
    causal call without a mask; eager: additive, every call with one)."""

    def __init__(self, parts: list[Part], implementation: str, dtype: torch.dtype, device: torch.device) -> None:
        self.parts = parts
        self.masks = [self._mask(part, implementation, dtype, device) for part in parts]

    @staticmethod
    def _mask(part: Part, implementation: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        allowed = part.allowed
        if implementation == "sdpa":
            return allowed
        if allowed is None:
            n = part.queries.stop - part.queries.start
            allowed = torch.ones(n, n, dtype=torch.bool, device=device).tril()[None, None]
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed,
                                                                                          torch.finfo(dtype).min)


class _SegmentAttention:
    """Stands in for an attention function within :func:`shared_forward`: a call that carries :class:`Segments`
    runs the function once per part and joins the outputs; any other call runs it unchanged."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        segments = kwargs.pop(SEGMENTS, None)
        if segments is None:
            return self.inner(module, query, key, value, attention_mask, **kwargs)
        outputs = []
        for part, mask in zip(segments.parts, segments.masks):
            k, v = (x[:, :, part.keys[0]] if len(part.keys) == 1 else torch.cat([x[:, :, s] for s in part.keys], 2)
                    for x in (key, value))
            outputs.append(self.inner(module, query[:, :, part.queries], k, v, mask, **kwargs)[0])
        return torch.cat(outputs, 1), None


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


def _blocks(backbone, hidden, blocks, positions, **kwargs):
    embeddings = backbone.rotary_emb(hidden, positions)
    for layer in blocks:
        hidden = layer(hidden, attention_mask=None, position_embeddings=embeddings, position_ids=positions, **kwargs)
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
        from transformers.modeling_outputs import BaseModelOutputWithPast

        backbone = self.backbone
        kwargs[SEGMENTS] = Segments(packed.parts, self.implementation, backbone.embed_tokens.weight.dtype,
                                    input_ids.device)
        frozen = frozen_blocks(backbone)
        hidden = self._after_frozen(packed, frozen, kwargs) if frozen else backbone.embed_tokens(packed.ids)
        hidden = _blocks(backbone, hidden, backbone.layers[frozen : backbone.config.num_hidden_layers],
                         packed.positions, **kwargs)
        hidden = backbone.norm(hidden)[0][packed.index]
        return BaseModelOutputWithPast(last_hidden_state=hidden)

    def _after_frozen(self, packed: Packed, frozen: int, kwargs) -> torch.Tensor:
        backbone = self.backbone
        if all(key in self.kept for key in packed.keys):
            return torch.cat([self.kept[key] for key in packed.keys])[None]
        with torch.no_grad():
            hidden = _blocks(backbone, backbone.embed_tokens(packed.ids), backbone.layers[:frozen], packed.positions,
                             **kwargs)
        for key, span in zip(packed.keys, packed.spans):
            self.kept[key] = hidden[0, span].clone()
        return hidden


def _eager_function(backbone):
    """The eager attention function the backbone's blocks fall back to (each modeling module has its own)."""
    return getattr(sys.modules[type(backbone.layers[0].self_attn).__module__], "eager_attention_forward", None)


@contextmanager
def shared_forward(model):
    """Within the block, ``model``'s backbone (``model.base_model``: the decoder stack without the LM head) computes
    what a preference pair's rows share once when it is called on TRL's DPO layout; other calls are unchanged.
    transformers' attention function for the model's implementation is wrapped meanwhile (:class:`_SegmentAttention`),
    also for gradient checkpointing's recomputation in the backward pass."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    backbone, config = model.base_model, model.config
    implementation = getattr(config, "_attn_implementation", None)
    if backbone is model or implementation not in _MASKED or not full_attention_stack(config):
        yield
        return
    inner = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, _eager_function(backbone))
    if inner is None or (implementation == "sdpa" and inner is not sdpa_attention_forward):
        yield  # an attention function registered by someone else: leave it alone
        return
    local = ALL_ATTENTION_FUNCTIONS._local_mapping
    previous = local.get(implementation)
    own = backbone.__dict__.get("forward")
    local[implementation] = _SegmentAttention(inner)
    backbone.forward = _Forward(backbone, backbone.forward, implementation)
    try:
        yield
    finally:
        if own is None:
            del backbone.forward
        else:
            backbone.forward = own
        if previous is None:
            del local[implementation]
        else:
            local[implementation] = previous
