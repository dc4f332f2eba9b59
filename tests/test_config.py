import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException

from ieta.config import ConfigError, validate
from tests.conftest import compose_config


@pytest.mark.parametrize("experiment", [None, "quick", "paper"])
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
