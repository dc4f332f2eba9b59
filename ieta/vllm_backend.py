"""Optional vLLM back-end (``sampler=vllm``, ``pip install -e .[vllm]``, GPU): the same interface as HF sampling.

vLLM serves weights from disk. IETA merges each iteration's LoRA adapter into the policy (the next iteration's
reference), so after training the merged policy is written to ``iter_<k>/merged/`` and a new engine loads it.

Each engine lives in a worker process of its own (``spawn``), which serves every generation request for one set of
weights. New weights end that process and start another: the GPU memory of the old engine goes back with its
process. Deleting an engine in-process does not reliably free it (vLLM issues #1908 and #4678), so iteration 2
would start a second engine beside the first. vLLM's LoRA serving is not used: the adapter of iteration k is a delta
on the merge of adapters 1..k-1, which a single base-plus-adapter request cannot express.

Not yet run on a GPU in this project (vLLM's wheels do not fit the device machine's transfer limit).
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
from pathlib import Path

from ieta.io import atomic_path

#: seconds a worker gets to exit cleanly before it is killed
_STOP_TIMEOUT_S = 60.0


def _serve(conn, weights: str, seed: int, gpu_memory_utilization: float, engine: str) -> None:
    """The worker: build one engine for ``weights``, answer requests until told to stop (or the pipe closes)."""
    import importlib

    module, _, name = engine.rpartition(".")
    try:
        llm = getattr(importlib.import_module(module), name)(weights, seed, gpu_memory_utilization)
    except Exception as e:  # the parent raises it with the cause
        conn.send(("error", f"cannot start the engine for {weights}: {type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        try:
            conn.send(("ok", llm.generate(**request)))
        except Exception as e:  # the parent raises it; the worker stays up for the next request
            conn.send(("error", f"{type(e).__name__}: {e}"))


class VllmEngine:
    """vLLM in the worker: ``generate(prompts, n, ...) -> list[list[str]]``."""

    def __init__(self, weights: str, seed: int, gpu_memory_utilization: float):
        from vllm import LLM

        self.llm = LLM(model=weights, dtype="bfloat16", seed=seed, gpu_memory_utilization=gpu_memory_utilization)

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float, max_new_tokens: int,
                 stops: list[str], seed: int, progress: bool) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                max_tokens=max_new_tokens, stop=stops or None, seed=seed)
        outputs = self.llm.generate(prompts, params, use_tqdm=progress)
        return [[c.text for c in out.outputs] for out in outputs]


class Worker:
    """One engine process for one set of weights."""

    def __init__(self, weights: str, seed: int, gpu_memory_utilization: float,
                 engine: str = "ieta.vllm_backend.VllmEngine"):
        ctx = mp.get_context("spawn")  # a fresh interpreter: no CUDA state inherited from the pipeline
        self.weights = weights
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, weights, seed, gpu_memory_utilization, engine),
                                   daemon=True, name="ieta-vllm")
        self.process.start()
        child.close()
        try:
            self._answer()  # the engine is up, or its error is raised here
        except RuntimeError:
            self.close()
            raise

    def _answer(self):
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the vLLM worker for {self.weights} died (exit code {self.process.exitcode})") from None
        if status == "error":
            raise RuntimeError(f"vLLM worker: {value}")
        return value

    def generate(self, **request) -> list[list[str]]:
        self.conn.send(request)
        return self._answer()

    def close(self) -> None:
        """End the process (its GPU memory is freed with it)."""
        if self.process.is_alive():
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.process.join(_STOP_TIMEOUT_S)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self.conn.close()


_WORKER: dict[str, Worker] = {}  # at most one: {"current": Worker}


def _worker(weights: str, seed: int, gpu_memory_utilization: float, engine: str) -> Worker:
    current = _WORKER.get("current")
    if current is None or current.weights != weights:
        if current is not None:  # a new policy: its engine's process goes first, and its memory with it
            _WORKER.pop("current").close()
        _WORKER["current"] = Worker(weights, seed, gpu_memory_utilization, engine)
    return _WORKER["current"]


@atexit.register
def shutdown() -> None:
    """End the engine process, if any."""
    if (current := _WORKER.pop("current", None)) is not None:
        current.close()


def generate(weights: str | Path, prompts: list[str], *, n: int, temperature: float, top_p: float,
             max_new_tokens: int, stops: list[str], seed: int, gpu_memory_utilization: float = 0.3,
             progress: bool = True, engine: str = "ieta.vllm_backend.VllmEngine") -> list[list[str]]:
    """``n`` continuations per prompt, in input order (vLLM batches and schedules internally)."""
    worker = _worker(str(weights), seed, gpu_memory_utilization, engine)
    return worker.generate(prompts=prompts, n=n, temperature=temperature, top_p=top_p,
                           max_new_tokens=max_new_tokens, stops=stops, seed=seed, progress=progress)


def save_policy(model, tokenizer, out_dir: Path) -> Path:
    """Write the merged policy where vLLM can load it; returns the merged (adapter-free) model's directory."""
    with atomic_path(out_dir) as staged:
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
    return out_dir
