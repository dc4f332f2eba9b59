"""The interface every alignment method implements: what it trains on in an iteration, and how it trains.

The pipeline samples and executes the training problems and builds the pairs for every method (``iter_<k>/``
files); a method then picks its rows from them (``training_rows``) and updates the policy (``train``). The same
``train`` runs in-process and in each ``accelerate launch`` process of ``ieta.train_stage``, which rebuilds its
input from the files alone: the rows file ``data_file`` of offline methods, the training problems of online ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ieta.data import Problem


@dataclass
class IterationData:
    """What the pipeline produced for training iteration ``k`` (each list is also a file under ``dir``)."""

    cfg: Any  # the run's RunConfig (ieta.config)
    k: int
    dir: Path
    problems: list[Problem]
    executions: list[dict]
    pairs: list[dict]
    references: list[dict]
    prompt_for: Callable[[Problem], str]


class Method:
    """One alignment method; a module ``ieta/methods/<name>.py`` exposes an instance as ``METHOD``."""

    #: the ``method.name`` it answers to (the module's name)
    name: ClassVar[str]
    #: whether it updates the policy (``baseline`` does not)
    trains: ClassVar[bool] = True
    #: the file under ``iter_<k>/`` that holds the rows it trains on; None: it trains online on the problems
    data_file: ClassVar[str | None] = None
    #: the TRL config class (``module.Class``) whose fields ``method.trainer`` may set; None: it has no trainer
    trainer_config: ClassVar[str | None] = None

    def check_config(self, cfg) -> None:
        """Method-specific checks, run before any model loads; raise ``ConfigError`` naming the key."""

    def training_rows(self, it: IterationData) -> list[dict]:
        """The rows to train on (written to ``data_file``); offline methods with no rows leave the policy as is."""
        return []

    def train(self, model, tokenizer, problems: list[Problem], rows: list[dict], cfg, *, steps: int,
              out_dir: Path, seed: int, progress: bool):
        """Train iteration ``out_dir``'s adapter; save it (last) and its log; return the updated policy."""
        raise NotImplementedError
