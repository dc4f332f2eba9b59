"""Typed schemas for the Hydra config: invalid keys or values fail early, naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

PAIR_STRATEGIES = ("pass_fail", "graded", "repair")
#: failing outcomes, in the default order of preference as `rejected` (runtime errors first)
OUTCOMES = ("runtime_error", "syntax_error", "timeout", "memory_limit", "crashed", "failed")


#: the config tree ``python -m ieta.main`` composes
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: list[str] | tuple[str, ...] = (), with_hydra: bool = False) -> DictConfig:
    """The config ``python -m ieta.main <overrides>`` would run with, outside of a Hydra app (benchmarks, tests);
    ``with_hydra`` keeps the ``hydra`` node (launcher, run dir)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=with_hydra)


class ConfigError(ValueError):
    """A config key has an invalid value; the message names the key and what is allowed."""


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"invalid config: {key} {message}")


class Split(str, Enum):
    train = "train"
    eval = "eval"
    all = "all"


@dataclass
class DatasetConfig:
    name: str = "humaneval"
    source: str = "humaneval"
    limit: int | None = None
    split: Split = Split.eval
    eval_fraction: float = 0.5
    split_seed: int = 1234

    def __post_init__(self) -> None:
        _check(self.limit is None or self.limit >= 1, "dataset.limit", f"must be >= 1 or null, got {self.limit}")
        _check(0.0 < self.eval_fraction < 1.0, "dataset.eval_fraction", f"must be in (0, 1), got {self.eval_fraction}")


@dataclass
class ModelConfig:
    name: str = "qwen2.5-coder-0.5b-instruct"
    path: str = "embedded"
    gguf_file: str | None = None
    prompt_format: str = "chat"
    dtype: str = "auto"
    random_init: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check(self.prompt_format in ("chat", "completion"), "model.prompt_format",
               f"must be one of chat, completion; got {self.prompt_format!r}")
        _check(self.dtype in ("auto", "bfloat16", "float16", "float32"), "model.dtype",
               f"must be one of auto, bfloat16, float16, float32; got {self.dtype!r}")
        _check(self.path != "tiny" or self.random_init is not None, "model.random_init", "is required when model.path=tiny")


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    top_layers: int | None = None

    def __post_init__(self) -> None:
        _check(self.top_layers is None or self.top_layers >= 1, "method.lora.top_layers",
               f"must be >= 1 or null; got {self.top_layers}")


@dataclass
class PairsConfig:
    strategies: list[str] = field(default_factory=lambda: ["pass_fail"])
    max_per_problem: int = 4
    reject_preference: list[str] = field(default_factory=lambda: list(OUTCOMES))
    reference_fallback: bool = True
    graded_min_margin: float = 0.25

    def __post_init__(self) -> None:
        bad = [s for s in self.strategies if s not in PAIR_STRATEGIES]
        _check(not bad, "method.pairs.strategies", f"has unknown {bad}; allowed: {list(PAIR_STRATEGIES)}")
        _check(self.max_per_problem >= 1, "method.pairs.max_per_problem", "must be >= 1")
        _check(0 < self.graded_min_margin <= 1, "method.pairs.graded_min_margin", "must be in (0, 1]")
        bad = [o for o in self.reject_preference if o not in OUTCOMES]
        _check(not bad, "method.pairs.reject_preference", f"has unknown {bad}; allowed: {list(OUTCOMES)}")


@dataclass
class MethodConfig:
    name: str = "dpo"
    train: bool = True
    beta: float = 0.1
    learning_rate: float = 5e-5
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_length: int = 1024
    trainer: dict[str, Any] = field(default_factory=dict)
    lora: LoraConfig = field(default_factory=LoraConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    rlaif: dict[str, Any] = field(default_factory=dict)
    interactive: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.beta > 0, "method.beta", "must be > 0")
        _check(self.per_device_train_batch_size >= 1, "method.per_device_train_batch_size", "must be >= 1")


@dataclass
class IterationConfig:
    num_iterations: int = 5
    steps_per_iteration: int = 500

    def __post_init__(self) -> None:
        _check(self.num_iterations >= 0, "iteration.num_iterations",
               f"must be an integer >= 0 (0 evaluates the initial model only); got {self.num_iterations}")
        _check(self.steps_per_iteration >= 1, "iteration.steps_per_iteration",
               f"must be an integer >= 1; got {self.steps_per_iteration}")


@dataclass
class SamplerConfig:
    backend: str = "hf"
    n: int = 1
    train_n: int | None = None
    temperature: float = 0.8
    train_temperature: float | None = None
    top_p: float = 0.95
    max_new_tokens: int = 512
    batch_size: int = 64
    quantize: str = "auto"
    turns: int = 2
    feedback: str = "trace"
    greedy_eval: bool = False
    gpu_memory_utilization: float = 0.3

    def __post_init__(self) -> None:
        _check(self.quantize in ("auto", "int8", "none"), "sampler.quantize",
               f"must be one of ['auto', 'int8', 'none']; got {self.quantize!r}")
        _check(self.backend in ("hf", "vllm"), "sampler.backend", f"must be one of ['hf', 'vllm']; got {self.backend!r}")
        _check(0 < self.gpu_memory_utilization <= 1, "sampler.gpu_memory_utilization", "must be in (0, 1]")
        _check(self.n >= 1, "sampler.n", f"must be >= 1; got {self.n}")
        _check(self.train_n is None or self.train_n >= 1, "sampler.train_n", "must be >= 1 or null")
        for key in ("temperature", "train_temperature"):
            value = getattr(self, key)
            _check(value is None or value >= 0, f"sampler.{key}", f"must be >= 0; got {value}")
        _check(0 < self.top_p <= 1, "sampler.top_p", f"must be in (0, 1]; got {self.top_p}")
        _check(self.max_new_tokens >= 1, "sampler.max_new_tokens", "must be >= 1")
        _check(self.batch_size >= 1, "sampler.batch_size", "must be >= 1")
        _check(self.turns >= 1, "sampler.turns", f"must be >= 1 (1: a single attempt); got {self.turns}")
        _check(self.feedback in ("trace", "tests", "none"), "sampler.feedback",
               f"must be one of ['trace', 'tests', 'none']; got {self.feedback!r}")


@dataclass
class RunConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    iteration: IterationConfig = field(default_factory=IterationConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    sandbox: dict[str, Any] = field(default_factory=dict)
    logger: dict[str, Any] = field(default_factory=dict)
    accelerate: dict[str, Any] | None = None
    seed: int = 0
    ks: list[int] = field(default_factory=lambda: [1, 10, 100])
    progress: bool = True
    resume: str | None = None

    def __post_init__(self) -> None:
        _check(all(k >= 1 for k in self.ks) and bool(self.ks), "ks", f"must be a non-empty list of integers >= 1; got {self.ks}")
        if self.accelerate is not None:
            _check_accelerate(self.accelerate)


def _check_accelerate(launch: dict[str, Any]) -> None:
    """The ``accelerate`` group is an ``accelerate launch`` config file: checked against accelerate's own schema."""
    from accelerate.commands.config.config_args import ClusterConfig

    _check("distributed_type" in launch, "accelerate.distributed_type", "is required (e.g. MULTI_GPU, DEEPSPEED)")
    plain = ClusterConfig.process_config(dict(launch))
    bad = sorted(set(plain) - set(ClusterConfig.__dataclass_fields__))
    _check(not bad, "accelerate", f"has keys accelerate launch does not know: {bad}")
    try:
        ClusterConfig(**plain)
    except ValueError as e:  # an unknown distributed_type or compute_environment
        raise ConfigError(f"invalid config: accelerate: {e}") from None
    processes = launch.get("num_processes")
    _check(isinstance(processes, int) and processes >= 1, "accelerate.num_processes", f"must be >= 1; got {processes!r}")


def _check_method(run: RunConfig) -> None:
    """``method.name`` names a registered method (``ieta/methods/``), whose own checks then run."""
    from ieta.methods import available, get_method

    _check(run.method.name in available(), "method", f"must be one of {available()}; got {run.method.name!r}")
    get_method(run.method.name).check_config(run)


def validate(cfg: DictConfig) -> RunConfig:
    """Check types, unknown keys and values against the schema; raise ``ConfigError`` naming the key."""
    from ieta.execute import SandboxConfig

    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    try:
        run = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), plain))
        SandboxConfig(**run.sandbox)
        _check_method(run)
    except ConfigError:
        raise
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid config: sandbox: {e}") from None
    return run
