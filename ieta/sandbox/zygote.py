"""Fork server that runs in its own process (``python -I``), one per parallel worker.

At start it enters private mount/network/IPC namespaces once (no network, private tmpfs ``/tmp``),
then for each request forks a supervisor which ``unshare``s a fresh PID namespace and forks the
sandboxed child.  The child drops to an unprivileged per-worker uid, applies rlimits and runs
``harness.run``.  The supervisor drains output (head and tail kept), enforces the wall clock by
killing the namespace's init (the kernel then kills every process in it, detached ones included),
and writes one response.  Messages both ways are length-prefixed ``marshal`` data.
"""

import ctypes
import marshal
import os
import resource
import select
import shutil
import signal
import sys
import time

import harness

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 0x4000, 0x40000
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)  # elsewhere: unshare + fork
REPORT_FD = 3
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def read_msg(fd):
    head = _read_exact(fd, 4)
    return None if head is None else marshal.loads(_read_exact(fd, int.from_bytes(head, "little")))


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def write_msg(fd, obj):
    body = marshal.dumps(obj)
    data = memoryview(len(body).to_bytes(4, "little") + body)
    while data:
        data = data[os.write(fd, data):]


def _err(what):
    return f"{what}: {os.strerror(ctypes.get_errno())}"


def setup_namespaces(cfg):
    """Enter private namespaces once for this zygote; returns what is active and what fell back."""
    info = {"namespaces": [], "fallbacks": [], "uid_drop": False, "root": os.geteuid() == 0}
    if not cfg["namespaces"]:
        info["fallbacks"].append("namespaces disabled by config")
        return info
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if os.geteuid() != 0:
        uid, gid = os.geteuid(), os.getegid()
        if _libc.unshare(CLONE_NEWUSER | flags) != 0:
            info["fallbacks"].append(_err("unshare(user,mnt,net,ipc) failed; running without namespaces"))
            return info
        for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"0 {uid} 1"),
                           ("/proc/self/gid_map", f"0 {gid} 1")):
            with open(path, "w") as f:
                f.write(text)
        info["namespaces"].append("user")
    elif _libc.unshare(flags) != 0:
        info["fallbacks"].append(_err("unshare(mnt,net,ipc) failed; no network isolation"))
        return info
    info["namespaces"] += ["mnt", "net", "ipc", "uts"]
    if _libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0:
        size = f"size={max(64, 4 * cfg['max_file_mb'])}m,nr_inodes=4096,mode=0711".encode()
        for d in PRIVATE_DIRS:
            if os.path.isdir(d) and _libc.mount(b"tmpfs", d.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, size) != 0:
                info["fallbacks"].append(_err(f"private tmpfs on {d} failed"))
        info["private_tmp"] = True
        _expose_python(info)
    else:
        info["fallbacks"].append(_err("making mounts private failed; /tmp is shared"))
    info["uid_drop"] = cfg["drop_uid"] and os.geteuid() == 0 and "user" not in info["namespaces"]
    if not info["uid_drop"]:
        info["fallbacks"].append("no uid drop (not root or disabled): RLIMIT_NPROC counts this uid's processes")
    return info


def _expose_python(info):
    """Let the sample's uid import the stdlib even if Python lives under a private dir such as ``/root``.

    The first non-searchable ancestor of ``sys.prefix`` is covered by an empty tmpfs (hiding the rest of
    it, e.g. ``/root``'s dotfiles) and the prefix alone is bind-mounted back, read-only.
    """
    prefix = os.path.realpath(sys.base_prefix)
    parts = prefix.split("/")
    hidden = next(("/".join(parts[:i]) for i in range(2, len(parts) + 1)
                   if not os.stat("/".join(parts[:i])).st_mode & 0o001), None)
    if hidden is None:
        return
    stash = "/tmp/.ieta-python"
    os.mkdir(stash, 0o755)
    ok = (_libc.mount(prefix.encode(), stash.encode(), None, MS_BIND | MS_REC, None) == 0
          and _libc.mount(b"tmpfs", hidden.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755") == 0)
    if ok:
        os.makedirs(prefix, 0o755, exist_ok=True)
        ok = _libc.mount(stash.encode(), prefix.encode(), None, MS_BIND | MS_REC, None) == 0
        _libc.mount(None, prefix.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, None)
    _libc.umount2(stash.encode(), MNT_DETACH)
    os.rmdir(stash)
    if ok:
        info["hidden"] = hidden
    else:
        info["fallbacks"].append(_err(f"could not expose {prefix} under {hidden}; imports not preloaded may fail"))


def _limits(cfg):
    mb = 1024 * 1024
    return [(resource.RLIMIT_AS, cfg["memory_mb"] * mb), (resource.RLIMIT_CPU, cfg["cpu_seconds"]),
            (resource.RLIMIT_FSIZE, cfg["max_file_mb"] * mb), (resource.RLIMIT_NOFILE, cfg["max_open_files"]),
            (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, cfg["max_processes"])]


def child(req, cfg, info, tmp, uid, out_w, rep_w):
    """Become the sandboxed process (never returns)."""
    try:
        os.setsid()
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.dup2(rep_w, REPORT_FD, inheritable=cfg["backend"] == "bwrap")
        os.closerange(REPORT_FD + 1, 65536)
        os.chdir(tmp)
        for res, value in _limits(cfg):
            if res == resource.RLIMIT_NPROC and not info["uid_drop"]:
                continue
            hard = value + 1 if res == resource.RLIMIT_CPU else value
            resource.setrlimit(res, (value, hard))
        if info["uid_drop"]:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.environ.clear()
        os.environ.update(ENV, HOME=tmp, TMPDIR=tmp)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if cfg["backend"] == "bwrap":
            _exec_bwrap(req, cfg, tmp, uid)
        harness.run(req, REPORT_FD)
    except BaseException as e:  # a setup failure must never look like a verdict
        os.write(2, f"sandbox setup failed: {e!r}\n".encode())
    os._exit(70)


BWRAP_BOOT = ("import sys, os, marshal; sys.path.insert(0, {dir!r}); import harness; sys.path.pop(0); "
              "f = open('.ieta-req', 'rb'); req = marshal.loads(f.read()); f.close(); os.unlink('.ieta-req'); "
              "harness.run(req, 3)")


def _exec_bwrap(req, cfg, tmp, uid):
    """Re-run the harness inside bubblewrap (fresh user/pid/net/ipc/uts namespaces, read-only root)."""
    with open(os.path.join(tmp, ".ieta-req"), "wb") as f:  # read and deleted before candidate code runs
        f.write(marshal.dumps(req))
    args = [cfg["bwrap"], "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/",
            "--tmpfs", "/tmp", "--bind", tmp, tmp, "--proc", "/proc", "--dev", "/dev", "--chdir", tmp,
            "--uid", str(uid), "--gid", str(uid), "--", cfg["python"], "-I", "-c",
            BWRAP_BOOT.format(dir=cfg["sandbox_dir"])]
    os.execv(args[0], args)


def _kill_uid(uid):
    """Without a PID namespace: kill every process of the sample's uid (from a process with that uid)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setresuid(uid, uid, uid)
            for _ in range(50):
                os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


class _Capped:
    """Keeps the first and last ``cap // 2`` bytes of a stream and counts the rest."""

    def __init__(self, cap):
        self.half, self.head, self.tail, self.total = max(1, cap // 2), bytearray(), bytearray(), 0

    def add(self, data):
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail = (self.tail + data)[-self.half:]


def _spawn(pidns):
    """Fork; with ``pidns`` a raw ``clone(CLONE_NEWPID)``, whose child is init of a fresh PID namespace.

    The raw syscall skips Python's at-fork hooks, which is safe here: the zygote is single-threaded.
    It is also ~3x cheaper than ``os.fork`` and needs no intermediate process.
    """
    if pidns and SYS_CLONE is not None:
        pid = _libc.syscall(SYS_CLONE, CLONE_NEWPID | signal.SIGCHLD, 0, 0, 0, 0)
        if pid >= 0:
            return pid, True
    return os.fork(), False


def supervise(req, cfg, info, seq):
    """Run one sample in a fresh PID namespace; returns the response."""
    uid = cfg["base_uid"] + req["slot"] if info["uid_drop"] else os.geteuid()
    tmp = os.path.join("/tmp" if info.get("private_tmp") else os.environ.get("TMPDIR", "/tmp"),
                       f"ieta-{os.getpid()}-{seq}")
    os.mkdir(tmp, 0o700)
    os.chown(tmp, uid, uid)
    out_r, out_w = os.pipe()
    rep_r, rep_w = os.pipe()
    timeout = req["timeout"]
    t0 = time.monotonic()
    pid, pidns = _spawn(bool(info["namespaces"]))
    if pid == 0:
        os.close(out_r)
        os.close(rep_r)
        child(req, cfg, info, tmp, uid, out_w, rep_w)
    os.close(out_w)
    os.close(rep_w)
    out, report, rep_bytes = _Capped(cfg["max_output_bytes"]), bytearray(), 0
    poller = select.poll()
    for fd in (out_r, rep_r):
        poller.register(fd, select.POLLIN)
    open_fds, timed_out, status, ru = {out_r, rep_r}, False, None, None
    deadline = t0 + timeout
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        for fd, _ in poller.poll(max(1, int(min(left, 0.05 if not pidns else left) * 1000))):
            data = os.read(fd, 65536)
            if not data:
                open_fds.discard(fd)
                poller.unregister(fd)
            elif fd == out_r:
                out.add(data)
            elif rep_bytes < 4 * 1024 * 1024:
                report += data
                rep_bytes += len(data)
        if not pidns:  # detached processes may hold the pipes open: stop once the child is gone
            done, st, r = os.wait4(pid, os.WNOHANG)
            if done:
                status, ru = st, r
                break
    duration = time.monotonic() - t0
    if status is None:
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _, status, ru = os.wait4(pid, 0)
    if not pidns and info["uid_drop"]:
        _kill_uid(uid)
    shutil.rmtree(tmp, ignore_errors=True)
    for fd in (out_r, rep_r):
        os.close(fd)
    return {"status": status, "timed_out": timed_out, "duration": duration, "maxrss_kb": ru.ru_maxrss,
                    "cpu": ru.ru_utime + ru.ru_stime, "out_head": bytes(out.head), "out_tail": bytes(out.tail),
                    "out_total": out.total, "report": bytes(report), "pidns": pidns}


def main():
    rfd, wfd = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    cfg = read_msg(rfd)
    sys.path[:] = [p for p in sys.path if p != cfg["sandbox_dir"]]
    for name in cfg["preload"]:
        try:
            __import__(name)
        except Exception:
            pass
    info = setup_namespaces(cfg)
    write_msg(wfd, info)
    seq = 0
    while (req := read_msg(rfd)) is not None:
        seq += 1
        try:
            resp = supervise(req, cfg, info, seq)
        except Exception as e:
            resp = {"error": f"supervisor failed: {e!r}"}
        write_msg(wfd, resp)


if __name__ == "__main__":
    main()
