"""Parent side of the sandbox: one zygote process per worker, and the request/response loop.

Untrusted code never runs in this process.  Each worker thread owns a zygote (see ``zygote.py``);
a zygote that stops answering is killed with its process group and restarted.
"""

from __future__ import annotations

import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ieta.sandbox.config import SandboxConfig

SANDBOX_DIR = str(Path(__file__).resolve().parent)
PRELOAD = ("math", "re", "string", "itertools", "functools", "collections", "heapq", "bisect", "random",
           "hashlib", "typing", "fractions", "decimal", "statistics", "operator", "copy", "json", "datetime")
BOOT = "import sys; sys.path.insert(0, {dir!r}); import zygote; zygote.main()"
ZYGOTE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_GRACE_S = 10.0


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the sample)."""


def _write_msg(fd: int, obj) -> None:
    import marshal

    body = marshal.dumps(obj)
    data = memoryview(len(body).to_bytes(4, "little") + body)
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, n: int, deadline: float) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_msg(fd: int, deadline: float):
    import marshal

    head = _read_exact(fd, 4, deadline)
    body = None if head is None else _read_exact(fd, int.from_bytes(head, "little"), deadline)
    return None if body is None else marshal.loads(body)


def resolve_bwrap(config: SandboxConfig) -> str:
    path = shutil.which(config.bwrap_path)
    if path is None:
        raise SandboxError(f"sandbox=bwrap needs bubblewrap, but {config.bwrap_path!r} was not found on PATH; "
                           "install it with `apt-get install bubblewrap` (Debian/Ubuntu) or use sandbox=process")
    return path


class Zygote:
    """A fork server for one worker slot; ``info`` says which isolation it managed to set up."""

    def __init__(self, config: SandboxConfig, slot: int):
        self.config, self.slot = config, slot
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self.start()

    def start(self) -> None:
        cfg = self.config.to_dict() | {"sandbox_dir": SANDBOX_DIR, "preload": PRELOAD}
        if self.config.backend == "bwrap":
            cfg["bwrap"] = resolve_bwrap(self.config)
        cfg["python"] = sys.executable
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", BOOT.format(dir=SANDBOX_DIR)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ZYGOTE_ENV,
                                     close_fds=True, start_new_session=True, cwd="/")
        _write_msg(self.proc.stdin.fileno(), cfg)
        self.info = _read_msg(self.proc.stdout.fileno(), time.monotonic() + 60)
        if self.info is None:
            self.close()
            raise SandboxError("sandbox zygote failed to start")

    def run(self, request: dict) -> dict:
        """Send one request; returns the supervisor's response, or ``{"error": ...}``."""
        request["slot"] = self.slot
        try:
            _write_msg(self.proc.stdin.fileno(), request)
            resp = _read_msg(self.proc.stdout.fileno(), time.monotonic() + request["timeout"] + _GRACE_S)
        except OSError as e:
            resp = {"error": f"zygote pipe failed: {e}"}
        if resp is None or "error" in resp:
            self.close()
            self.start()
            return resp or {"error": "zygote did not answer in time"}
        return resp

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc = None


class Pool:
    """``workers`` zygotes serving requests from a thread pool; use as a context manager."""

    def __init__(self, config: SandboxConfig):
        self.config = config
        self.zygotes = [Zygote(config, slot) for slot in range(config.n_workers)]
        self.free: queue.Queue[Zygote] = queue.Queue()
        for z in self.zygotes:
            self.free.put(z)

    @property
    def info(self) -> dict:
        return self.zygotes[0].info

    def run_one(self, request: dict) -> dict:
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
