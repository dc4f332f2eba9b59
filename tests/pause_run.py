"""``python -m ieta.main``, stopped inside a function so a test can SIGKILL the run at a chosen point.

``python -m tests.pause_run FLAG MODULE:QUALNAME CALL [overrides...]``: the CALL-th call of the function runs to
its end, then writes FLAG and sleeps, so the kill lands after that work and before its stage commits it.
"""

import importlib
import runpy
import sys
import time
from pathlib import Path


def pause_after(target: str, call: int, flag: Path) -> None:
    module, qualname = target.split(":")
    owner = importlib.import_module(module)
    *parents, name = qualname.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original, calls = getattr(owner, name), 0

    def paused(*args, **kwargs):
        nonlocal calls
        result = original(*args, **kwargs)
        calls += 1
        if calls == call:
            flag.write_text(target)
            time.sleep(3600)
        return result

    setattr(owner, name, paused)


if __name__ == "__main__":
    flag, target, call, *overrides = sys.argv[1:]
    pause_after(target, int(call), Path(flag))
    sys.argv = [sys.argv[0], *overrides]
    runpy.run_module("ieta.main", run_name="__main__", alter_sys=True)
