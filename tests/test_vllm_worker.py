"""The vLLM back-end's engine process: one per set of weights, ended (with its memory) when the weights change.

vLLM cannot run here (no GPU), so the worker serves a stand-in engine; the process handling is the real code.
"""

from __future__ import annotations

import os

import pytest

from ieta import vllm_backend


class EchoEngine:
    """Answers each prompt with its weights' path and the process id serving it."""

    def __init__(self, weights: str, seed: int, gpu_memory_utilization: float):
        if weights == "broken":
            raise OSError("no such model")
        self.weights = weights

    def generate(self, prompts, n, **_):
        if prompts == ["raise"]:
            raise ValueError("bad request")
        return [[f"{self.weights}:{os.getpid()}:{p}"] * n for p in prompts]


ENGINE = f"{__name__}.EchoEngine"


def _generate(weights, prompts, n=1):
    return vllm_backend.generate(weights, prompts, n=n, temperature=0.0, top_p=1.0, max_new_tokens=8, stops=[],
                                 seed=0, engine=ENGINE)


def test_new_weights_end_the_old_engine_process():
    try:
        first = _generate("iter_0", ["a", "b"], n=2)
        assert [len(c) for c in first] == [2, 2] and first[0][0].startswith("iter_0:")
        old = vllm_backend._WORKER["current"].process
        assert _generate("iter_0", ["c"])[0][0].split(":")[1] == first[0][0].split(":")[1]  # same engine reused
        second = _generate("iter_1/merged", ["a"])
        assert not old.is_alive() and old.exitcode == 0  # the old engine's process is gone, memory with it
        assert second[0][0].split(":")[1] != first[0][0].split(":")[1] and os.getpid() != old.pid
    finally:
        vllm_backend.shutdown()
    assert "current" not in vllm_backend._WORKER


def test_engine_errors_surface_and_the_worker_stays_usable():
    try:
        with pytest.raises(RuntimeError, match="bad request"):
            _generate("iter_0", ["raise"])
        assert _generate("iter_0", ["ok"])[0][0].endswith(":ok")
        with pytest.raises(RuntimeError, match="no such model"):
            _generate("broken", ["x"])
    finally:
        vllm_backend.shutdown()
