"""The CPU path (arithmetic by capability) and IETA's decoder against the model's own forward, on every path."""

import pytest
import torch

from ieta.cpu_path import choose, native_bf16, this_cpu
from ieta.decode import Decoder, unsupported
from ieta.int8 import int8_linears
from ieta.models import load_model, load_tokenizer
from ieta.sample import generate, sampling_path, uses_decoder
from tests.test_sample import RANDOM_INIT

#: the capability flags of the three kinds of CPU the project runs on (torch.cpu.get_capabilities() keys)
AMX = {"avx2": True, "avx512_vnni": True, "avx512_bf16": True, "amx_bf16": True, "amx_int8": True, "amx_tile": True}
VNNI_BF16 = {"avx2": True, "avx512_vnni": True, "avx512_bf16": True}
VNNI = {"avx2": True, "avx512_vnni": True}
AVX2 = {"avx2": True}


def test_path_follows_capabilities():
    assert choose(AMX).compute == "bfloat16" and choose(AMX).isa == "AMX-BF16"
    assert choose(VNNI_BF16).compute == "bfloat16" and choose(VNNI).compute == "int8"
    assert choose({"avx512_bf16": True}).compute == "bfloat16"
    assert choose(AVX2).compute == "float32" and choose({}).compute == "float32"
    assert native_bf16(AMX) and native_bf16(VNNI_BF16) and not native_bf16(VNNI) and not native_bf16({})
    assert this_cpu() == choose(torch.cpu.get_capabilities())


def _prompt_ids(tok):
    return [tok(p)["input_ids"] for p in ("def add(a, b):\n    return", "import os\nprint(", "x = [1, 2, 3]")]


def _reference_logits(model, ids: list[int]) -> torch.Tensor:
    """The model's own forward: next-token logits after the whole of ``ids``."""
    return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def _decoder_logits(model, compute: str, prompts: list[list[int]], extra: list[int]) -> list[torch.Tensor]:
    """Prefill every prompt into 2 rows, decode ``extra`` tokens (the same for every row), drop row 1 after the
    first step (the last row moves into its place) and return each row's logits per step."""
    decoder = Decoder(model, compute, capacity=2 * len(prompts), length=64)
    for ids in prompts:
        decoder.prefill([(ids, 2)])
    steps, order = [], list(range(decoder.rows))
    for j, token in enumerate(extra):
        logits = decoder.step().float()
        steps.append({order[r]: logits[r] for r in range(decoder.rows)})
        decoder.last[: decoder.rows] = token
        if j == 0:
            order = [order[i] for i in decoder.drop([1])]
    return steps


@pytest.mark.parametrize("compute, dtype, tolerance", [
    ("float32", torch.float32, 1e-4),  # same arithmetic as the model's forward
    ("bfloat16", torch.bfloat16, 0.05),  # the AMX / AVX512-BF16 path, on a bf16 model
    ("int8", torch.float32, 0.05),  # the VNNI path: against the model's forward with int8 linear layers
])
@torch.inference_mode()
def test_decoder_matches_the_model_forward_on_every_path(compute, dtype, tolerance):
    tok = load_tokenizer("tiny")
    model = load_model("tiny", dtype, "cpu", random_init=RANDOM_INIT, seed=7).eval()
    assert unsupported(model) is None
    prompts, extra = _prompt_ids(tok), [11, 22, 33]
    steps = _decoder_logits(model, compute, prompts, extra)
    with int8_linears(model) if compute == "int8" else torch.inference_mode():
        for k, logits in enumerate(steps):
            for row, got in logits.items():
                expected = _reference_logits(model, prompts[row // 2] + extra[:k])
                rel = (got - expected).norm() / expected.norm()
                assert rel < tolerance, (compute, k, row, float(rel))
    assert sorted(steps[1]) == [0, 2, 3, 4, 5]  # row 1 left; the others kept their own caches


@torch.inference_mode()
def test_bf16_decoder_keeps_the_residual_stream_closer_to_fp32_than_the_bf16_forward():
    """The bf16 path rounds its GEMMs' inputs and outputs to bf16 but keeps the residual stream in fp32, so its logits
    lie nearer the fp32 forward on the same (bf16-representable) weights than HF's bf16 forward does, which rounds the
    residual after every add (with a bf16 residual the two errors are equal: ratio 0.96-1.04 over 4 seeds, against
    0.60-0.68 in fp32)."""
    import copy

    tok = load_tokenizer("tiny")
    ids = tok("def add(a, b):\n    return a + b\n\nprint(add(1, 2))  # three")["input_ids"]
    for seed in (0, 1):
        exact = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=seed).eval()
        exact.to(torch.bfloat16).to(torch.float32)  # weights both sides hold exactly
        half = copy.deepcopy(exact).to(torch.bfloat16)
        want = exact(input_ids=torch.tensor([ids])).logits[0]
        forward = half(input_ids=torch.tensor([ids])).logits[0].float()
        decoder = Decoder(half, "bfloat16", capacity=1, length=len(ids) + 1)
        decoder.prefill([(ids[:1], 1)])
        got = []
        for token in ids[1:] + [0]:
            got.append(decoder.step()[0].float())
            decoder.last[0] = token
        ours, theirs = ((torch.stack(got) - want).norm() / want.norm()), ((forward - want).norm() / want.norm())
        assert ours < 0.8 * theirs, (seed, float(ours), float(theirs))


@torch.inference_mode()
def test_decoder_folds_an_active_lora_adapter_in():
    from peft import LoraConfig, get_peft_model

    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=4)
    policy = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                              init_lora_weights=False)).eval()
    ids = _prompt_ids(tok)[0]
    decoder = Decoder(policy, "float32", capacity=1, length=32)
    decoder.prefill([(ids, 1)])
    got = decoder.step()[0]
    assert torch.allclose(got, _reference_logits(policy, ids), atol=1e-4)
    with policy.disable_adapter():
        assert not torch.allclose(got, _reference_logits(policy, ids), atol=1e-2)  # the adapter really mattered
        plain = Decoder(policy, "float32", capacity=1, length=32)
        plain.prefill([(ids, 1)])
        assert torch.allclose(plain.step()[0], _reference_logits(policy, ids), atol=1e-4)


def test_every_path_samples_reproducibly_and_leaves_the_model_in_eval_mode():
    tok = load_tokenizer("tiny")
    prompts = ["def f(x):\n    return", "import os\n"]
    kwargs = dict(n=2, temperature=0.8, top_p=0.95, max_new_tokens=8, batch_size=4, stops=[], seed=0, progress=False)
    for dtype, quantize in ((torch.float32, "int8"), (torch.bfloat16, "none"), (torch.float32, "none")):
        model = load_model("tiny", dtype, "cpu", random_init=RANDOM_INIT, seed=2).train()
        first = generate(model, tok, prompts, quantize=quantize, **kwargs)
        assert not model.training
        assert generate(model, tok, prompts, quantize=quantize, **kwargs) == first
        assert all(len(samples) == 2 for samples in first)
    assert sampling_path(model, "auto")[0] == this_cpu().compute
    assert sampling_path(model, "none")[0] == "float32" and sampling_path(model, "int8")[0] == "int8"


def test_other_architectures_decode_through_the_model_forward():
    """A model the decoder does not implement (here Mistral) samples through its own forward, int8 included."""
    from transformers import MistralConfig, MistralForCausalLM

    tok = load_tokenizer("tiny")
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                                             pad_token_id=tok.pad_token_id, **RANDOM_INIT)).eval()
    assert "mistral" in uses_decoder(model)
    kwargs = dict(n=2, temperature=0.0, top_p=1.0, max_new_tokens=6, batch_size=2, stops=[], seed=0, progress=False)
    for quantize in ("none", "int8"):
        samples = generate(model, tok, ["def f(x):\n    return"], quantize=quantize, **kwargs)
        assert samples[0][0] == samples[0][1]


@torch.inference_mode()
def test_a_prefix_shared_by_all_prompts_is_prefilled_once_with_the_same_logits():
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=5).eval()
    prefix = tok("You are a careful programmer. Complete the function below.\n")["input_ids"]
    own = ("def f(x):\n    return", "import os",
           "def g(values):\n    total = 0\n    for v in values:\n        total += v * v\n    return total\n")
    prompts = [prefix + tok(p)["input_ids"] for p in own]
    # both attention paths of a shared prefill: a boolean mask (most of the prompt shared), the padded causal kernel
    assert {3 * len(prefix) <= len(ids) - 1 for ids in prompts} == {False, True}
    logits = []
    for share in (False, True):
        decoder = Decoder(model, "float32", capacity=6, length=96)
        if share:
            decoder.share_prefix(prefix)
        for ids in prompts:
            decoder.prefill([(ids, 2)])
        logits.append(decoder.step())
    assert torch.allclose(logits[0], logits[1], atol=1e-4)
    assert torch.allclose(logits[1][2], _reference_logits(model, prompts[1]), atol=1e-4)
    assert torch.allclose(logits[1][4], _reference_logits(model, prompts[2]), atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_prepacked_matmul_gives_f_linear_values(dtype):
    """FloatMatmul reorders its weight once into oneDNN's layout (where this build has oneDNN, as the CPU wheels
    do, and, for bf16, where oneDNN runs bf16 on this CPU: an AVX2-only one falls back to F.linear); at every row
    count a decode or prefill uses it gives F.linear's values (prepack=False: the plain path)."""
    from ieta.decode import FloatMatmul

    torch.manual_seed(0)
    weight, bias = torch.randn(200, 48), torch.randn(200)
    packed, plain = FloatMatmul(weight, bias, dtype), FloatMatmul(weight, bias, dtype, prepack=False)
    packs = torch.backends.mkldnn.is_available() and (dtype == torch.float32 or torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert (packed.packed is not None) == packs and plain.packed is None
    for rows in (1, 3, 64, 130):
        x = torch.randn(rows, 48).to(dtype)
        got, want = packed(x), plain(x)
        assert got.dtype == want.dtype == dtype and got.shape == (rows, 200)
        assert torch.allclose(got.float(), want.float(), rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-3)


def test_generate_reports_the_decoders_forwards():
    """``work`` receives each prefill's computed tokens and each decode step's rows: the benchmark's workload limit."""
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=0)
    prompts = ["def add(a, b):\n    return", "import os\nprint("]
    work = []
    out = generate(model, tok, prompts, n=2, temperature=0.8, top_p=0.95, max_new_tokens=6, batch_size=4, stops=[],
                   seed=0, progress=False, work=work)
    assert len(out) == 2 and all(len(s) == 2 for s in out)
    prefill = [count for kind, count in work if kind == "prefill"]
    steps = [count for kind, count in work if kind == "step"]
    assert sum(prefill) == sum(len(ids) - 1 for ids in tok(prompts)["input_ids"])  # no shared prefix here
    assert steps[0] == 4 and len(steps) <= 6 and all(0 < r <= 4 for r in steps)


@pytest.mark.parametrize("compute", ["float32", "int8"])
def test_benchmark_prints_the_roofline_the_workload_limit_and_the_gemm_floor(compute, capsys):
    """``python -m ieta.bench sample``'s limits on a tiny model: the copy-bandwidth roofline, this workload's limit
    from the decoder's own forwards, and the floor from its GEMMs alone at 1 and at ``batch_size`` rows."""
    import argparse
    import re

    from ieta.bench.sample import _ours, _roofline, count_tokens
    from ieta.prompts import stop_strings

    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=0).eval()
    prompts = ["def add(a, b):\n    return", "import os\nprint("]
    args = argparse.Namespace(n=2, max_new_tokens=4, batch_size=4, quantize="int8" if compute == "int8" else "none",
                              temperature=0.8, draft="none")
    texts, seconds, _, work = _ours(model, tok, prompts, args)
    generated = count_tokens(tok, texts, stop_strings("chat"))
    _roofline(model, compute, args, generated / seconds, tok, prompts, work, generated)
    out = capsys.readouterr().out
    floor = re.search(r"gemm floor .*: ([\d.]+) ms at 1 row .* ([\d.]+) ms at 4 rows -> these (\d+) decode forwards", out)
    assert floor and float(floor[1]) > 0 and float(floor[2]) > 0
    assert int(floor[3]) == sum(kind == "step" for kind, _ in work)
    assert "roofline" in out and "workload limit" in out and out.count("distance") == 3


def test_benchmark_revision_prompts_hold_a_failing_attempt_and_ask_again():
    """``--workload revision``: each prompt is the chat of a first attempt from the shipped pairs (its rejected
    completion, fence closed once) and a request to write the function again, ending in the function's prefill."""
    from ieta.bench.sample import PAIRS, workload_prompts
    from ieta.io import read_jsonl

    tok = load_tokenizer("embedded")
    pairs = read_jsonl(PAIRS)
    prompts = workload_prompts("revision", 3, tok)
    first = workload_prompts("first", 3, tok)
    assert len(prompts) == 3 and prompts != first
    for prompt, pair in zip(prompts, pairs):
        attempt = pair["rejected"].removesuffix("```").rstrip()
        assert attempt.splitlines()[-1] in prompt and "``````" not in prompt
        assert prompt.rstrip().endswith('"""') and "again" in prompt
