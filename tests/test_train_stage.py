"""The training stage under `accelerate launch`: 2 CPU processes (gloo) with the shipped DDP config; the GPU configs
(DDP, DeepSpeed ZeRO-2/3) with `pytest -m gpu`."""

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from ieta.config import ConfigError, validate
from ieta.io import read_jsonl, write_jsonl
from ieta.policy import load_policy
from ieta.train import as_base_model, train_dpo
from ieta.train_stage import launch, stage_policy
from tests.conftest import TINY, compose_config
from tests.test_train import PAIRS

CONF = Path(__file__).resolve().parents[1] / "conf" / "accelerate"


def make_run_dir(run_dir: Path, *overrides: str):
    """A run dir as the pipeline leaves it before iteration 2 trains: config, iteration 1's adapter, iteration 2's pairs."""
    raw = compose_config([*TINY, "method=dpo", "method.max_length=64", "method.learning_rate=1e-2", *overrides])
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(raw, run_dir / ".hydra" / "config.yaml")
    cfg = validate(raw)
    model, tok, _, _ = load_policy(cfg)
    policy = train_dpo(model, tok, PAIRS, cfg.method, steps=1, out_dir=run_dir / "iter_1", seed=0, progress=False)
    write_jsonl(run_dir / "iter_2" / "pairs.jsonl", PAIRS)
    return cfg, policy


def trained_lora_b(adapter_dir: Path) -> list[torch.Tensor]:
    return [v for k, v in load_file(adapter_dir / "adapter_model.safetensors").items() if "lora_B" in k]


def reference_log_probs_precomputed(run_dir: Path) -> bool:
    """TRL cached the precomputed reference log-probs next to the pairs dataset shared by all ranks."""
    from datasets import Dataset

    caches = (run_dir / "iter_2" / "trainer" / "pairs").glob("cache-*.arrow")
    return any("ref_chosen_logps" in Dataset.from_file(str(f)).column_names for f in caches)


def assert_trained_in_two_processes(run_dir: Path, output: str, distributed_type: str):
    lora_b = trained_lora_b(run_dir / "iter_2" / "adapter")
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: non-zero means trained
    assert len([e for e in read_jsonl(run_dir / "iter_2" / "train_log.jsonl") if "loss" in e]) == 2
    assert output.count(f"iteration 2: trained in 2 processes ({distributed_type})") == 1
    assert reference_log_probs_precomputed(run_dir)


@pytest.mark.parametrize("override, key", [
    ("accelerate.num_processes=0", "accelerate.num_processes"),
    ("+accelerate.processes=2", "accelerate has keys accelerate launch does not know: ['processes']"),
    ("accelerate.distributed_type=MULTI_GPUS", "accelerate: 'MULTI_GPUS' is not a valid DistributedType"),
])
def test_bad_accelerate_config_fails_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate(compose_config(["accelerate=ddp", override]))


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3"])
def test_shipped_configs_load_as_accelerate_config_files(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = validate(compose_config([f"accelerate={name}"]))
    loaded = load_config_from_file(str(CONF / f"{name}.yaml")).to_dict()  # what `accelerate launch` reads
    assert {key: loaded[key] for key in cfg.accelerate} == cfg.accelerate
    assert (cfg.accelerate.get("deepspeed_config") or {}).get("zero_stage") == {"ddp": None, "zero2": 2, "zero3": 3}[name]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, *make_run_dir(run_dir, "accelerate=ddp", "accelerate.num_processes=2")


def test_stage_policy_merges_earlier_adapters_like_the_pipeline(ddp_run):
    run_dir, cfg, policy = ddp_run
    expected = as_base_model(policy).state_dict()
    got = stage_policy(cfg, run_dir, 2)[0].state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_ddp_launch_on_two_cpu_processes_trains_and_writes_once(ddp_run, capfd):
    run_dir, cfg, _ = ddp_run
    launch(cfg, run_dir, 2)
    out = capfd.readouterr()
    assert_trained_in_two_processes(run_dir, out.out + out.err, "MULTI_CPU")


@pytest.mark.parametrize("config", ["zero2", "zero3"])
def test_deepspeed_launch_on_two_cpu_processes_trains(tmp_path, capfd, monkeypatch, config):
    """ZeRO-2/3 sharding across two real processes, on DeepSpeed's CPU accelerator (gloo); the same code path as on
    GPUs, including the reference log-probs precomputed before the training engine wraps the policy."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install -e '.[deepspeed]'")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    cfg, _ = make_run_dir(tmp_path, f"accelerate={config}", "accelerate.num_processes=2", "accelerate.use_cpu=true")
    launch(cfg, tmp_path, 2)
    out = capfd.readouterr()
    assert_trained_in_two_processes(tmp_path, out.out + out.err, "DEEPSPEED")


@pytest.mark.gpu
@pytest.mark.parametrize("config", ["ddp", "zero2", "zero3"])
def test_accelerate_configs_train_on_gpu(tmp_path, capfd, config):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if config.startswith("zero"):
        pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install -e '.[deepspeed]'")
    processes = min(torch.cuda.device_count(), 2)
    cfg, _ = make_run_dir(tmp_path, f"accelerate={config}", f"accelerate.num_processes={processes}")
    launch(cfg, tmp_path, 2)
    out = capfd.readouterr()
    assert all(v.abs().sum() > 0 for v in trained_lora_b(tmp_path / "iter_2" / "adapter"))
    assert (out.out + out.err).count(f"iteration 2: trained in {processes} processes") == 1
    assert reference_log_probs_precomputed(tmp_path)
