"""Jobs of a sweep share the untrained policy's stages (``ieta/share.py``): the shared files are exactly what a job
computes on its own, and a job that copies them gets the same iteration-0 metrics."""

from fnmatch import fnmatch
from pathlib import Path

from ieta.io import read_json, read_jsonl
from ieta.pipeline import _plain_config, _result_keys
from ieta.share import SHARED, fingerprint
from tests.conftest import compose_config, run_pipeline

#: measured, not decided: they differ between two runs of the same execution
MEASURED = ("duration_s", "peak_memory_mb")
#: the multi-turn evaluation on the greedy samples too, so every kind of iteration-0 file is shared
EVAL = ["sampler.turns=2", "sampler.greedy_eval=true", "sampler.revise=greedy", "sampler.temperature=0.8"]


def _flat(*overrides: str) -> dict:
    from ieta.config import validate

    return _result_keys(_plain_config(validate(compose_config(["model=tiny", *overrides]))))


def test_fingerprint_ignores_the_method_and_iterations_but_not_the_sampler_seed_or_model():
    base = fingerprint(_flat("method=baseline"))
    assert fingerprint(_flat("method=dpo", "iteration.num_iterations=3", "iteration.steps_per_iteration=7")) == base
    assert fingerprint(_flat("method=rlaif", "method.lora.r=4", "logger=wandb", "progress=false")) == base
    for changed in ("sampler.n=3", "seed=1", "sampler.max_new_tokens=9", "dataset.limit=3", "sandbox.timeout=2",
                    "model.dtype=bfloat16", "model.random_init.num_hidden_layers=3"):
        assert fingerprint(_flat("method=baseline", changed)) != base, changed


def _verdicts(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in MEASURED} for r in read_jsonl(path)]


def test_shared_stage_files_equal_a_job_computing_its_own(tmp_path: Path):
    share = tmp_path / "shared"
    first, alone, copied = tmp_path / "0_baseline", tmp_path / "alone_dpo", tmp_path / "1_dpo"
    run_pipeline(first, "method=baseline", f"share_dir={share}", *EVAL)
    run_pipeline(alone, "method=dpo", *EVAL)  # no store: computes its own iteration-0 evaluation and training samples
    run_pipeline(copied, "method=dpo", f"share_dir={share}", *EVAL)

    (store,) = share.iterdir()
    assert read_json(store / "iter_0" / "source.json")["run_dir"] == str(first)
    for k, names in SHARED.items():
        stored = sorted(p.name for p in (store / f"iter_{k}").glob("*.jsonl"))
        assert stored and all(any(fnmatch(s, n) for n in names) for s in stored), stored
        if k == 0:
            assert "eval_greedy_turn2_samples.jsonl" in stored and "eval_samples.jsonl" in stored
        for name in stored:  # what the store holds is what a job without it computes (samples byte for byte)
            assert (copied / f"iter_{k}" / name).read_bytes() == (store / f"iter_{k}" / name).read_bytes(), name
            if "executions" in name:
                assert _verdicts(store / f"iter_{k}" / name) == _verdicts(alone / f"iter_{k}" / name), name
            else:
                assert (store / f"iter_{k}" / name).read_bytes() == (alone / f"iter_{k}" / name).read_bytes(), name
        record = read_json(copied / f"iter_{k}" / "shared.json")
        assert record["from"] == str(first) and sorted(record["files"]) == stored
        assert not (alone / f"iter_{k}" / "shared.json").exists()
    m_alone, m_copied = read_json(alone / "metrics.json"), read_json(copied / "metrics.json")
    assert m_alone[0] == m_copied[0]  # the initial evaluation's metrics
    assert "pass@1_turn2" in m_copied[0] and m_copied[0]["multi_turn"]["revised"] == "greedy"
    assert (copied / "iter_1" / "adapter" / "adapter_config.json").exists()  # and it trained on the copied samples
