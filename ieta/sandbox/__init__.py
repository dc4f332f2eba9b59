"""Execution sandbox: run untrusted samples in isolated processes and report what happened.

``runner`` (parent: zygote pool), ``zygote`` and ``harness`` (child side, no ``ieta`` imports),
``instrument`` (test rewriting), ``report`` (verdict and trace record), ``taxonomy`` (error buckets).
"""

from ieta.sandbox.config import SandboxConfig
from ieta.sandbox.runner import Pool, SandboxError, resolve_bwrap
from ieta.sandbox.taxonomy import BUCKETS, OUTCOMES, bucket

__all__ = ["BUCKETS", "OUTCOMES", "Pool", "SandboxConfig", "SandboxError", "bucket", "resolve_bwrap", "sandbox_info"]


def sandbox_info(config: SandboxConfig | None = None) -> dict:
    """The isolation actually active for ``config`` (starts one zygote to find out)."""
    from ieta.sandbox.runner import Zygote

    config = config or SandboxConfig()
    z = Zygote(config, slot=0)
    try:
        info = dict(z.info)
    finally:
        z.close()
    info["backend"] = config.backend
    info["rlimits"] = {"memory_mb": config.memory_mb, "cpu_seconds": config.cpu_seconds,
                       "max_file_mb": config.max_file_mb, "max_open_files": config.max_open_files,
                       "max_processes": config.max_processes if info.get("uid_drop") else None, "core": 0}
    info["pid_namespace_per_sample"] = bool(info.get("namespaces"))
    info["summary"] = isolation_summary(info)
    return info


def isolation_summary(info: dict) -> str:
    """A short string for each record, e.g. ``"ns:pid,mnt,net,ipc,uts uid:drop rlimits"``."""
    ns = ",".join((["pid"] if info.get("namespaces") else []) + [n for n in info.get("namespaces", [])])
    parts = [f"ns:{ns or 'none'}", "uid:drop" if info.get("uid_drop") else "uid:same", "rlimits"]
    if info.get("backend", "process") == "bwrap":
        parts.insert(0, "bwrap")
    return " ".join(parts)
