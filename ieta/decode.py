"""IETA's own decoder for Llama-shaped models (Qwen2, Llama): continuous batching over a static KV cache.

Why not the model's own forward: at 64 rows a decode step of the 0.5B model is ~100 ms of GEMMs, and HF's forward
adds a growing ``DynamicCache`` (left-padded, concatenated on every join), per-layer masks, three separate q/k/v and
two gate/up GEMMs, and, in int8, an activation quantization per linear layer. Here:

- the weights are read once per call into fused matrices (``qkv``, ``gate_up``), with any active LoRA adapter folded
  in (``W + B A * scaling``: the sampler samples the policy as it is in memory), as int8 (one scale per output channel,
  activations one scale per token, ``torch._int_mm``) or in the compute dtype;
- the KV cache is one preallocated tensor per K and V, ``(layers, rows, kv_heads, length, head_dim)``; each row
  writes at its own position, so a prompt joining the batch is prefilled alone, unpadded, and copied into its ``n``
  rows, and a finished row is replaced by the last row (one row's cache moves, not the whole cache);
- grouped-query attention reads each KV head once for its query heads (no ``repeat_kv``).

Numerics follow HF's Qwen2/Llama modules (RMSNorm in fp32, RoPE tables from the model's own rotary embedding),
except that the residual stream stays in fp32 on every path, as in fp32 (HF's bf16 forward rounds it to bf16 after
each of its 48 adds). On the embedded model in bf16, teacher-forced over 870 tokens of 12 HumanEval completions, that
cut the mean absolute logit error against the fp32 forward from 0.026 to 0.018 (p99 0.096 to 0.068) and the argmax
disagreements from 2 to 0, for 2-4% of a decode step; greedy HumanEval-164 went from 92 to 94 passed, fp32's 94
(AVX512-BF16 EPYC, 2026-12-04).
:func:`unsupported` says why a model cannot take this path; the sampler then falls back to the model's forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ieta.cpu_path import native_bf16
from ieta.int8 import Int8Matmul

#: Hugging Face ``model_type`` values with the Llama block layout this decoder implements
ARCHITECTURES = ("qwen2", "llama")


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _lora_layers(model):
    return [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]


def unsupported(model) -> str | None:
    """Why ``model`` cannot use this decoder (``None``: it can)."""
    base = _base(model)
    cfg = base.config
    if cfg.model_type not in ARCHITECTURES:
        return f"model_type {cfg.model_type!r} is not one of {ARCHITECTURES}"
    if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "mlp_bias", False):
        return "the MLP is not a bias-free SiLU-gated one"
    if "sliding_attention" in (getattr(cfg, "layer_types", None) or []):
        return "sliding-window attention layers"
    if not isinstance(base.get_input_embeddings(), nn.Embedding):
        return "the input embedding is adapted"
    for layer in _lora_layers(model):
        if not layer.merged and not layer.disable_adapters and any(a in layer.lora_variant for a in layer.active_adapters):
            return "a LoRA variant (DoRA, ...) is active"
    return None


def _weight(linear: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias ``linear`` applies: an ``nn.Linear``'s own, or a PEFT LoRA layer's base weight plus the
    deltas of its active adapters."""
    base = getattr(linear, "base_layer", None)
    if base is None:
        return linear.weight, linear.bias
    weight = base.weight
    if not linear.merged and not linear.disable_adapters:
        for adapter in linear.active_adapters:
            if adapter in linear.lora_A:
                weight = weight.float() + linear.get_delta_weight(adapter).float()
    return weight, base.bias


def _fused(linears: list[nn.Module]) -> tuple[torch.Tensor, torch.Tensor | None]:
    pairs = [_weight(m) for m in linears]
    weight = torch.cat([w.float() for w, _ in pairs]) if len(pairs) > 1 else pairs[0][0]
    if all(b is None for _, b in pairs):
        return weight, None
    return weight, torch.cat([b.float() if b is not None else w.new_zeros(w.shape[0]) for w, b in pairs])


#: the batch size oneDNN is told to lay a prepacked weight out for (the sampler's default batch)
_PACK_ROWS = 64


def _prepacked(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` reordered once into oneDNN's blocked layout (``None``: not available here). ``F.linear`` reorders
    a bf16 weight on every call: at the few rows of a decode step that costs more than the GEMM (measured on an
    AVX512-BF16 EPYC: the 151936 x 896 LM head at 8 rows 24.6 ms against 12.5 ms prepacked, at 64 rows 56.8 against
    44.3 ms; bf16 outputs bit-identical, fp32 within rounding)."""
    if weight.device.type != "cpu" or weight.dtype not in (torch.bfloat16, torch.float32) \
            or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight, _PACK_ROWS)
    except (AttributeError, RuntimeError, NotImplementedError):  # a build without oneDNN's linear ops
        return None


class FloatMatmul:
    """``x @ W.T + b`` in ``dtype`` (oneDNN: AMX or AVX512-BF16 for bf16), on CPU with the weight prepacked once
    (``prepack=False``: ``F.linear`` on the plain weight)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype,
                 prepack: bool = True) -> None:
        self.weight = weight.detach().to(dtype)
        self.bias = None if bias is None else bias.detach().to(dtype)
        self.packed = _prepacked(self.weight) if prepack else None
        if self.packed is not None:
            self.weight = None  # the packed copy is the one used

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the contiguous 2-D input in the packed weight's dtype that oneDNN's linear ops take."""
        return x.to(self.packed.dtype).reshape(-1, x.shape[-1]).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return F.linear(x.to(self.weight.dtype), self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(self._rows(x), self.packed, self.bias, "none", [None], "")

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        """``silu(x @ W.T + b)``, oneDNN's post-op on the fp32 accumulator where the weight is prepacked."""
        if self.packed is None:
            return F.silu(self(x))
        return torch.ops.mkldnn._linear_pointwise(self._rows(x), self.packed, self.bias, "swish", [], "")

    def then(self, x: torch.Tensor, op: str, other: torch.Tensor) -> torch.Tensor:
        """``(x @ W.T + b) <op> other`` for ``op`` ``add`` or ``mul``, fused into the GEMM where the weight is
        prepacked (one rounding, no pass of its own over the output)."""
        if self.packed is None:
            return self(x) + other if op == "add" else self(x) * other
        return torch.ops.mkldnn._linear_pointwise.binary(self._rows(x), other.contiguous(), self.packed, self.bias, op)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """RMSNorm of the fp32 residual ``x`` with its fp32 ``weight``, rounded once, to the GEMMs' ``dtype``."""
    return (weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))).to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class _Block:
    def __init__(self, layer, matmul, act: torch.dtype) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = matmul(*_fused([attn.q_proj, attn.k_proj, attn.v_proj]))
        self.o = matmul(*_fused([attn.o_proj]))
        #: float matmuls take oneDNN post-ops: the gate's silu and the product with up fused into their GEMMs, and
        #: in fp32 the residual adds too (a bf16 GEMM's output is bf16: its add to the fp32 residual is an op of
        #: its own); int8: one gate/up GEMM, the rest as separate ops
        self.post_ops = matmul is not Int8Matmul
        self.fused_add = self.post_ops and act == torch.float32
        if self.post_ops:
            self.gate, self.up = matmul(*_fused([mlp.gate_proj])), matmul(*_fused([mlp.up_proj]))
        else:
            self.gate_up = matmul(*_fused([mlp.gate_proj, mlp.up_proj]))
        self.down = matmul(*_fused([mlp.down_proj]))
        self.norm1 = layer.input_layernorm.weight.detach().float()
        self.norm2 = layer.post_attention_layernorm.weight.detach().float()


class Decoder:
    """The policy's forward for sampling, over ``capacity`` rows of at most ``length`` tokens each.

    ``compute``: ``int8`` (int8 GEMMs, fp32 activations and cache), ``bfloat16`` (bf16 GEMMs and cache) or
    ``float32``; the residual stream is fp32 on every path. Rows ``0..rows-1``
    are live; row ``r`` holds ``pos[r]`` tokens in the cache and one pending token ``last[r]`` not yet in it.
    """

    def __init__(self, model, compute: str, capacity: int, length: int) -> None:
        base = _base(model)
        cfg = base.config
        self.act = torch.bfloat16 if compute == "bfloat16" else torch.float32
        if compute == "int8":
            matmul = Int8Matmul
        else:
            def matmul(weight, bias):
                return FloatMatmul(weight, bias, self.act)
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps, self.scaling = cfg.rms_norm_eps, self.head_dim ** -0.5
        self.blocks = [_Block(layer, matmul, self.act) for layer in base.model.layers]
        self.embed = base.get_input_embeddings().weight.detach()
        self.norm = base.model.norm.weight.detach().float()
        head = _fused([base.get_output_embeddings()])
        # int8 with native bf16: the LM head (151k x 896 on Qwen2.5) in bf16, as fast as int8 there (its output is
        # 64 x 151k: int8 pays 3 passes over it to rescale) and closer to the float logits that greedy decoding ranks
        self.head = FloatMatmul(*head, torch.bfloat16) if compute == "int8" and native_bf16() else matmul(*head)
        positions = torch.arange(length, device=self.embed.device)
        cos, sin = base.model.rotary_emb(self.embed.new_zeros(1, dtype=torch.float32), positions[None])
        self.cos, self.sin = cos[0].to(self.act), sin[0].to(self.act)
        self.positions = positions
        shape = (len(self.blocks), capacity, self.kv_heads, length, self.head_dim)
        self.k = torch.zeros(shape, dtype=self.act, device=self.embed.device)
        self.v = torch.zeros_like(self.k)
        self.pos = torch.zeros(capacity, dtype=torch.long, device=self.embed.device)
        self.last = torch.zeros(capacity, dtype=torch.long, device=self.embed.device)
        self.rows, self.length = 0, length
        self.prefix: list[int] = []
        #: every forward so far: ``("prefill", tokens computed)`` or ``("step", tokens)`` (one per row, more with
        #: drafts; the benchmark's limit)
        self.work: list[tuple[str, int]] = []

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embed).float()  # the residual stream

    def _qkv(self, block: _Block, x: torch.Tensor, cos, sin):
        q, k, v = block.qkv(_rms_norm(x, block.norm1, self.eps, self.act)).split(
            [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], dim=-1)
        q = _rotate(q.view(-1, self.heads, self.head_dim), cos, sin)
        k = _rotate(k.view(-1, self.kv_heads, self.head_dim), cos, sin)
        return q, k, v.view(-1, self.kv_heads, self.head_dim)

    def _mlp(self, block: _Block, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        x = block.o.then(attended, "add", x) if block.fused_add else x + block.o(attended)
        h = _rms_norm(x, block.norm2, self.eps, self.act)
        if block.post_ops:
            h = block.up.then(h, "mul", block.gate.silu(h))
        else:
            gate, up = block.gate_up(h).chunk(2, dim=-1)
            h = F.silu(gate) * up
        return block.down.then(h, "add", x) if block.fused_add else x + block.down(h)

    def share_prefix(self, prefix: list[int]) -> None:
        """Compute the KV cache of ``prefix`` (the tokens every prompt starts with: the chat template's system turn
        and instructions) once; each :meth:`prefill` of a prompt starting with it copies it instead."""
        if self.rows:
            raise ValueError("share_prefix comes before the first prefill")
        self.prefill([([*prefix, 0], 1)])
        self.prefix = list(prefix)
        self.prefix_kv = self.k[:, 0, :, : len(prefix)].clone(), self.v[:, 0, :, : len(prefix)].clone()
        self.rows = 0

    def prefill(self, prompts: list[tuple[list[int], int]]) -> None:
        """For each ``(ids, n)``, append ``n`` rows continuing ``ids``: all tokens but the last go into the cache once
        (then copied to the ``n`` rows); the last is each row's pending token. The prompts' new tokens run back to
        back in one forward (each attends to itself and the shared prefix only), so the GEMMs see them all at once."""
        if self.rows + sum(n for _, n in prompts) > self.k.shape[1] or any(len(i) + 1 > self.length for i, _ in prompts):
            raise ValueError("the decoder's rows or length are exhausted")
        parts, tokens, positions = [], [], []  # parts: (rows, shared, t, offset of its tokens)
        for ids, n in prompts:
            rows, t = slice(self.rows, self.rows + n), len(ids) - 1
            shared = len(self.prefix) if self.prefix and len(self.prefix) <= t and ids[: len(self.prefix)] == self.prefix else 0
            if shared:
                self.k[:, rows, :, :shared], self.v[:, rows, :, :shared] = (kv[:, None] for kv in self.prefix_kv)
            if t > shared:
                self.work.append(("prefill", t - shared))
                parts.append((rows, shared, t, len(tokens)))
                tokens += ids[shared:-1]
                positions.append(self.positions[shared:t])
            self.pos[rows], self.last[rows] = t, ids[-1]
            self.rows += n
        if not parts:
            return
        x = self._embed(torch.tensor(tokens, device=self.embed.device))
        at = torch.cat(positions)
        cos, sin = self.cos[at, None], self.sin[at, None]
        for i, block in enumerate(self.blocks):
            q, k, v = self._qkv(block, x, cos, sin)
            last = i == len(self.blocks) - 1  # its outputs at prompt positions feed nothing: only its K and V are kept
            attended = []
            for rows, shared, t, offset in parts:
                new = slice(offset, offset + t - shared)
                self.k[i, rows, :, shared:t], self.v[i, rows, :, shared:t] = k[new].transpose(0, 1), v[new].transpose(0, 1)
                if not last:
                    attended.append(self._prompt_attention(i, rows.start, shared, t, q[new]))
            if last:
                break
            x = self._mlp(block, x, torch.cat(attended) if len(attended) > 1 else attended[0])

    def _prompt_attention(self, layer: int, row: int, shared: int, t: int, q: torch.Tensor) -> torch.Tensor:
        """Causal attention of one prompt's new tokens (positions ``shared..t-1``, queries ``q``) over its cached row,
        the shared prefix visible to every new token. A short prefix: the square causal kernel over all ``t``
        positions, the prefix's queries as zero rows (dropped), beats a boolean mask's slower path (421 against 584 ms
        per 24 layers at 30 of 900 tokens; the mask wins from about a third shared)."""
        padded = shared and 3 * shared <= t
        mask = None if not shared or padded else self.positions[:t][None, :] <= self.positions[shared:t][:, None]
        keys, values = self.k[layer, row, :, :t][None], self.v[layer, row, :, :t][None]
        queries = F.pad(q.transpose(0, 1), (0, 0, shared if padded else 0, 0))[None]
        attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, is_causal=mask is None,
                                                  scale=self.scaling, enable_gqa=True)[0, :, -(t - shared):]
        return attended.transpose(0, 1).reshape(t - shared, -1)

    def step(self, drafts: torch.Tensor | None = None, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Run every live row's pending token; returns the next-token logits ``(rows, vocab)``. The caller sets
        ``last`` to the chosen tokens (positions advance here).

        ``drafts`` ``(rows, k)``: guessed tokens after each row's pending one, run in the same forward; returns the
        logits after each of the ``k + 1`` tokens, ``(rows, k + 1, vocab)``. Their K and V are written at the next
        ``k`` positions, which do not advance: the caller keeps the guesses it accepts with :meth:`advance` (a
        rejected guess's K and V are overwritten before any query can see them). ``lengths`` ``(rows,)``: how many
        of each row's guesses are real; only those run through the GEMMs (the logits after the others are zero)."""
        b, group = self.rows, self.heads // self.kv_heads
        k = 0 if drafts is None else drafts.shape[1]
        pos, rows = self.pos[:b], torch.arange(b, device=self.pos.device)
        tokens = self.last[:b, None] if drafts is None else torch.cat([self.last[:b, None], drafts], 1)
        # the flat (row, token) positions that run: all, or each row's pending token and its real guesses
        run = None if lengths is None else (torch.arange(k + 1, device=pos.device) <= lengths[:, None]).flatten().nonzero()[:, 0]
        self.work.append(("step", b * (k + 1) if run is None else len(run)))
        # (rows, k + 1); a padding guess past the cache writes its last column, which no real token reaches
        qpos = (pos[:, None] + torch.arange(k + 1, device=pos.device)).clamp(max=self.length - 1)
        span = int(qpos.max()) + 1
        # (rows, 1, group * (k + 1), span): the query of head g at draft j is row (g, j) of its KV head's queries
        mask = self.positions[:span] <= qpos[:, None, :, None]  # (rows, 1, k + 1, span)
        if k:
            mask = mask.expand(b, group, k + 1, span).reshape(b, 1, group * (k + 1), span)
        at_rows, at_pos, tokens = rows.repeat_interleave(k + 1), qpos.flatten(), tokens.flatten()
        if run is not None:
            at_rows, at_pos, tokens = at_rows[run], at_pos[run], tokens[run]
        cos, sin = self.cos[at_pos][:, None], self.sin[at_pos][:, None]
        x = self._embed(tokens)
        for i, block in enumerate(self.blocks):
            q, k_new, v = self._qkv(block, x, cos, sin)
            keys, values = self.k[i], self.v[i]
            keys[at_rows, :, at_pos], values[at_rows, :, at_pos] = k_new, v
            if run is not None:  # attention takes every row's k + 1 queries: the padding ones as zeros, dropped
                q = q.new_zeros(b * (k + 1), *q.shape[1:]).index_copy_(0, run, q)
            q = q.view(b, k + 1, self.kv_heads, group, self.head_dim).permute(0, 2, 3, 1, 4)
            attended = F.scaled_dot_product_attention(
                q.reshape(b, self.kv_heads, group * (k + 1), self.head_dim), keys[:b, :, :span], values[:b, :, :span],
                attn_mask=mask, scale=self.scaling)
            attended = attended.view(b, self.kv_heads, group, k + 1, self.head_dim).permute(0, 3, 1, 2, 4)
            attended = attended.reshape(b * (k + 1), -1)
            x = self._mlp(block, x, attended if run is None else attended[run])
        logits = self.head(_rms_norm(x, self.norm, self.eps, self.act))
        if drafts is None:
            self.pos[:b] += 1
            return logits
        if run is not None:
            logits = logits.new_zeros(b * (k + 1), logits.shape[-1]).index_copy_(0, run, logits)
        return logits.view(b, k + 1, -1)

    def advance(self, accepted: torch.Tensor) -> None:
        """After a :meth:`step` with drafts: each row's pending token and its first ``accepted[r]`` guesses are now
        in the cache."""
        self.pos[: len(accepted)] += accepted + 1

    def drop(self, done: list[int]) -> list[int]:
        """Remove rows ``done``; the last live rows move into the holes. Returns the new order as old row indices."""
        order, keep = list(range(self.rows)), self.rows - len(done)
        holes = sorted(r for r in done if r < keep)
        movers = [r for r in range(keep, self.rows) if r not in set(done)]
        if holes:
            span = int(self.pos[: self.rows].max()) + 1
            dst, src = torch.tensor(holes), torch.tensor(movers)
            self.k[:, dst, :, :span], self.v[:, dst, :, :span] = self.k[:, src, :, :span], self.v[:, src, :, :span]
            self.pos[dst], self.last[dst] = self.pos[src], self.last[src]
            for h, m in zip(holes, movers):
                order[h] = m
        self.rows = keep
        return order[:keep]
