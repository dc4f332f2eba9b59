"""DPO training really updates the LoRA weights of a tiny random Qwen2 (TRL's own testing pattern)."""

import pytest
import torch
from safetensors.torch import load_file

from ieta.config import validate
from ieta.io import read_jsonl
from ieta.models import load_model, load_tokenizer
from ieta.train import as_base_model, train_dpo
from tests.conftest import compose_config
from tests.test_sample import RANDOM_INIT

PAIRS = [
    {"prompt": "def add(a, b):\n", "chosen": "    return a + b\n```", "rejected": "    return a - b\n```"},
    {"prompt": "def neg(x):\n", "chosen": "    return -x\n```", "rejected": "    return x[0]\n```"},
]


def test_dpo_step_changes_lora_weights_and_logs(tmp_path):
    cfg = validate(compose_config(["model=tiny", "method=dpo", "method.learning_rate=1e-2"]))
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=cfg.model.random_init, seed=0)
    base_before = {k: v.clone() for k, v in model.state_dict().items()}

    policy = train_dpo(model, tok, PAIRS, cfg.method, steps=2, out_dir=tmp_path / "it1", seed=0, progress=False)
    adapter = load_file(tmp_path / "it1" / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: non-zero means trained
    log = read_jsonl(tmp_path / "it1" / "train_log.jsonl")
    assert any("loss" in entry for entry in log)

    # iteration 2 starts from the merged policy: base weights now differ from the initial model
    merged = as_base_model(policy)
    changed = [k for k, v in merged.state_dict().items() if k in base_before and not torch.equal(v, base_before[k])]
    assert changed
    after1 = {k: v.clone() for k, v in merged.state_dict().items()}
    train_dpo(merged, tok, PAIRS, cfg.method, steps=1, out_dir=tmp_path / "it2", seed=0, progress=False)
    assert (tmp_path / "it2" / "adapter" / "adapter_config.json").exists()


def test_sft_step_changes_lora_weights(tmp_path):
    from ieta.train import train_sft

    cfg = validate(compose_config(["model=tiny", "method=sft", "method.learning_rate=1e-2"]))
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=cfg.model.random_init, seed=0)
    rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS]
    train_sft(model, tok, rows, cfg.method, steps=2, out_dir=tmp_path, seed=0, progress=False)
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    assert any("loss" in entry for entry in read_jsonl(tmp_path / "train_log.jsonl"))


def test_lora_top_layers_trains_only_the_last_blocks(tmp_path):
    cfg = validate(compose_config(["model=tiny", "method=dpo", "method.learning_rate=1e-2",
                                   "method.lora.top_layers=1"]))
    tok = load_tokenizer("tiny")
    model = load_model("tiny", torch.float32, "cpu", random_init=cfg.model.random_init, seed=0)
    last = model.config.num_hidden_layers - 1
    train_dpo(model, tok, PAIRS, cfg.method, steps=1, out_dir=tmp_path, seed=0, progress=False)
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert adapter and all(f".layers.{last}." in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)


def test_model_hash_follows_every_weight_and_dtype():
    """The reference log-probs' cache key: the same for equal weights, different when any value, dtype or name
    differs (bf16 tensors and 0-dim buffers included)."""
    from ieta.train import model_hash

    def module(dtype=torch.bfloat16):
        m = torch.nn.Linear(3, 2).to(dtype)
        with torch.no_grad():
            m.weight.copy_(torch.arange(6.0).view(2, 3))
            m.bias.zero_()
        m.register_buffer("step", torch.tensor(5))
        return m

    a, b = module(), module()
    assert model_hash(a) == model_hash(b)
    with torch.no_grad():
        b.weight[1, 2] += 1
    assert model_hash(a) != model_hash(b)
    assert model_hash(a) != model_hash(module(torch.float32))
    c = module()
    c.step += 1
    assert model_hash(a) != model_hash(c)


@pytest.mark.parametrize("top_layers", ["null", "1"])
def test_dpo_with_the_shared_forward_logs_trls_log_probs(tmp_path, monkeypatch, top_layers):
    """train_dpo computes what each pair shares once (ieta.dpo_forward); TRL's plain two-row forward
    (``trl_defaults``) logs the same policy log-probs, losses and rewards at each of 2 steps: the same training.
    With adapters on the top block only, the bottom block's output is kept from the reference pass."""
    cfg = validate(compose_config(["model=tiny", "method=dpo", "method.learning_rate=1e-2", "method.lora.dropout=0",
                                   f"method.lora.top_layers={top_layers}"]))
    tok = load_tokenizer("tiny")
    import ieta.dpo_forward as dpo_forward

    packed, real_pack = [], dpo_forward.pack
    monkeypatch.setattr(dpo_forward, "pack", lambda *a: packed.append(real_pack(*a)) or packed[-1])
    logs = []
    for trl_defaults in (False, True):
        model = load_model("tiny", torch.float32, "cpu", random_init=cfg.model.random_init, seed=0)
        out = tmp_path / str(trl_defaults)
        train_dpo(model, tok, PAIRS, cfg.method, steps=2, out_dir=out, seed=0, progress=False,
                  trl_defaults=trl_defaults)
        logs.append([e for e in read_jsonl(out / "train_log.jsonl") if "loss" in e])
        if not trl_defaults:  # the reference pass and both steps ran packed; the TRL run never packs
            assert len(packed) >= 3 and all(p is not None for p in packed)
            count = len(packed)
    assert len(packed) == count
    ours, trl = logs
    assert len(ours) == len(trl) == 2
    for a, b in zip(ours, trl):
        for key in ("logps/chosen", "logps/rejected", "loss", "rewards/margins", "logits/chosen"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(b[key])), (key, a[key], b[key])
    assert ours[1]["logps/chosen"] != ours[0]["logps/chosen"]  # the first step moved the policy


def test_bench_train_dpo_uses_the_packaged_pairs_or_a_runs(tmp_path):
    """``python -m ieta.bench train`` trains on the packaged pairs of a real quick run (every task id is HumanEval's,
    prompts built for the config) or on a run's ``pairs.jsonl`` given with ``--pairs`` (an empty one is an error)."""
    from ieta.bench.train import PAIRS as SHIPPED
    from ieta.bench.train import bench_pairs
    from ieta.bench.train import main as bench
    from ieta.io import read_jsonl, write_jsonl

    tok = load_tokenizer("tiny")
    shipped = read_jsonl(SHIPPED)
    pairs = bench_pairs(tok, len(shipped) + 2, "chat")
    assert len(pairs) == len(shipped) + 2 and pairs[-1]["chosen"] == shipped[1]["chosen"]
    assert all(p["prompt"] and p["chosen"] != p["rejected"] for p in pairs)
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:1])
    assert bench_pairs(tok, 3, "chat", tmp_path / "pairs.jsonl") == [PAIRS[0]] * 3  # a run's pairs as they are
    write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match="no pairs in"):
        bench(["--only-ieta", "--pairs", str(tmp_path / "empty.jsonl"), "model=tiny"])
