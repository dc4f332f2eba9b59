"""LoRA's input dropout with a cheaper mask: the same distribution as ``nn.Dropout``, about twice as fast on CPU.

PEFT drops each adapter's input with ``nn.Dropout(method.lora.dropout)``, a fresh mask per module and call. On CPU
``nn.Dropout`` draws the mask with torch's ``bernoulli_`` (~130M elements/s here, 172 ms for the 22M inputs of one
``down_proj`` at 4 x 1130 tokens), then divides and multiplies: about a third of a LoRA block's forward at GRPO's
episode lengths. :class:`MaskDropout` keeps each element with probability ``1 - p`` and scales it by ``1 / (1 - p)``
(``nn.Dropout``'s distribution); its mask comes from numpy's PCG64 bits (``p`` to within 2**-32), seeded from torch's
generator, so ``torch.manual_seed`` still fixes every mask. In eval mode, or at ``p == 0``, it is the identity.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _dropped(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool tensor of ``shape``, each element True with probability ``p`` (independently)."""
    n = shape.numel()
    seed = int(torch.randint(0, 2**62, (1,)))  # from torch's generator: torch.manual_seed fixes the mask
    bits = np.random.Generator(np.random.PCG64(seed)).bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]
    return torch.from_numpy(bits < np.uint32(min(round(p * 2**32), 2**32 - 1))).view(shape)


class _Drop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dropped: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(dropped)
        ctx.scale = scale
        return x.masked_fill(dropped, 0).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (dropped,) = ctx.saved_tensors
        return grad.masked_fill(dropped, 0).mul_(ctx.scale), None, None


class MaskDropout(nn.Module):
    """``nn.Dropout(p)`` on CPU tensors with a numpy-drawn mask (other devices: ``nn.functional.dropout``)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1); got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, training=True)
        return _Drop.apply(x, _dropped(x.shape, self.p).to(x.device), 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_mask_dropout(model) -> int:
    """Replace the ``nn.Dropout`` of every LoRA adapter in ``model`` by a :class:`MaskDropout` of the same ``p``;
    returns how many were replaced."""
    count = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, nn.ModuleDict):
            continue
        for name, drop in list(drops.items()):
            if type(drop) is nn.Dropout and drop.p > 0:
                replacement = MaskDropout(drop.p)
                replacement.train(drop.training)
                drops[name] = replacement
                count += 1
    return count
