"""The frozen blocks below the first adapter, run once per row: GRPO's reference pass and its loss see the same rows.

With ``beta != 0`` TRL's GRPOTrainer runs each generation batch through the policy's backbone twice: the reference
log-probs (adapters disabled, no grad) and the forward of the loss. With ``method.lora.top_layers`` the blocks below
the first adapted one (no adapter, no trainable weight, no dropout; :func:`ieta.dpo_forward.frozen_blocks`) give a
row the same hidden states both times. :class:`FrozenReplay` wraps the backbone's forward: a call whose rows were all
seen since :meth:`FrozenReplay.clear` gets those blocks' output back instead of running them (the first of them
returns it, the others pass it on); any other call runs them and keeps each row's output. A row's key is its token
ids and attention mask as padded: what the blocks' output depends on (HF numbers positions by column). Everything
else (embedding, masks, the adapted blocks, the norm, TRL's head and loss) is the model's own forward.

Only Qwen2 and Llama backbones (:data:`ieta.decode.ARCHITECTURES`) without windowed attention take it; calls with a
cache, ``inputs_embeds`` or ``position_ids`` run unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ieta.dpo_forward import frozen_blocks


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


class FrozenReplay:
    """The backbone's forward, keeping the frozen blocks' output per row; ``replayed``/``computed`` count rows."""

    def __init__(self, backbone) -> None:
        self.backbone, self.original = backbone, backbone.forward
        self.kept: dict[bytes, torch.Tensor] = {}
        self.replayed = self.computed = 0

    def clear(self) -> None:
        """Forget the kept rows (a new generation batch: its rows are new)."""
        self.kept.clear()

    def __call__(self, input_ids=None, attention_mask=None, **kwargs):
        frozen = frozen_blocks(self.backbone)
        usable = (frozen and input_ids is not None and input_ids.dim() == 2 and attention_mask is not None
                  and attention_mask.shape == input_ids.shape and not kwargs.get("use_cache")
                  and not any(kwargs.get(k) is not None for k in ("inputs_embeds", "position_ids", "past_key_values")))
        if not usable:
            return self.original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        layers = self.backbone.layers[:frozen]
        keys = [_key(i, m) for i, m in zip(input_ids, attention_mask)]
        if all(k in self.kept for k in keys):
            self.replayed += len(keys)
            with _replayed(layers, torch.stack([self.kept[k] for k in keys])):
                return self.original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        kept: list[torch.Tensor] = []
        hook = layers[-1].register_forward_hook(lambda module, args, output: kept.append(output.detach()))
        try:
            out = self.original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        finally:
            hook.remove()
        self.computed += len(keys)
        for key, row in zip(keys, kept[0]):
            self.kept[key] = row
        return out


def install(model) -> FrozenReplay | None:
    """Wrap the forward of ``model``'s backbone (a PEFT or HF causal LM) in a :class:`FrozenReplay`; None when the
    model is not of a shape it takes (then nothing changes)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = inner.base_model
    if backbone is inner or not frozen_blocks(backbone):
        return None
    replay = FrozenReplay(backbone)
    backbone.forward = replay
    return replay
