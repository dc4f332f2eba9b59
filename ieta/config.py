"""Typed schemas for the Hydra config: invalid keys or values fail early, naming the key."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

PAIR_STRATEGIES = ("pass_fail", "graded", "repair")
#: failing outcomes, in the default order of preference as `rejected` (runtime errors first)
OUTCOMES = ("runtime_error", "syntax_error", "timeout", "memory_limit", "crashed", "failed")


#: the config tree ``python -m ieta.main`` composes
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _if_null(value: Any, default: Any) -> Any:
    """``${ieta.if_null:${resume},<dir>}``: ``default`` when ``value`` is null (``oc.select`` returns a null key's
    null, so ``hydra.run.dir`` needs this to fall back to a generated dir when ``resume`` is not set)."""
    return default if value is None else value


if not OmegaConf.has_resolver("ieta.if_null"):  # before Hydra composes: importing ieta.main imports this module
    OmegaConf.register_new_resolver("ieta.if_null", _if_null)


@functools.cache
def yaml_defaults() -> DictConfig:
    """The default composition's values, read from ``conf/``: ``config.yaml``'s top-level keys and, for each group,
    the option its defaults list picks. The YAML is the one source of every default: the schemas below hold none of
    their own (their fields are ``MISSING``) and fill what a caller leaves out from here. Read as plain files, not
    composed, so this also works inside a running Hydra app."""
    top = OmegaConf.load(CONF_DIR / "config.yaml")
    out = OmegaConf.masked_copy(top, [k for k in top if k not in ("defaults", "hydra")])
    for entry in top.defaults:
        if not isinstance(entry, DictConfig):  # _self_
            continue
        (group, option), = entry.items()
        if option is None or group == "experiment":
            continue
        node = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
        if "defaults" in node:
            raise RuntimeError(f"conf/{group}/{option}.yaml: a group's default option must not extend another")
        out[group] = node
    return out


class _Schema:
    """A config schema whose defaults live only in ``conf/`` (:func:`yaml_defaults`): every field is ``MISSING``
    unless it is a group or block a config may leave out (then None or empty). Building one in code
    (``SamplerConfig(max_new_tokens=8)``) takes every field not given from the default YAML."""

    #: where this schema's node sits in the composed config ("" is the root)
    conf_key: ClassVar[str]

    def _fill_from_yaml(self) -> None:
        missing = [f.name for f in dataclasses.fields(self) if _is_missing(getattr(self, f.name))]
        if not missing:
            return
        node = yaml_defaults() if not self.conf_key else OmegaConf.select(yaml_defaults(), self.conf_key)
        absent = [name for name in missing if name not in node]
        _check(not absent, f"{self.conf_key or 'config'}", f"has no default in conf/ for {absent}")
        typed = OmegaConf.merge(OmegaConf.structured(type(self)), OmegaConf.masked_copy(node, missing))
        for name in missing:
            value = typed[name]
            setattr(self, name, OmegaConf.to_object(value) if OmegaConf.is_config(value) else value)


def _is_missing(value: Any) -> bool:
    return isinstance(value, str) and value == MISSING


def compose_config(overrides: list[str] | tuple[str, ...] = (), with_hydra: bool = False) -> DictConfig:
    """The config ``python -m ieta.main <overrides>`` would run with, outside of a Hydra app (benchmarks, tests);
    ``with_hydra`` keeps the ``hydra`` node (launcher, run dir)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=with_hydra)


class ConfigError(ValueError):
    """A config key has an invalid value; the message names the key and what is allowed."""


def check_block(checks: list[tuple[bool, str, str]], key: str) -> None:
    """Raise ``ConfigError`` for the first failing ``(ok, field, message)`` of the settings block ``key``."""
    for ok, field_name, message in checks:
        _check(ok, f"{key}.{field_name}", message)


def parse_block(cls, raw, key: str):
    """The settings block ``key`` (a dict, DictConfig or ``cls``) as a validated ``cls``; errors name ``key.<field>``."""
    if isinstance(raw, cls):
        return raw
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), raw or {}))
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {key}.{e.full_key}: {e.msg.splitlines()[0]}") from None


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"invalid config: {key} {message}")


class Split(str, Enum):
    train = "train"
    eval = "eval"
    all = "all"


@dataclass
class DatasetConfig(_Schema):
    conf_key: ClassVar[str] = "dataset"

    name: str = MISSING
    source: str = MISSING
    limit: int | None = MISSING
    split: Split = MISSING
    eval_fraction: float = MISSING
    split_seed: int = MISSING

    def __post_init__(self) -> None:
        self._fill_from_yaml()
        _check(self.limit is None or self.limit >= 1, "dataset.limit", f"must be >= 1 or null, got {self.limit}")
        _check(0.0 < self.eval_fraction < 1.0, "dataset.eval_fraction", f"must be in (0, 1), got {self.eval_fraction}")


@dataclass
class ModelConfig(_Schema):
    conf_key: ClassVar[str] = "model"

    name: str = MISSING
    path: str = MISSING
    gguf_file: str | None = MISSING
    prompt_format: str = MISSING
    dtype: str = MISSING
    random_init: dict[str, Any] | None = MISSING

    def __post_init__(self) -> None:
        self._fill_from_yaml()
        _check(self.prompt_format in ("chat", "completion"), "model.prompt_format",
               f"must be one of chat, completion; got {self.prompt_format!r}")
        _check(self.dtype in ("auto", "bfloat16", "float16", "float32"), "model.dtype",
               f"must be one of auto, bfloat16, float16, float32; got {self.dtype!r}")
        _check(self.path != "tiny" or self.random_init is not None, "model.random_init", "is required when model.path=tiny")
        if self.random_init and "shape" in self.random_init:
            from ieta.model_shapes import shapes

            _check(self.random_init["shape"] in shapes(), "model.random_init.shape",
                   f"must be one of {shapes()}; got {self.random_init['shape']!r}")


@dataclass
class LoraConfig(_Schema):
    conf_key: ClassVar[str] = "method.lora"

    r: int = MISSING
    alpha: int = MISSING
    dropout: float = MISSING
    target_modules: list[str] = MISSING
    top_layers: int | None = MISSING

    def __post_init__(self) -> None:
        self._fill_from_yaml()
        _check(self.top_layers is None or self.top_layers >= 1, "method.lora.top_layers",
               f"must be >= 1 or null; got {self.top_layers}")


@dataclass
class PairsConfig(_Schema):
    conf_key: ClassVar[str] = "method.pairs"

    strategies: list[str] = MISSING
    max_per_problem: int = MISSING
    reject_preference: list[str] = MISSING
    reference_fallback: bool = MISSING
    graded_min_margin: float = MISSING

    def __post_init__(self) -> None:
        self._fill_from_yaml()
        bad = [s for s in self.strategies if s not in PAIR_STRATEGIES]
        _check(not bad, "method.pairs.strategies", f"has unknown {bad}; allowed: {list(PAIR_STRATEGIES)}")
        _check(self.max_per_problem >= 1, "method.pairs.max_per_problem", "must be >= 1")
        _check(0 < self.graded_min_margin <= 1, "method.pairs.graded_min_margin", "must be in (0, 1]")
        bad = [o for o in self.reject_preference if o not in OUTCOMES]
        _check(not bad, "method.pairs.reject_preference", f"has unknown {bad}; allowed: {list(OUTCOMES)}")


@dataclass
class MethodConfig(_Schema):
    conf_key: ClassVar[str] = "method"

    name: str = MISSING
    train: bool = MISSING
    beta: float = MISSING
    learning_rate: float = MISSING
    per_device_train_batch_size: int = MISSING
    gradient_accumulation_steps: int = MISSING
    max_length: int = MISSING
    trainer: dict[str, Any] = MISSING
    lora: LoraConfig = MISSING
    pairs: PairsConfig = MISSING
    #: method-specific blocks (``method.<name>``): absent for the methods that have none
    rlaif: dict[str, Any] = field(default_factory=dict)
    interactive: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._fill_from_yaml()
        _check(self.beta > 0, "method.beta", "must be > 0")
        _check(self.per_device_train_batch_size >= 1, "method.per_device_train_batch_size", "must be >= 1")


@dataclass
class IterationConfig(_Schema):
    conf_key: ClassVar[str] = "iteration"

    num_iterations: int = MISSING
    steps_per_iteration: int = MISSING

    def __post_init__(self) -> None:
        self._fill_from_yaml()
        _check(self.num_iterations >= 0, "iteration.num_iterations",
               f"must be an integer >= 0 (0 evaluates the initial model only); got {self.num_iterations}")
        _check(self.steps_per_iteration >= 1, "iteration.steps_per_iteration",
               f"must be an integer >= 1; got {self.steps_per_iteration}")


@dataclass
class SamplerConfig(_Schema):
    conf_key: ClassVar[str] = "sampler"

    backend: str = MISSING
    n: int = MISSING
    train_n: int | None = MISSING
    temperature: float = MISSING
    train_temperature: float | None = MISSING
    top_p: float = MISSING
    max_new_tokens: int = MISSING
    batch_size: int = MISSING
    quantize: str = MISSING
    draft: str = MISSING
    turns: int = MISSING
    feedback: str = MISSING
    greedy_eval: bool = MISSING
    revise: str = MISSING
    gpu_memory_utilization: float = MISSING

    def __post_init__(self) -> None:
        self._fill_from_yaml()
        _check(self.quantize in ("auto", "int8", "none"), "sampler.quantize",
               f"must be one of ['auto', 'int8', 'none']; got {self.quantize!r}")
        _check(self.draft in ("prompt_lookup", "none"), "sampler.draft",
               f"must be one of ['prompt_lookup', 'none']; got {self.draft!r}")
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
        _check(self.revise in ("main", "greedy"), "sampler.revise",
               f"must be one of ['main', 'greedy']; got {self.revise!r}")
        _check(self.revise != "greedy" or self.greedy_eval, "sampler.revise",
               "is greedy, which revises the greedy_eval samples, but sampler.greedy_eval is false: set "
               "sampler.greedy_eval=true or sampler.revise=main")


@dataclass
class RunConfig(_Schema):
    conf_key: ClassVar[str] = ""

    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    iteration: IterationConfig = MISSING
    sampler: SamplerConfig = MISSING
    sandbox: dict[str, Any] = MISSING
    logger: dict[str, Any] = MISSING
    #: absent (null) unless a config of the ``accelerate`` group is chosen
    accelerate: dict[str, Any] | None = None
    seed: int = MISSING
    ks: list[int] = MISSING
    progress: bool = MISSING
    resume: str | None = MISSING
    share_dir: str | None = MISSING

    def __post_init__(self) -> None:
        self._fill_from_yaml()
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
    """``method.name`` names a registered method (``ieta/methods/``); ``method.trainer`` holds only arguments of the
    TRL config class it trains with; then the method's own checks run."""
    from ieta.methods import available, get_method

    _check(run.method.name in available(), "method", f"must be one of {available()}; got {run.method.name!r}")
    method = get_method(run.method.name)
    if method.trainer_config is not None and run.method.trainer:
        _check_trainer_keys(dict(run.method.trainer), method.trainer_config)
    split = run.dataset.split.value
    _check(not (method.trains and method.data_file is not None and run.method.pairs.reference_fallback
                and split != "eval"), "method.pairs.reference_fallback",
           f"is true with dataset.split={split}: {run.method.name} would train on the canonical solutions of the "
           "problems it is evaluated on. Use dataset.split=eval (held-out evaluation) or "
           "method.pairs.reference_fallback=false")
    method.check_config(run)


def _check_trainer_keys(trainer: dict[str, Any], config_class: str) -> None:
    """Every key of ``method.trainer`` is a field of ``config_class`` (``trl.DPOConfig``, ...), so a typo fails here
    and not after the model has loaded."""
    module, _, name = config_class.rpartition(".")
    known = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
    for key in sorted(set(trainer) - known):
        close = difflib.get_close_matches(key, known, n=1)
        _check(False, f"method.trainer.{key}", f"is not an argument of {config_class}"
               + (f"; did you mean {close[0]!r}?" if close else ""))


def _check_logger(logger: dict[str, Any]) -> None:
    name = logger.get("name")
    _check(name in ("none", "wandb"), "logger", f"must be one of ['none', 'wandb']; got {name!r}")
    if name == "wandb":
        mode = logger.get("mode")
        _check(mode in WANDB_MODES, "logger.mode", f"must be one of {list(WANDB_MODES)}; got {mode!r}")


#: ``logger.mode`` of the wandb logger (auto: online with W&B credentials, else offline)
WANDB_MODES = ("auto", "offline", "online")


def validate(cfg: DictConfig) -> RunConfig:
    """Check types, unknown keys and values against the schema; raise ``ConfigError`` naming the key."""
    from ieta.execute import SandboxConfig

    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    try:
        run = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), plain))
        SandboxConfig(**run.sandbox)
        _check_logger(run.logger)
        _check_method(run)
    except ConfigError:
        raise
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid config: sandbox: {e}") from None
    return run
