"""Which arithmetic a CPU runs fastest, read from ``torch.cpu.get_capabilities()`` (not ``/proc/cpuinfo`` text).

Four kinds of CPU, three paths (measured with ``python -m ieta.bench sample``, which prints the path and why):

- AMX (``amx_bf16``): bf16 everywhere; the tile units make bf16 GEMMs the fastest arithmetic there (on such a
  machine the bf16 sampler beat int8 ``torch._int_mm``: 81.1 against 72.9 tokens/s, issue 16; on a 2-core AMX Xeon
  on 2026-12-02, 217.2 against 146.0, and greedy HumanEval-164 through the pipeline gave 93 in bf16, 94 in fp32).
- AVX512-BF16 without AMX (this project's EPYC, which has VNNI too): bf16. A 64-row GEMM of the model's shapes ran
  at 620-780 GOP/s in int8, 330-390 GFLOP/s in bf16 and 105-145 GFLOP/s in fp32, but int8 cost quality: greedy
  pass on the first 40 HumanEval problems through the pipeline was 29 in int8, 31 in bf16, 32 in fp32. Greedy
  HumanEval-164 in bf16 with the decoder's fp32 residual stream: 94, as fp32, and ``python -m ieta.bench sample``
  gave 242.0 tokens/s in bf16 against 191.7 with ``--quantize int8`` (a Zen 5 EPYC, 2026-12-04).
- AVX-512 VNNI without native bf16: int8 x int8 GEMMs (``torch._int_mm``, VPDPBUSD) on fp32 activations (bf16 is
  emulated there; int8 was ~2.5x fp32 end to end, at 91 against 94 greedy HumanEval-164 problems).
- anything else: fp32. On a 2-core AVX2-only EPYC (Zen 1, no AVX-512) on 2026-12-02, a 64-row 896 x 9728 GEMM ran
  at 59-70 GFLOP/s in fp32 (the cores' FMA peak is about 64), 11 in bf16 (emulated) and 1.5 GOP/s in int8
  ``torch._int_mm`` (no VNNI: a slow fallback); fbgemm's AVX2 int8 (torch.ao dynamic quantization) matched fp32 at
  64 rows (72 GOP/s) and gained only at a few rows, where a step is bound by reading the weights (20-35 against 9 at
  1 row), at the cost of one activation scale per batch (greedy pass@1 0.372 on another machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch


@dataclass(frozen=True)
class CpuPath:
    """``compute``: ``int8``, ``bfloat16`` or ``float32`` (the sampler's arithmetic); ``isa``: the instructions that
    make it fast; ``why``: the rule that chose it."""

    compute: str
    isa: str
    why: str


@cache
def capabilities() -> dict:
    try:
        return dict(torch.cpu.get_capabilities())
    except (AttributeError, RuntimeError):  # older torch: no capability report
        return {}


def choose(caps: dict) -> CpuPath:
    """The fastest sampling path for a CPU with capability flags ``caps`` (``torch.cpu.get_capabilities()``)."""
    if caps.get("amx_bf16"):
        return CpuPath("bfloat16", "AMX-BF16", "AMX tiles compute bf16 GEMMs faster than int8 _int_mm there")
    if caps.get("avx512_bf16"):
        return CpuPath("bfloat16", "AVX512-BF16", "native bf16 dot products; int8 VNNI GEMMs alone ran ~2x faster on an "
                       "earlier EPYC but lost greedy HumanEval problems (first 40: int8 29, bf16 31, fp32 32), and end to "
                       "end int8 sampled slower on a Zen 5 (192 against 242 tokens/s)")
    if caps.get("avx512_vnni"):
        return CpuPath("int8", "AVX512-VNNI", "VNNI without native bf16: int8 GEMMs ~4x fp32 (greedy HumanEval-164: "
                       "91 against 94 in fp32)")
    return CpuPath("float32", "AVX2" if caps.get("avx2") else "baseline", "no native bf16 or int8 dot products")


def this_cpu() -> CpuPath:
    return choose(capabilities())


def native_bf16(caps: dict | None = None) -> bool:
    """AVX512-BF16 or AMX: without them bf16 matmuls are emulated and slower than fp32 (measured 2-4x)."""
    caps = capabilities() if caps is None else caps
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
