"""Execution sandbox: run untrusted samples in isolated processes and report what happened.

``runner`` (parent: zygote pool), ``zygote`` (fork server and supervisor), ``isolate`` (namespaces,
minimal root, privileges), ``serve`` (the candidate's process), ``judge`` (the judge process),
``wire`` (messages, plain-data decoding), ``instrument`` (test rewriting), ``report`` (verdict
record), ``taxonomy`` (outcomes and error buckets); the child-side modules never import ``ieta``.
"""

from ieta.sandbox.config import SandboxConfig
from ieta.sandbox.runner import Pool, SandboxError, resolve_bwrap
from ieta.sandbox.taxonomy import BUCKETS, MODEL_OUTCOMES, OUTCOMES, bucket

__all__ = ["BUCKETS", "MODEL_OUTCOMES", "OUTCOMES", "Pool", "SandboxConfig", "SandboxError", "bucket",
           "isolation_summary", "resolve_bwrap", "sandbox_info"]


def sandbox_info(config: SandboxConfig | None = None) -> dict:
    """The isolation actually active for ``config`` (starts one zygote to find out).

    Raises ``SandboxError`` naming the missing feature and its fix, unless ``config.allow_weaker``.
    """
    from ieta.sandbox.runner import Zygote

    config = config or SandboxConfig()
    z = Zygote(config, slot=0)
    try:
        info = dict(z.info)
    finally:
        z.close()
    return describe(info, config)


def describe(info: dict, config: SandboxConfig) -> dict:
    """``info`` from a zygote, completed with the configured limits and the summary string."""
    info = dict(info, backend=config.backend)
    info["fallbacks"] = list(info.get("lost", []))  # the name run_info.json has always used
    info["rlimits"] = {"memory_mb": config.memory_mb, "cpu_seconds": config.cpu_seconds,
                       "max_file_mb": config.max_file_mb, "max_open_files": config.max_open_files,
                       "max_processes": config.max_processes, "core": 0}
    info["pid_namespace_per_sample"] = bool(info.get("minimal_root"))
    info["judge_process"] = True
    info["summary"] = isolation_summary(info)
    return info


def isolation_summary(info: dict) -> str:
    """A short string for each record, e.g. ``"ns:pid,mnt,ipc,net,uts root:minimal uid:drop judge:separate ..."``."""
    per_sample = ["pid", "mnt", "ipc"] if info.get("minimal_root") else []
    ns = ",".join(per_sample + [n for n in info.get("namespaces", []) if n not in per_sample])
    uid = "uid:drop" if info.get("uid_drop") else ("uid:userns" if "user" in info.get("namespaces", []) else "uid:same")
    parts = [f"ns:{ns or 'none'}", "root:minimal" if info.get("minimal_root") else "root:host", uid,
             "judge:separate", "cgroup:v2" if str(info.get("cgroup", "")).startswith("v2") else "cgroup:none",
             "rlimits"]
    if info.get("lost"):
        parts.append(f"weaker:{len(info['lost'])}")
    if info.get("backend", "process") == "bwrap":
        parts.insert(0, "bwrap")
    return " ".join(parts)
