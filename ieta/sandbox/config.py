"""Sandbox settings: one dataclass whose fields are exactly the keys of ``conf/sandbox/*.yaml``."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

BACKENDS = ("process", "bwrap")


@dataclass
class SandboxConfig:
    """Limits and isolation for running untrusted samples; validated on construction."""

    backend: str = "process"
    timeout: float = 3.0
    memory_mb: int = 1024
    cpu_seconds: int = 10
    max_processes: int = 32
    max_file_mb: int = 16
    max_open_files: int = 64
    max_output_bytes: int = 8192
    workers: int = 0
    trace: bool = True
    trace_max_events: int = 200
    trace_repr_chars: int = 80
    namespaces: bool = True
    drop_uid: bool = True
    base_uid: int = 61000
    bwrap_path: str = "bwrap"
    packages: list[str] = field(default_factory=lambda: ["numpy", "numpy.libs"])
    allow_weaker: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"sandbox.backend must be one of {BACKENDS}, got {self.backend!r}")
        if not self.timeout > 0:
            raise ValueError(f"sandbox.timeout must be > 0, got {self.timeout}")
        for name in ("memory_mb", "cpu_seconds", "max_processes", "max_file_mb", "max_open_files",
                     "max_output_bytes", "trace_max_events", "trace_repr_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"sandbox.{name} must be a positive integer, got {value!r}")
        if self.memory_mb < 64:
            raise ValueError(f"sandbox.memory_mb must be >= 64 (the interpreter needs it), got {self.memory_mb}")
        if self.max_open_files < 16:
            raise ValueError(f"sandbox.max_open_files must be >= 16, got {self.max_open_files}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"sandbox.workers must be >= 0 (0 = one per CPU), got {self.workers!r}")
        self.packages = list(self.packages)
        if not all(isinstance(p, str) and p and "/" not in p and not p.startswith(".") for p in self.packages):
            raise ValueError(f"sandbox.packages must be names of site-packages entries, got {self.packages!r}")
        if not isinstance(self.allow_weaker, bool):
            raise ValueError(f"sandbox.allow_weaker must be true or false, got {self.allow_weaker!r}")
        if not 1000 <= self.base_uid <= 2**31 - 1000:
            raise ValueError(f"sandbox.base_uid must be an unprivileged uid in [1000, 2**31-1000], got {self.base_uid}")

    @property
    def n_workers(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)

    def to_dict(self) -> dict:
        return asdict(self)
