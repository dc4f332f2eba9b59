"""GRPO's backbone forward: right-padded rows attend without a mask, and the frozen blocks run once per row.

**No mask for right-padded rows.** TRL passes an attention mask with every batch, so HF's sdpa attention takes the
masked kernel (about 1.1x the causal one's time forward, 1.5x backward at a thousand tokens). When no row of a call has
left padding (a GRPO group shares its prompt, so a batch of one group has none), the mask only hides padding after
each row's last token, which causal attention never lets a real token see: the call runs with ``attention_mask=None``
(causal), with the same values at every real position; padded positions, which TRL's loss masks out, see the
padding before them instead of themselves alone.

**Environment tokens are not scored.** A multi-turn episode's completion holds the environment's feedback, which the
loss masks out (``env_mask``, TRL's ``tool_mask``), yet TRL's fused LM head scores every completion token, forward
and backward: over the 152k vocabulary that was 72% of the backward pass at ``interactive``'s quick settings. The
trainer notes each completion's masked positions (:meth:`GrpoForward.skip_unscored`), and the model's forward then
labels them -100, so the head skips them; their log-probs and entropies come out 0, at positions every use of them
(loss, KL, entropy, metrics) multiplies by the mask's 0.

**Frozen blocks once per row.**
With ``beta != 0`` TRL's GRPOTrainer runs each generation batch through the policy's backbone twice: the reference
log-probs (adapters disabled, no grad) and the forward of the loss. With ``method.lora.top_layers`` the blocks below
the first adapted one (no adapter, no trainable weight, no dropout; :func:`ieta.dpo_forward.frozen_blocks`) give a
row the same hidden states both times. :class:`GrpoForward` wraps the backbone's forward: a call whose rows were all
seen since :meth:`GrpoForward.clear` gets those blocks' output back instead of running them (the first of them
returns it, the others pass it on); any other call runs them and keeps each row's output. A row's key is its token
ids and attention mask as padded: what the blocks' output depends on (HF numbers positions by column). Everything
else (embedding, masks, the adapted blocks, the norm, TRL's head and loss) is the model's own forward.

Only Qwen2 and Llama backbones (:data:`ieta.decode.ARCHITECTURES`) without windowed attention, under sdpa or eager
attention, take it; calls with a cache, ``inputs_embeds``, ``position_ids`` or a 4D mask run unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from ieta.dpo_forward import frozen_blocks, full_attention_stack

#: attention implementations that treat ``attention_mask=None`` as causal over the whole row
_CAUSAL = ("sdpa", "eager")


def _key(ids: torch.Tensor, mask: torch.Tensor) -> bytes:
    return ids.cpu().numpy().tobytes() + b"|" + mask.cpu().numpy().tobytes()


@contextmanager
def _replayed(layers, hidden: torch.Tensor):
    """Within the block ``layers`` (the frozen ones, bottom first) output ``hidden`` without computing anything."""
    first, rest = layers[0], layers[1:]
    first.forward = lambda hidden_states, *args, **kwargs: hidden
    for layer in rest:
        layer.forward = lambda hidden_states, *args, **kwargs: hidden_states
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def right_padded(mask: torch.Tensor) -> bool:
    """Whether every row of a 2D attention mask is ones, then zeros (no left or inner padding)."""
    lengths = mask.sum(-1, keepdim=True)
    return bool(torch.equal(mask.bool(), torch.arange(mask.shape[-1], device=mask.device) < lengths))


class GrpoForward:
    """The backbone's forward, keeping the frozen blocks' output per row; ``replayed``/``computed`` count rows of
    frozen blocks, ``unmasked`` the calls that ran without a mask, ``skipped`` the positions left unscored."""

    def __init__(self, backbone) -> None:
        self.backbone, self.original = backbone, backbone.forward
        self.kept: dict[bytes, torch.Tensor] = {}
        #: per completion (its token ids' bytes), the positions the loss masks out
        self.unscored: dict[bytes, torch.Tensor] = {}
        self.replayed = self.computed = self.unmasked = self.skipped = 0
        #: (module, its own instance ``forward`` or None) for :meth:`restore`
        self.saved: list = []

    def restore(self) -> None:
        """Give the wrapped modules their own forwards back (those :func:`install` found), and forget every row."""
        for obj, own in self.saved:
            if own is None:
                obj.__dict__.pop("forward", None)
            else:
                obj.forward = own
        self.saved = []
        self.clear()

    def clear(self) -> None:
        """Forget the kept rows and the noted completions (a new generation batch: its rows are new)."""
        self.kept.clear()
        self.unscored.clear()

    def skip_unscored(self, completions: list[list[int]], masks: list[list[int]] | None) -> None:
        """Note the positions of each completion whose mask (``tool_mask``: 0 on environment tokens) is 0."""
        for ids, mask in zip(completions, masks or []):
            if len(mask) == len(ids) and 0 in mask:
                key = np.asarray(ids, dtype=np.int64).tobytes()
                drop, known = torch.tensor([m == 0 for m in mask]), self.unscored.get(key)
                # the same tokens masked two ways: score them all
                self.unscored[key] = drop if known is None or torch.equal(known, drop) else torch.zeros_like(drop)

    def labels_without_unscored(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` with -100 at the noted positions of each row's completion (its labelled tokens)."""
        labels = labels.clone()
        for row in range(labels.shape[0]):
            positions = (labels[row] != -100).nonzero().squeeze(-1)
            drop = self.unscored.get(input_ids[row, positions].cpu().numpy().astype(np.int64).tobytes())
            if drop is not None and len(drop) == len(positions):
                labels[row, positions[drop.to(positions.device)]] = -100
                self.skipped += int(drop.sum())
        return labels

    def scored_forward(self, forward):
        """``forward`` (TRL's fused causal-LM forward) with the noted positions unlabelled."""
        def scored(*args, labels=None, **kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if labels is not None and self.unscored and kwargs.get("fused_lm_head") and ids is not None:
                labels = self.labels_without_unscored(ids, labels)
            return forward(*args, labels=labels, **kwargs)
        return scored

    def __call__(self, input_ids=None, attention_mask=None, **kwargs):
        usable = (input_ids is not None and input_ids.dim() == 2 and attention_mask is not None
                  and attention_mask.dim() == 2 and attention_mask.shape == input_ids.shape
                  and not kwargs.get("use_cache")
                  and not any(kwargs.get(k) is not None for k in ("inputs_embeds", "position_ids", "past_key_values")))
        if not usable:
            return self.original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        mask = attention_mask
        if right_padded(attention_mask):
            mask, self.unmasked = None, self.unmasked + 1
        frozen = frozen_blocks(self.backbone)
        if not frozen:
            return self.original(input_ids=input_ids, attention_mask=mask, **kwargs)
        layers = self.backbone.layers[:frozen]
        keys = [_key(i, m) for i, m in zip(input_ids, attention_mask)]
        if all(k in self.kept for k in keys):
            self.replayed += len(keys)
            with _replayed(layers, torch.stack([self.kept[k] for k in keys])):
                return self.original(input_ids=input_ids, attention_mask=mask, **kwargs)
        kept: list[torch.Tensor] = []
        hook = layers[-1].register_forward_hook(lambda module, args, output: kept.append(output.detach()))
        try:
            out = self.original(input_ids=input_ids, attention_mask=mask, **kwargs)
        finally:
            hook.remove()
        self.computed += len(keys)
        for key, row in zip(keys, kept[0]):
            self.kept[key] = row
        return out


def install(model) -> GrpoForward | None:
    """Wrap the forward of ``model``'s backbone (a PEFT or HF causal LM) in a :class:`GrpoForward`, and the causal
    LM's (TRL's fused head) in :meth:`GrpoForward.scored_forward`, until the returned object's ``restore()``; None
    when the model is not of a shape it takes (then nothing changes)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone, config = inner.base_model, inner.config
    causal = getattr(config, "_attn_implementation", None) in _CAUSAL
    if backbone is inner or not full_attention_stack(config) or not causal:
        return None
    forward = GrpoForward(backbone)
    forward.saved = [(obj, obj.__dict__.get("forward")) for obj in (backbone, inner)]
    backbone.forward = forward
    inner.forward = forward.scored_forward(inner.forward)
    return forward
