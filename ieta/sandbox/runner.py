"""Parent side of the sandbox: one zygote process per worker, and the request/response loop.

Untrusted code never runs in this process.  Each worker thread owns a zygote (see ``zygote.py``);
a zygote that stops answering is killed with its process group and restarted on the next request;
a failed restart answers ``{"error": ...}`` (a ``sandbox_error`` record) instead of breaking the pool.
"""

from __future__ import annotations

import marshal
import os
import queue
import shutil
import signal
import site
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ieta.sandbox import wire
from ieta.sandbox.config import SandboxConfig

SANDBOX_DIR = str(Path(__file__).resolve().parent)
PRELOAD = ("math", "re", "string", "itertools", "functools", "collections", "heapq", "bisect", "random",
           "hashlib", "typing", "fractions", "decimal", "statistics", "operator", "copy", "json", "datetime")
BOOT = "import sys; sys.path.insert(0, {dir!r}); import zygote; zygote.main()"
INFO_KEYS = ("namespaces", "lost", "root", "uid_drop", "minimal_root", "cgroup", "oom_score_adj")
#: LD_BIND_NOW: every symbol bound at load, so no fork writes (and copies) the libraries' lookup tables again
ZYGOTE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LD_BIND_NOW": "1"}
_GRACE_S = 10.0


def site_dirs() -> list[str]:
    """This interpreter's site-packages directories (the zygote, started without ``site``, puts them on its path)."""
    dirs = set(site.getsitepackages()) | {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    return sorted({os.path.realpath(d) for d in dirs if os.path.isdir(d)})


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the sample)."""


def resolve_bwrap(config: SandboxConfig) -> str:
    path = shutil.which(config.bwrap_path)
    if path is None:
        raise SandboxError(f"sandbox=bwrap needs bubblewrap, but {config.bwrap_path!r} was not found on PATH; "
                           "install it with `apt-get install bubblewrap` (Debian/Ubuntu) or use sandbox=process")
    return path


class Zygote:
    """A fork server for one worker slot; ``info`` says which isolation it managed to set up."""

    def __init__(self, config: SandboxConfig, slot: int, start: bool = True):
        self.config, self.slot = config, slot
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        if start:
            self.start()

    def start(self) -> None:
        self.launch()
        self.handshake()

    def launch(self) -> None:
        cfg = self.config.to_dict() | {"sandbox_dir": SANDBOX_DIR, "preload": PRELOAD, "slot": self.slot,
                                       "python": sys.executable, "site_dirs": site_dirs()}
        if self.config.backend == "bwrap":
            cfg["bwrap"] = resolve_bwrap(self.config)
        # -S: no site module, so no .pth file runs there (each would import its modules into every sample's process)
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", BOOT.format(dir=SANDBOX_DIR)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ZYGOTE_ENV,
                                     close_fds=True, start_new_session=True, cwd="/")
        wire.write(self.proc.stdin.fileno(), cfg)

    def handshake(self) -> None:
        """Read what isolation the launched zygote set up; refuse weaker isolation unless allowed."""
        try:
            body = wire.read_body(self.proc.stdout.fileno(), 1 << 20, time.monotonic() + 60)
            info = None if body is None else wire.loads(body)
        except (OSError, wire.BadData):
            info = None
        if not isinstance(info, dict) or not set(INFO_KEYS) <= set(info):
            self.close()
            raise SandboxError("sandbox zygote failed to start")
        if info["lost"] and not self.config.allow_weaker:
            self.close()
            raise SandboxError("the sandbox cannot give full isolation here: " + "; ".join(info["lost"])
                               + ". Fix that, or set sandbox.allow_weaker=true to run with weaker isolation "
                               "(recorded in run_info.json)")
        self.info = info

    def run(self, request: dict) -> dict:
        """Send one request; returns the supervisor's response, or ``{"error": ...}``."""
        request["slot"] = self.slot
        if self.proc is None:
            try:
                self.start()
            except SandboxError as e:
                return {"error": f"zygote restart failed: {e}"}
        try:
            body = marshal.dumps(request)  # may hold code objects: the zygote reads it with marshal
            view = memoryview(len(body).to_bytes(4, "little") + body)
            while view:
                view = view[os.write(self.proc.stdin.fileno(), view):]
            raw = wire.read_body(self.proc.stdout.fileno(), 1 << 28, time.monotonic() + request["timeout"] + _GRACE_S)
            resp = None if raw is None else wire.loads(raw)
        except (OSError, wire.BadData) as e:
            resp = {"error": f"zygote pipe failed: {e}"}
        if not isinstance(resp, dict) or "error" in resp:
            self.close()
            return resp if isinstance(resp, dict) else {"error": "zygote did not answer in time"}
        return resp

    def close(self) -> None:
        """Let the zygote collect its last samples and exit; kill it if it does not within 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if self.proc is not None:
            self.proc.stdout.close()
        self.proc = None


class Pool:
    """``workers`` zygotes serving requests from a thread pool; use as a context manager.

    The zygotes start booting at construction; :meth:`ready` (called by ``info`` and ``run_one`` too) waits for
    them, so the caller can prepare its requests meanwhile."""

    def __init__(self, config: SandboxConfig):
        self.config = config
        self.zygotes = [Zygote(config, slot, start=False) for slot in range(config.n_workers)]
        self.free: queue.Queue[Zygote] = queue.Queue()
        self._ready, self._failed, self._lock = False, None, threading.Lock()
        try:
            for z in self.zygotes:  # start all at once; ready() waits for each
                z.launch()
        except BaseException:
            self.close()
            raise

    def ready(self) -> None:
        """Wait until every zygote has said which isolation it set up (raises ``SandboxError`` as ``Zygote`` does)."""
        with self._lock:
            if self._ready:
                return
            if self._failed is not None:  # another thread's wait already failed: the same error
                raise self._failed
            try:
                for z in self.zygotes:
                    z.handshake()
            except BaseException as e:
                self._failed = e
                self.close()
                raise
            for z in self.zygotes:
                self.free.put(z)
            self._ready = True

    @property
    def info(self) -> dict:
        self.ready()
        return self.zygotes[0].info

    def run_one(self, request: dict) -> dict:
        self.ready()
        zygote = self.free.get()
        try:
            return zygote.run(request)
        finally:
            self.free.put(zygote)

    def map(self, requests: Iterable[dict], on_done: Callable[[], None] | None = None) -> Iterator[dict]:
        """Responses in request order."""
        def job(req: dict) -> dict:
            try:
                return self.run_one(req)
            finally:
                if on_done is not None:
                    on_done()

        with ThreadPoolExecutor(max_workers=len(self.zygotes), thread_name_prefix="ieta-sandbox") as ex:
            yield from ex.map(job, requests)

    def close(self) -> None:
        for z in self.zygotes:
            z.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
