"""The real embedded 0.5B model through the normal pipeline (minutes on CPU): `pytest -m slow`."""

import pytest

from ieta.config import validate
from ieta.pipeline import run
from tests.conftest import compose_config


@pytest.mark.slow
def test_greedy_pass_at_1_is_far_from_zero(tmp_path):
    cfg = validate(compose_config([
        "method=baseline", "iteration.num_iterations=0", "sampler.n=1", "sampler.temperature=0",
        "dataset.split=all", "dataset.limit=16", "sampler.max_new_tokens=320", "ks=[1]", "progress=false"]))
    [record] = run(cfg, tmp_path)
    assert record["pass@1"] >= 0.4, record
    assert record["execution_rate"] >= 0.6, record
