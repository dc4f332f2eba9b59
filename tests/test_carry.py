"""An iteration that leaves the policy unchanged carries over the previous iteration's greedy evaluation
(``ieta.share.carry_over``, ``ieta.evaluate.seed_free_files``): exactly the files drawn at T=0, equal to what the
stage would draw again, and nothing when the policy was trained."""

from fnmatch import fnmatch
from pathlib import Path

from ieta.config import validate
from ieta.evaluate import seed_free_files
from ieta.io import read_json, read_jsonl
from ieta.share import CARRIED
from tests.conftest import TINY, compose_config, run_pipeline

#: measured, not decided: they differ between two runs of the same execution; and the stage seed each record names,
#: unused at T=0 (a carried record names the seed of the iteration that drew it)
MEASURED = ("duration_s", "peak_memory_mb", "seed")
#: a sampled main evaluation beside a greedy one revised after feedback: some files seed-free, some not
SAMPLED = ["sampler.turns=2", "sampler.greedy_eval=true", "sampler.revise=greedy", "sampler.temperature=0.8"]


def _verdicts(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in MEASURED} for r in read_jsonl(path)]


def test_unchanged_policy_carries_its_greedy_files_which_equal_a_fresh_draw(tmp_path: Path, monkeypatch):
    carried, fresh = tmp_path / "carried", tmp_path / "fresh"
    metrics = run_pipeline(carried, "method=baseline", *SAMPLED)
    with monkeypatch.context() as m:  # the same run, every stage drawn again
        m.setattr("ieta.pipeline.carry_over", lambda *args: [])
        fresh_metrics = run_pipeline(fresh, "method=baseline", *SAMPLED)

    record = read_json(carried / "iter_1" / CARRIED)
    names = sorted(record["files"])
    assert record["from"] == "iter_0" and names == [
        "eval_greedy_executions.jsonl", "eval_greedy_samples.jsonl", "eval_greedy_turn2_executions.jsonl",
        "eval_greedy_turn2_feedback.jsonl", "eval_greedy_turn2_samples.jsonl"]
    assert "eval_samples.jsonl" not in names  # sampled at T=0.8 with the iteration's own seed: drawn again
    for name in names:
        assert (carried / "iter_1" / name).read_bytes() == (carried / "iter_0" / name).read_bytes(), name
        # what a fresh draw of the unchanged policy gives
        assert _verdicts(carried / "iter_1" / name) == _verdicts(fresh / "iter_1" / name), name
    assert not (fresh / "iter_1" / CARRIED).exists()
    assert metrics == fresh_metrics


def test_greedy_evaluation_is_carried_whole_and_a_trained_policy_carries_nothing(tmp_path: Path):
    greedy = ["sampler.n=1", "sampler.temperature=0", "ks=[1]", "sampler.turns=2"]
    first, second = run_pipeline(tmp_path / "baseline", "method=baseline", *greedy)
    files = read_json(tmp_path / "baseline" / "iter_1" / CARRIED)["files"]
    assert files and all(fnmatch(n, "eval_*.jsonl") for n in files)
    assert sorted(files) == sorted(p.name for p in (tmp_path / "baseline" / "iter_0").glob("eval_*.jsonl"))
    assert {k: v for k, v in second.items() if k != "iteration"} == {k: v for k, v in first.items() if k != "iteration"}

    run_pipeline(tmp_path / "dpo", "method=dpo", *greedy)
    assert (tmp_path / "dpo" / "iter_1" / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "dpo" / "iter_1" / CARRIED).exists()


def test_seed_free_files_follow_the_sampler():
    def patterns(*overrides):
        return seed_free_files(validate(compose_config([*TINY, *overrides])))

    assert patterns("sampler.temperature=0") == ("eval_*.jsonl",)
    assert patterns("sampler.temperature=0.8", "sampler.greedy_eval=false") == ()
    assert "eval_greedy_samples.jsonl" in patterns(*SAMPLED)
    assert not any("turn" in p for p in patterns(*SAMPLED[:-2], "sampler.revise=main", "sampler.temperature=0.8"))
