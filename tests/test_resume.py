"""Resume: a run SIGKILLed during sampling, then during training, and rerun each time ends with the artefacts of an
uninterrupted run with the same seed (which also shows that a seed and config reproduce a run on CPU)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ieta.config import ConfigError, validate
from ieta.io import read_json, read_jsonl, write_json
from ieta.pipeline import _check_resumable, _plain_config
from tests.conftest import TINY, compose_config, run_pipeline

#: fields that measure time or memory, not results
VOLATILE = ("duration_s", "peak_memory_mb", "train_runtime", "train_samples_per_second", "train_steps_per_second")


def run_until_killed(run_dir: Path, target: str, call: int, *overrides: str) -> None:
    """Run ``python -m ieta.main`` until it pauses right after the ``call``-th call of ``target``, then SIGKILL it."""
    flag, log = run_dir.parent / f"{run_dir.name}.paused", run_dir.parent / f"{run_dir.name}.log"
    flag.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "tests.pause_run", str(flag), target, str(call), *TINY, "method=dpo", *overrides]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    while not flag.exists():
        assert proc.poll() is None, f"the run ended before {target}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"{target} was not reached"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _results(record):
    """A JSON record without timings; PEFT writes ``target_modules``, a set, in hash order."""
    if not isinstance(record, dict):
        return record
    return {k: sorted(v) if k == "target_modules" else v for k, v in record.items() if k not in VOLATILE}


def stable(path: Path):
    """A file's results: its JSON data without timings, or the tensors of a safetensors file."""
    if path.suffix == ".safetensors":
        return {k: v.tolist() for k, v in load_file(path).items()}
    data = read_jsonl(path) if path.suffix == ".jsonl" else read_json(path)
    return [_results(r) for r in data] if isinstance(data, list) else _results(data)


def test_sigkill_during_sampling_then_training_resumes_to_the_same_artefacts(tmp_path):
    reference, run, log = tmp_path / "reference", tmp_path / "run", tmp_path / "reference.log"
    with open(log, "w") as out:  # the uninterrupted run, beside the interrupted one
        uninterrupted = subprocess.Popen([sys.executable, "-m", "ieta.main", *TINY, "method=dpo",
                                          f"hydra.run.dir={reference}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        # generate calls: iteration 0's evaluation, its turn-2 revisions, then iteration 1's training samples
        run_until_killed(run, "ieta.sample:generate", 3, f"hydra.run.dir={run}")
        assert [m["iteration"] for m in read_json(run / "metrics.json")] == [0]
        assert not (run / "iter_1" / "samples.jsonl").exists()

        run_until_killed(run, "peft:PeftModel.save_pretrained", 1, f"resume={run}")  # adapter written, not committed
        assert (run / "iter_1" / "pairs.jsonl").exists() and (run / "iter_1" / ".adapter.tmp").is_dir()
        assert not (run / "iter_1" / "adapter").exists()

        run_pipeline(run, "method=dpo")
        assert uninterrupted.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        uninterrupted.kill()
    files = sorted(p.relative_to(reference) for p in reference.rglob("*")
                   if p.suffix in (".json", ".jsonl", ".safetensors") and ".hydra" not in p.parts)
    assert {"iter_1/samples.jsonl", "iter_1/pairs.jsonl", "iter_1/adapter/adapter_model.safetensors",
            "metrics.json"} <= {str(f) for f in files}
    for name in files:
        assert stable(run / name) == stable(reference / name), f"{name} differs from the uninterrupted run"
    assert not list(run.rglob(".*.tmp")), "temporaries left behind"
    info = read_json(run / "run_info.json")
    assert info["seed"] == 0 and {"python", "torch", "transformers", "trl", "peft"} <= info["versions"].keys()


def test_resuming_with_other_settings_is_refused_naming_them(tmp_path):
    started = validate(compose_config(TINY))
    write_json(tmp_path / "run_info.json", {"config": _plain_config(started)})
    _check_resumable(tmp_path, validate(compose_config([*TINY, "progress=true", "logger=wandb", f"resume={tmp_path}"])))
    with pytest.raises(ConfigError, match=r"sampler\.n=2 there, 3 now.*hydra\.run\.dir"):
        _check_resumable(tmp_path, validate(compose_config([*TINY, "sampler.n=3"])))


def test_resumed_run_samples_like_an_uninterrupted_one_where_dropout_changes_the_output(tmp_path):
    """The policy samples and is evaluated in eval mode: a run killed after training (so the resumed run loads the
    adapter from disk) gives the evaluation an uninterrupted run gives with the policy it trained in-process."""
    import torch

    from ieta.models import load_model
    from ieta.train import load_adapter

    noisy = ["method.lora.dropout=0.9", "method.learning_rate=0.05", "sampler.turns=1"]
    reference, run, log = tmp_path / "reference", tmp_path / "run", tmp_path / "reference.log"
    with open(log, "w") as out:
        uninterrupted = subprocess.Popen([sys.executable, "-m", "ieta.main", *TINY, "method=dpo", *noisy,
                                          f"hydra.run.dir={reference}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        # generate calls: iteration 0's evaluation, iteration 1's training samples, iteration 1's evaluation
        run_until_killed(run, "ieta.sample:generate", 3, *noisy, f"hydra.run.dir={run}")
        assert (run / "iter_1" / "adapter").is_dir() and not (run / "iter_1" / "eval_samples.jsonl").exists()
        run_pipeline(run, "method=dpo", *noisy)
        assert uninterrupted.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        uninterrupted.kill()
    for name in ("iter_1/eval_samples.jsonl", "iter_1/eval_executions.jsonl", "metrics.json"):
        assert stable(run / name) == stable(reference / name), f"{name} differs from the uninterrupted run"
    # the adapter's dropout does change the policy's output: in train mode the evaluation would have differed
    cfg = validate(compose_config([*TINY, "method=dpo", *noisy]))
    policy = load_adapter(load_model("tiny", torch.float32, "cpu", random_init=cfg.model.random_init, seed=0),
                          run / "iter_1" / "adapter")
    ids = torch.arange(1, 40).unsqueeze(0)
    with torch.no_grad():
        evaluated = policy.eval()(ids).logits
        torch.manual_seed(0)
        dropped = policy.train()(ids).logits
    assert (evaluated.argmax(-1) != dropped.argmax(-1)).float().mean() > 0.5  # most greedy tokens change
