"""Adversarial samples: none may pass, each gets the right outcome, and nothing escapes the sandbox.

All cases run in one batch (two workers, short timeouts); the checks below read that batch.
"""

from __future__ import annotations

import os
import socket

import pytest

from ieta.data import Problem
from ieta.execute import SandboxConfig, execute_samples

SECRET = "ieta-sentinel-secret-5f2c9e"
os.environ["IETA_SENTINEL_SECRET"] = SECRET  # set before any sandbox starts
# the second assert can never hold, so no sample may pass
IMPOSSIBLE = Problem("adv/add", "def add(a, b):\n", "def check(candidate):\n    assert candidate(1, 2) == 3\n"
                     "    assert candidate(2, 2) == 5\n", "add")
SOLVABLE = Problem("adv/ok", "def add(a, b):\n", "def check(candidate):\n    assert candidate(1, 2) == 3\n", "add")
PORT = 18765
ME = os.getpid()

CASES = {
    # infinite loops
    "busy_loop": ("    while True:\n        pass\n", "timeout"),
    "c_level_loop": ("    return sum(range(10**13))\n", "timeout"),
    "ignore_sigterm_sigalrm": ("    import signal\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                               "    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while True:\n        pass\n",
                               "timeout"),
    "patched_time_signal": ("    import time, signal\n    time.time = time.monotonic = lambda: 0.0\n"
                            "    signal.alarm = signal.setitimer = lambda *a: 0\n    while True:\n        pass\n",
                            "timeout"),
    "sleep_forever": ("    import time\n    time.sleep(1000)\n", "timeout"),
    # memory, processes
    "memory_bomb_alloc": ("    x = bytearray(50 * 2**30)\n", "memory_limit"),
    "memory_bomb_grow": ("    l = []\n    while True:\n        l.append(' ' * 10**8)\n", "memory_limit"),
    "fork_bomb": ("    import os\n    while True:\n        try:\n            os.fork()\n        except OSError:\n"
                  "            pass\n", "timeout"),
    "posix_spawn_storm": ("    import os\n    while True:\n        try:\n"
                          "            os.posix_spawn('/bin/sleep', ['sleep', '300'], {})\n        except OSError:\n"
                          "            pass\n", "timeout"),
    "setsid_grandchild": ("    import os, time\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
                          "            time.sleep(300)\n        os._exit(0)\n    return a + b\n", "failed"),
    "non_daemon_thread": ("    import threading, time\n    threading.Thread(target=time.sleep, args=(300,)).start()\n"
                          "    return a + b\n", "failed"),
    # output
    "print_flood": ("    while True:\n        print('x' * 1000)\n", "timeout"),
    "os_write_flood": ("    import os\n    for _ in range(5000):\n        os.write(1, b'y' * 10000)\n    return a + b\n",
                       "failed"),
    "close_stdout_stderr": ("    import os\n    try:\n        os.close(1)\n        os.close(2)\n    except OSError:\n"
                            "        pass\n    return a + b\n", "failed"),
    # files
    "huge_file": ("    with open('big.bin', 'wb') as f:\n        f.write(b'0' * (64 * 2**20))\n    return a + b\n",
                  "runtime_error"),
    "write_outside": ("    open('/work/ieta_escape.txt', 'w').write('x')\n    return a + b\n", "runtime_error"),
    "write_tmp": ("    open('/tmp/ieta_escape.txt', 'w').write('x')\n    return a + b\n", "runtime_error"),
    "delete_outside": ("    import os\n    os.remove({sentinel!r})\n    return a + b\n", "runtime_error"),
    # secrets
    "env_secret": ("    import os\n    print(dict(os.environ))\n    return os.environ['IETA_SENTINEL_SECRET']\n",
                   "runtime_error"),
    "proc1_environ": ("    print(open('/proc/1/environ').read())\n    return a + b\n", "runtime_error"),
    "parent_environ": (f"    print(open('/proc/{ME}/environ').read())\n    return a + b\n", "runtime_error"),
    # network
    "net_connect": ("    import socket\n    socket.create_connection(('1.1.1.1', 80), timeout=0.5)\n    return a + b\n",
                    "runtime_error"),
    "net_bind": (f"    import socket, time\n    s = socket.socket()\n    s.bind(('0.0.0.0', {PORT}))\n    s.listen()\n"
                 "    time.sleep(300)\n", "timeout"),
    # exits before failing asserts
    "sys_exit_module": ("    return a + b\nimport sys\nsys.exit(0)\n", "runtime_error"),
    "sys_exit_in_call": ("    import sys\n    sys.exit(0)\n", "runtime_error"),
    "os_exit": ("    import os\n    os._exit(0)\n", "crashed"),
    "atexit_exit": ("    import atexit, os\n    atexit.register(os._exit, 0)\n    return a + b\n", "failed"),
    "keyboard_interrupt": ("    raise KeyboardInterrupt\n", "runtime_error"),
    "base_exception_subclass": ("    class Stop(BaseException):\n        pass\n    raise Stop()\n", "runtime_error"),
    # forgery
    "always_equal": ("    class A:\n        def __eq__(self, o):\n            return True\n        def __ne__(self, o):\n"
                     "            return False\n        __hash__ = object.__hash__\n    return A()\n", "failed"),
    "always_equal_int": ("    class I(int):\n        def __eq__(self, o):\n            return True\n"
                         "    return I(a + b)\n", "failed"),
    "frame_walk": ("    import sys\n    f = sys._getframe(1)\n    f.f_locals.clear()\n    return a + b\n", "runtime_error"),
    "frame_walk_traceback": ("    try:\n        raise ValueError\n    except ValueError as e:\n"
                             "        e.__traceback__.tb_frame.f_back.f_globals.clear()\n    return a + b\n",
                             "runtime_error"),
    "frame_walk_ctypes": ("    import ctypes\n    ctypes.pythonapi.PyEval_GetFrame\n    return a + b\n", "runtime_error"),
    "gc_referrers": ("    import gc\n    gc.get_referrers(add)\n    return a + b\n", "runtime_error"),
    "settrace": ("    import sys\n    sys.settrace(lambda *a: None)\n    return a + b\n", "runtime_error"),
    "redefine_check": ("    return a + b\ndef check(candidate):\n    pass\n", "failed"),
    "patch_sys_modules": ("    return a + b\nimport sys, builtins\nfor _m in list(sys.modules.values()):\n"
                          "    for _k in ('run', 'compare', 'plain', 'truth', '_finish', 'isinstance'):\n"
                          "        try:\n            setattr(_m, _k, lambda *a, **k: True)\n"
                          "        except Exception:\n            pass\nbuiltins.bool = lambda *a: True\n", "failed"),
    "forge_report_fds": ("    import os\n    for fd in range(3, 64):\n        try:\n"
                         "            os.write(fd, bytes(16) + (20).to_bytes(4, 'little') + b'done' * 5)\n"
                         "        except OSError:\n            pass\n    os._exit(0)\n", "crashed"),
    # killing the executor
    "kill_parent": ("    import os\n    os.kill(os.getppid(), 9)\n    return a + b\n", "failed"),
    # init of its PID namespace: nothing else in the group to signal (ESRCH), itself immune to SIGKILL
    "killpg": ("    import os\n    os.killpg(os.getpgid(0), 9)\n    return a + b\n", "runtime_error"),
    "kill_all": ("    import os\n    os.kill(-1, 9)\n    return a + b\n", "runtime_error"),
    "kill_pytest_pid": (f"    import os\n    os.kill({ME}, 9)\n    return a + b\n", "runtime_error"),
    # crashes and misc
    "deep_recursion": ("    def f(n):\n        return f(n + 1)\n    return f(0)\n", "runtime_error"),
    "ctypes_segfault": ("    import ctypes\n    ctypes.string_at(0)\n", "crashed"),
    "input_call": ("    return int(input())\n", "runtime_error"),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    sentinel = tmp_path_factory.mktemp("adv") / "sentinel.txt"
    sentinel.write_text("keep me")
    samples = [{"task_id": IMPOSSIBLE.task_id, "completion": body.replace("{sentinel!r}", repr(str(sentinel))),
                "case": name} for name, (body, _) in CASES.items()]
    ok = [{"task_id": SOLVABLE.task_id, "completion": "    return a + b\n", "case": f"ok{i}"} for i in range(4)]
    samples = ok[:2] + samples + ok[2:]  # the executor keeps working around the attacks
    config = SandboxConfig(timeout=1.5, cpu_seconds=5, memory_mb=256, max_file_mb=16, workers=2, max_processes=16,
                           trace_max_events=50)
    records = execute_samples([IMPOSSIBLE, SOLVABLE], samples, config, progress=False)
    return {r["case"]: r for r in records}, sentinel, config


def test_enough_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_false_pass_and_right_outcome(batch, name):
    rec = batch[0][name]
    assert rec["passed"] is False
    assert rec["outcome"] == CASES[name][1], (rec["outcome"], rec["exception"], rec["message"])
    assert rec["error_type"] in ("IndexError", "TypeError", "ValueError", "ZeroDivisionError", "NameError",
                                 "AttributeError", "KeyError", "RecursionError", "SyntaxError", "AssertionError",
                                 "Timeout", "Other")


def test_executor_keeps_working(batch):
    oks = [r for c, r in batch[0].items() if c.startswith("ok")]
    assert len(oks) == 4 and all(r["passed"] and r["outcome"] == "passed" for r in oks)


def test_secret_never_in_output(batch):
    assert SECRET not in repr(list(batch[0].values()))


def test_no_file_escapes(batch):
    assert batch[1].read_text() == "keep me"
    assert not os.path.exists("/work/ieta_escape.txt") and not os.path.exists("/tmp/ieta_escape.txt")


def test_no_process_remains(batch):
    config = batch[2]
    uids = set(range(config.base_uid, config.base_uid + config.n_workers))
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if uid in uids:
            left.append(pid)
    assert left == []


def test_port_not_reachable_from_host(batch):
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", PORT), timeout=0.5).close()


def test_output_is_capped(batch):
    for name in ("print_flood", "os_write_flood"):
        rec = batch[0][name]
        assert len(rec["stdout_tail"]) <= batch[2].max_output_bytes + 64
        assert "bytes dropped" in rec["stdout_tail"]


def test_segfault_and_recursion_fields(batch):
    assert batch[0]["deep_recursion"]["error_type"] == "RecursionError"
    assert batch[0]["ctypes_segfault"]["exception"] == "SIGSEGV"
    assert batch[0]["memory_bomb_alloc"]["exception"] == "MemoryError"
