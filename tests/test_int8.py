import pytest
import torch

from ieta.int8 import Int8Linear, int8_linears
from ieta.models import load_model, load_tokenizer
from ieta.sample import generate
from tests.test_sample import RANDOM_INIT


def test_int8_linear_matches_float_within_quantization_error():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    x = torch.randn(3, 5, 96)
    x[0, 0, 7] = 40.0  # an outlier token: per-token scales keep it from blurring the other rows
    expected, got = linear(x), Int8Linear(linear)(x)
    assert got.shape == expected.shape
    error = ((got - expected).norm(dim=-1) / expected.norm(dim=-1)).flatten()
    assert error[0] < 0.05 and error[1:].max() < 0.02
    assert torch.allclose(Int8Linear(linear)(x[1:]), got[1:], atol=1e-5)  # a row's result ignores the other rows


def test_int8_linears_swaps_every_linear_then_restores_the_model():
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    ids = torch.tensor([[1, 5, 9, 200, 31]])
    with torch.inference_mode():
        reference = model(input_ids=ids).logits
        with int8_linears(model):
            assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
            quantized = model(input_ids=ids).logits
        with pytest.raises(RuntimeError), int8_linears(model):
            raise RuntimeError("a failure inside sampling")
    assert {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)} == linears
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not torch.equal(quantized, reference)  # it really ran in int8 ...
    assert torch.nn.functional.cosine_similarity(quantized.flatten(), reference.flatten(), dim=0) > 0.99  # ... closely


def test_int8_sampling_is_seeded():
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=2)
    kwargs = dict(n=2, temperature=0.8, top_p=0.95, max_new_tokens=8, batch_size=4, stops=[], seed=0, progress=False)
    prompts = ["def f(x):\n    return", "import os\n"]
    first = generate(model, tok, prompts, quantize="int8", **kwargs)
    assert generate(model, tok, prompts, quantize="int8", **kwargs) == first  # seeded, also in int8
    assert all(len(samples) == 2 for samples in first)


def test_int8_sampling_from_a_policy_with_an_unmerged_lora_adapter():
    """The trained policy is sampled with its adapter in memory: base layers go int8, LoRA's matrices stay."""
    from peft import LoraConfig, get_peft_model

    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=4)
    policy = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with int8_linears(policy):
        layer = policy.base_model.model.model.layers[0].self_attn.q_proj
        assert isinstance(layer.base_layer, Int8Linear) and isinstance(layer.lora_A["default"], torch.nn.Linear)
    samples = generate(policy, tok, ["def f(x):\n    return"], n=2, temperature=0.0, top_p=1.0, max_new_tokens=6,
                       batch_size=2, stops=[], seed=0, quantize="int8", progress=False)
    assert samples[0][0] == samples[0][1]
