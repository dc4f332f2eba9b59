import dataclasses
import subprocess
import sys
import typing

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import MISSING, OmegaConf

from ieta.config import (ConfigError, LoraConfig, MethodConfig, PairsConfig, RunConfig, SamplerConfig, validate,
                         yaml_defaults)
from tests.conftest import compose_config


def _schemas(cls=RunConfig, prefix=""):
    """``(dotted key, field)`` of every field in the schema tree under ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield prefix + f.name, f
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _schemas(hints[f.name], f"{prefix}{f.name}.")


def test_schemas_hold_no_defaults_of_their_own():
    """Every default lives in conf/ only: a schema field is MISSING, or empty (None, {}) for a key that the default
    composition leaves out (an unchosen group such as accelerate, a block only some methods have)."""
    composed = OmegaConf.to_container(compose_config(), resolve=True)
    second_source = []
    for key, f in _schemas():
        empty = f.default is None or (f.default_factory is dict)
        if f.default is MISSING and f.default_factory is dataclasses.MISSING:
            continue
        present = OmegaConf.select(OmegaConf.create(composed), key, default="<absent>") != "<absent>"
        if not empty or present:
            second_source.append(key)
    assert not second_source, f"defaults in ieta/config.py that conf/ also sets: {second_source}"


def test_schemas_built_in_code_equal_the_default_yaml():
    """``SamplerConfig(...)`` in code takes its defaults from conf/, so code and YAML cannot disagree."""
    plain = lambda obj: OmegaConf.to_container(OmegaConf.structured(obj), enum_to_str=True)  # noqa: E731
    assert plain(RunConfig()) == plain(validate(compose_config()))
    assert SamplerConfig(n=3).n == 3 and SamplerConfig().max_new_tokens == compose_config().sampler.max_new_tokens
    dpo = compose_config(["method=dpo"]).method
    assert LoraConfig().target_modules == list(dpo.lora.target_modules)
    assert PairsConfig() == OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PairsConfig), dpo.pairs))
    assert MethodConfig().name == "dpo" and yaml_defaults().method.name == "dpo"


def test_baseline_records_the_lora_and_pairs_it_runs_with():
    baseline, dpo = compose_config(["method=baseline"]).method, compose_config(["method=dpo"]).method
    assert baseline.pairs == dpo.pairs and baseline.lora == dpo.lora and baseline.train is False


@pytest.mark.parametrize("experiment", [None, "quick", "paper", "standard"])
@pytest.mark.parametrize("method", ["baseline", "dpo", "rlaif", "sft"])
def test_every_preset_composes_and_validates(experiment, method):
    overrides = [f"method={method}"] + ([f"experiment={experiment}"] if experiment else [])
    cfg = validate(compose_config(overrides))
    assert cfg.method.name == method
    assert cfg.iteration.num_iterations >= 1


def test_defaults_match_the_seed_report():
    cfg = validate(compose_config())
    assert (cfg.iteration.num_iterations, cfg.iteration.steps_per_iteration) == (5, 500)
    assert cfg.model.path == "embedded" and cfg.dataset.split.value == "eval"


def test_defaults_sample_several_per_problem_for_pairs_and_pass_at_10():
    """Pairs need a passing and a failing sample of one problem; pass@10 needs 10 samples per problem."""
    cfg = validate(compose_config())
    assert (cfg.sampler.train_n, cfg.sampler.train_temperature) == (8, 0.8)
    assert (cfg.sampler.n, cfg.sampler.temperature) == (10, 0.8) and 10 in cfg.ks
    # standard is sized to 2 CPU cores: fewer, but still several per problem, and pass@k for every k <= n
    standard = validate(compose_config(["experiment=standard"]))
    assert standard.sampler.train_n >= 4 and standard.sampler.train_temperature > 0
    assert standard.sampler.n >= 5 and standard.sampler.temperature > 0 and standard.sampler.n in standard.ks
    paper = validate(compose_config(["experiment=paper"]))
    assert paper.sampler.n >= max(paper.ks) and paper.sampler.temperature > 0


def test_standard_preset_splits_all_of_humaneval_in_two_disjoint_halves():
    from ieta.data import run_splits

    cfg = validate(compose_config(["experiment=standard"]))
    train, evaluation = run_splits(cfg.dataset)
    assert (len(train), len(evaluation)) == (82, 82) and cfg.iteration.num_iterations == 1
    assert not {p.task_id for p in train} & {p.task_id for p in evaluation}


@pytest.mark.parametrize("method, config_class", [("dpo", "DPOConfig"), ("sft", "SFTConfig"), ("rlaif", "GRPOConfig")])
def test_a_trainer_typo_fails_at_config_time_naming_the_trl_class(method, config_class):
    with pytest.raises(ConfigError, match=rf"method\.trainer\.gradient_checkpointng .*{config_class}.*"
                                          r"did you mean 'gradient_checkpointing'"):
        validate(compose_config([f"method={method}", "+method.trainer.gradient_checkpointng=false"]))
    validate(compose_config([f"method={method}", "+method.trainer.gradient_checkpointing=false"]))


@pytest.mark.parametrize("split", ["all", "train"])
def test_reference_fallback_on_evaluated_problems_fails_at_config_time(split):
    for method in ("dpo", "sft"):
        with pytest.raises(ConfigError, match=rf"method\.pairs\.reference_fallback .*dataset\.split={split}"):
            validate(compose_config([f"method={method}", f"dataset.split={split}"]))
        validate(compose_config([f"method={method}", f"dataset.split={split}", "method.pairs.reference_fallback=false"]))
    validate(compose_config(["method=baseline", f"dataset.split={split}"]))  # trains on nothing


@pytest.mark.parametrize("override, key", [
    ("iteration.num_iterations=-1", "iteration.num_iterations"),
    ("sampler.n=0", "sampler.n"),
    ("sampler.n=abc", "sampler.n"),
    ("dataset.split=test", "dataset.split"),
    ("sampler.temperature=-1", "sampler.temperature"),
    ("+sampler.nope=1", "sampler.nope"),
    ("method.pairs.strategies=[bogus]", "method.pairs.strategies"),
    ("method=rlaif method.rlaif.num_generations=1", "method.rlaif.num_generations"),
    ("method=rlaif +method.rlaif.typo=1", "method.rlaif.typo"),
    ("logger=wandb logger.mode=sometimes", "logger.mode"),
    ("logger=wandb logger.name=neptune", "logger"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose_config(override.split()))


def test_unknown_method_lists_the_options():
    with pytest.raises(ConfigCompositionException) as e:
        compose_config(["method=nonexistent"])
    assert "baseline" in str(e.value.__cause__ or e.value) and "dpo" in str(e.value.__cause__ or e.value)


@pytest.mark.parametrize("override, expected", [
    ("method=nonexistent", ["method", "baseline", "dpo"]),
    ("iteration.num_iterations=-1", ["iteration.num_iterations", ">= 0"]),
    ("model=tiny hydra.run.dir={tmp}/file/run", ["cannot write {tmp}/file/run: not a writable directory", "hydra.run.dir=<dir>"]),
    ("model=tiny resume={tmp}/typo", ["resume={tmp}/typo is not a run dir", "use hydra.run.dir={tmp}/typo"]),
    ("model=tiny logger=wandb logger.mode=sometimes", ["logger.mode must be one of"]),
    ("model=tiny +method.trainer.learning_rat=1", ["method.trainer.learning_rat is not an argument of trl.DPOConfig"]),
])
def test_cli_fails_fast_before_loading_a_model(tmp_path, override, expected):
    (tmp_path / "file").write_text("")
    args = override.format(tmp=tmp_path).split()
    if not any(a.startswith(("hydra.run.dir=", "resume=")) for a in args):
        args.append(f"hydra.run.dir={tmp_path}/run")
    proc = subprocess.run([sys.executable, "-m", "ieta.main", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    for text in expected:
        assert text.format(tmp=tmp_path) in proc.stderr
    assert not list(tmp_path.rglob("run_info.json")) and not (tmp_path / "typo").exists()
