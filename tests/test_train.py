"""DPO training really updates the LoRA weights of a tiny random Qwen2 (TRL's own testing pattern)."""

import torch
from safetensors.torch import load_file

from ieta.config import validate
from ieta.io import read_jsonl
from ieta.models import load_model, load_tokenizer
from ieta.train import as_base_model, train_dpo
from tests.conftest import compose_config

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
