"""LoRA's dropout with a numpy-drawn mask (ieta.lora_dropout): nn.Dropout's distribution, seeded by torch, in every
IETA trainer."""

import pytest
import torch
from peft import get_peft_model
from torch import nn

from ieta.lora_dropout import MaskDropout, use_mask_dropout
from ieta.models import load_model, load_tokenizer
from ieta.train import lora_config, train_sft
from tests.conftest import compose_config
from tests.test_sample import RANDOM_INIT
from tests.test_train import PAIRS


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_mask_dropout_has_nn_dropouts_distribution_and_gradient(p):
    drop = MaskDropout(p)
    x = torch.rand(400, 500, dtype=torch.float64) + 1.0  # never 0: a 0 in the output is a dropped element
    x.requires_grad_(True)
    y = drop(x)
    dropped = y == 0
    n = x.numel()
    assert abs(dropped.double().mean().item() - p) < 5 * (p * (1 - p) / n) ** 0.5  # within 5 standard errors
    assert torch.allclose(y[~dropped], x[~dropped] / (1 - p))
    y.backward(torch.full_like(y, 3.0))
    assert torch.allclose(x.grad, torch.where(dropped, 0.0, 3.0 / (1 - p)).to(x.grad.dtype))
    rows = dropped.double().mean(1)  # masks are not repeated row to row
    assert rows.std() > 0 and len({tuple(r.nonzero().flatten().tolist()) for r in dropped[:50]}) == 50


def test_mask_dropout_is_seeded_by_torch_and_the_identity_in_eval_or_at_zero():
    x = torch.ones(64, 64)
    torch.manual_seed(3)
    a = MaskDropout(0.3)(x)
    torch.manual_seed(3)
    assert torch.equal(MaskDropout(0.3)(x), a)
    assert not torch.equal(MaskDropout(0.3)(x), a)  # the generator moved on: a new mask
    assert MaskDropout(0.0)(x) is x and MaskDropout(0.3).eval()(x) is x
    with pytest.raises(ValueError):
        MaskDropout(1.0)


def test_every_lora_dropout_is_replaced_and_training_uses_it(tmp_path):
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=0)
    cfg = compose_config(["model=tiny", "method=sft"])
    policy = get_peft_model(model, lora_config(cfg.method.lora, model))
    before = [m for m in policy.modules() if type(m) is nn.Dropout and m.p > 0]
    assert use_mask_dropout(policy) == len(before) > 0
    assert not [m for m in policy.modules() if type(m) is nn.Dropout and m.p > 0]
    assert use_mask_dropout(policy) == 0  # nothing left to replace

    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=RANDOM_INIT, seed=0)
    rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS]
    trained = train_sft(model, tok, rows, cfg.method, steps=1, out_dir=tmp_path, seed=0, progress=False)
    drops = [m for m in trained.modules() if isinstance(m, MaskDropout)]
    assert len(drops) == len(before) and all(d.p == cfg.method.lora.dropout for d in drops)
