"""TRL's fused LM head on CPU: per-token log-probs of the labelled positions, without the ``[N, V]`` logits.

TRL (1.16) scores a batch through ``trl.kernels.ChunkedLogProbFunction``: ``[4096, 32768]`` logit tiles folded into
online-logsumexp statistics, by Triton on GPUs and by torch ops elsewhere. On CPU three things make it slow:

- it scores every position, the prompt's too, to keep tile shapes static for Neuron's compiler;
- its backward accumulates each vocabulary chunk's gradient GEMM in fp32 by casting both operands to fp32 (CUDA alone
  has a bf16 GEMM with an fp32 output), which on a CPU with bf16 dot products runs about 3x slower than bf16;
- each tile's torch ops allocate a dozen fresh fp32 temporaries of the tile's size, which the CPU allocator maps and
  unmaps every time.

Within :func:`cpu_lm_head` only labelled positions are scored (TRL's own compact path, as on Triton devices), and on
CPU :class:`CpuLogProbs` computes the same outputs in token chunks that each span the whole vocabulary: one GEMM per
chunk and direction, whose fp32 accumulation covers all ``V`` terms before its single rounding to the compute dtype
(the precision TRL returns: its fp32 accumulator is cast to the hidden states' dtype at the end), and the elementwise
work in place in two fp32 buffers reused by every chunk.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

#: bytes of the logits of one GEMM chunk, counted in fp32: sets the tokens per chunk; logits of at most this size are
#: kept for the backward instead of recomputed
BUFFER_BYTES = 512 * 2**20
#: bytes of each of the two fp32 work buffers of the elementwise passes, which walk a chunk in blocks of rows: small
#: enough to be reused from the allocator's heap (no fresh pages to fault in each call), large enough that the ops'
#: per-call cost is noise
BLOCK_BYTES = 16 * 2**20


def _chunk(tokens: int, vocab: int) -> int:
    return max(1, min(tokens, BUFFER_BYTES // (4 * vocab)))


def _block(vocab: int) -> int:
    return max(1, BLOCK_BYTES // (4 * vocab))


def _spans(tokens: int, chunk: int):
    """``(rows, n)`` for each chunk of ``chunk`` tokens: the slice of the chunk and its length."""
    for start in range(0, tokens, chunk):
        end = min(start + chunk, tokens)
        yield slice(start, end), end - start


def _blocks(chunk_rows: slice, size: int, block: int):
    """``(rows, local, n)`` for each block of ``block`` rows of the chunk ``chunk_rows`` (``size`` rows): the block's
    rows among all tokens, its rows within the chunk, and its length."""
    for local, n in _spans(size, block):
        yield slice(chunk_rows.start + local.start, chunk_rows.start + local.stop), local, n


class CpuLogProbs(torch.autograd.Function):
    """``log_softmax(scale * hidden @ weight.T)`` at ``targets``, and on request the entropy, ``log(sum p^2)``, the mean
    logit and whether the target is the first argmax: TRL's ``ChunkedLogProbFunction`` outputs, for a frozen head
    without bias or softcapping. Differentiable in ``hidden`` (through the log-probs and the entropy)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float,
                outputs: tuple[str, ...]):
        ctx.set_materialize_grads(False)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
        tokens, vocab = hidden.shape[0], weight.shape[0]
        weight = weight.to(dtype)
        chunk = _chunk(tokens, vocab)
        block = min(_block(vocab), chunk)
        keep = ctx.needs_input_grad[0] and tokens * vocab * weight.element_size() <= BUFFER_BYTES
        logits = torch.empty(tokens if keep else chunk, vocab, dtype=dtype)
        z, e = torch.empty(block, vocab), torch.empty(block, vocab)
        stats = {k: torch.empty(tokens) for k in ("log_z", "target", "entropy", "log_sum_sq_probs", "mean_logits")}
        top1 = torch.empty(tokens, dtype=torch.bool)
        for chunk_rows, size in _spans(tokens, chunk):
            tile = logits[chunk_rows] if keep else logits[:size]
            torch.mm(hidden[chunk_rows].to(dtype), weight.t(), out=tile)
            for rows, local, n in _blocks(chunk_rows, size, block):
                zn, en = z[:n].copy_(tile[local]), e[:n]
                if scale != 1.0:
                    zn.mul_(scale)
                target = zn.gather(-1, targets[rows, None]).squeeze(-1)
                top, first = zn.max(-1)  # the first index of the maximum, as TRL's argmax test counts it
                if "mean_logits" in outputs:
                    stats["mean_logits"][rows] = zn.mean(-1)
                zn.sub_(top[:, None])
                total = torch.exp(zn, out=en).sum(-1)
                log_total = total.log()
                stats["log_z"][rows] = top + log_total
                stats["target"][rows], top1[rows] = target, first == targets[rows]
                if "log_sum_sq_probs" in outputs:
                    stats["log_sum_sq_probs"][rows] = 2 * (torch.linalg.vector_norm(en, dim=-1).log() - log_total)
                if "entropy" in outputs:  # log(s) - sum(e * (z - max)) / s with e = exp(z - max), s = sum(e)
                    stats["entropy"][rows] = log_total - en.mul_(zn).sum(-1) / total
        log_probs = stats["target"] - stats["log_z"]
        result = [log_probs] + [stats[k] if k in outputs else None for k in ("entropy", "log_sum_sq_probs",
                                                                            "mean_logits")]
        result.append(top1 if "is_top1" in outputs else None)
        ctx.save_for_backward(hidden, weight, targets, stats["log_z"], stats["entropy"])
        ctx.scale, ctx.dtype, ctx.logits = scale, dtype, logits if keep else None
        ctx.mark_non_differentiable(*(x for x in result[2:] if x is not None))
        return tuple(result)

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy, *_):
        hidden, weight, targets, log_z, entropy = ctx.saved_tensors
        tokens, vocab = hidden.shape[0], weight.shape[0]
        grad_hidden = torch.empty_like(hidden)
        if grad_log_probs is None and grad_entropy is None:
            return grad_hidden.zero_(), None, None, None, None
        chunk, kept = _chunk(tokens, vocab), ctx.logits is not None
        block = min(_block(vocab), chunk)
        logits = ctx.logits if kept else torch.empty(chunk, vocab, dtype=ctx.dtype)
        z, e = torch.empty(block, vocab), torch.empty(block, vocab)
        for chunk_rows, size in _spans(tokens, chunk):
            tile = logits[chunk_rows] if kept else logits[:size]  # the logits, then their gradient
            if not kept:
                torch.mm(hidden[chunk_rows].to(ctx.dtype), weight.t(), out=tile)
            for rows, local, n in _blocks(chunk_rows, size, block):
                log_p, p = z[:n].copy_(tile[local]), e[:n]
                if ctx.scale != 1.0:
                    log_p.mul_(ctx.scale)
                log_p.sub_(log_z[rows, None])
                torch.exp(log_p, out=p)
                # d log p_t / dz_j = 1[j = t] - p_j; d entropy / dz_j = -p_j (log p_j + entropy)
                if grad_entropy is not None:
                    log_p.add_(entropy[rows, None]).mul_(p).mul_(grad_entropy[rows, None].float())
                if grad_log_probs is not None:
                    g = grad_log_probs[rows].float()
                    p.mul_(-g[:, None]).scatter_add_(-1, targets[rows, None], g[:, None])
                else:
                    p.zero_()
                if grad_entropy is not None:
                    p.sub_(log_p)
                if ctx.scale != 1.0:
                    p.mul_(ctx.scale)
                tile[local].copy_(p)
            grad_hidden[chunk_rows] = torch.mm(tile, weight)
        ctx.logits = None
        return grad_hidden, None, None, None, None


class _Dispatch:
    """Stands in for TRL's ``ChunkedLogProbFunction`` (same ``apply`` arguments): :class:`CpuLogProbs` for what it
    covers on CPU, TRL's function for the rest (other devices, a bias, softcapping, a trained head)."""

    def __init__(self, original) -> None:
        self.original = original

    def apply(self, hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=None):
        if outputs is None:  # TRL's own default (imported here: importing ieta.train does not load TRL)
            from trl.kernels.chunked_logprob import OPTIONAL_OUTPUTS as outputs
        if (hidden.device.type == "cpu" and bias is None and final_logit_softcapping is None
                and not weight.requires_grad and hidden.shape[0] > 0):
            return CpuLogProbs.apply(hidden, weight, targets, float(logit_scale) / float(temperature), tuple(outputs))
        return self.original.apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping,
                                   logit_scale, outputs)


@contextmanager
def cpu_lm_head():
    """Within the block TRL's fused LM head scores only the labelled (completion) positions on every device, and on
    CPU through :class:`CpuLogProbs`; the same values for the positions the loss uses. Outside TRL 1.16's layout
    (``trl.trainer.utils._use_triton`` and ``_ChunkedLogProbFunction``) nothing changes."""
    import trl.trainer.utils as trl_utils

    use_triton = getattr(trl_utils, "_use_triton", None)
    function = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if use_triton is None or function is None:  # another TRL version: nothing to change
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or use_triton(device)
    trl_utils._ChunkedLogProbFunction = _Dispatch(function)
    try:
        yield
    finally:
        trl_utils._use_triton, trl_utils._ChunkedLogProbFunction = use_triton, function
