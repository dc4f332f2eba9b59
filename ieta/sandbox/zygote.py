"""Fork server that runs in its own process (``python -I``), one per parallel worker.

At start it enters its namespaces and minimal root (``isolate.enter``) and checks, with a probe
sample, that a sample can be confined.  Each sample has two processes:

* the candidate's process, init of a fresh PID + mount + IPC namespace (``isolate.confine``), which
  loads the program and answers calls of the entry point (``serve.py``).  These are forked ``BURST``
  at a time ahead of their samples, by the spawner (``Spawner``: forked from this process before its
  first request, so a candidate's memory holds nothing of another sample), and wait, confined, for
  their programs; a sample's process never sees another's (each has its own namespaces, ``/proc``,
  ``/tmp`` and user namespace);
* the judge process, outside those namespaces, which runs the problem's helpers and rewritten test
  and calls the candidate over a pipe (``judge.py``); one serves the worker's samples in turn.

The supervisor (this process) drains the candidate's output (head and tail kept), enforces the wall
clock by killing both (the kernel kills every process of the candidate's namespace with its init),
and answers with the judge's report.  Messages are length-prefixed ``marshal`` data.
"""

import collections
import fcntl
import gc
import itertools
import marshal
import os
import select
import shutil
import signal
import socket
import sys
import time

import isolate
import judge
import serve
import wire

#: the whole environment of the zygote's children (set once in the zygote, inherited by each fork)
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "HOME": "/tmp",
       "TMPDIR": "/tmp"}
CANDIDATE_OOM, JUDGE_OOM = 1000, 900
CALL_FD, REPLY_FD = 3, 4               # in the candidate's process
SETUP_FAILED = 70
CONFINED = b"\x00ieta:confined\x00"  # first bytes of the candidate's output once it is confined


def _place(fds):
    """Move ``fds`` to 3, 4, ... in order and close everything else above 2."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 3 + len(fds)) for fd in fds]  # low: no fd table to grow
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i)
    os.closerange(3 + len(fds), 65536)


def _child_common(cfg):
    os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def candidate_child(cfg, info, uid, out_w, call_r, reply_w, cg_fd, tmp):
    """Become the candidate's process: confine, then wait for the program (never returns)."""
    try:
        os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        _place([call_r, reply_w] + ([cg_fd] if cg_fd is not None else []))
        isolate.confine(cfg, info, uid, max(16, 4 * cfg["max_file_mb"]), CANDIDATE_OOM,
                        5 if cg_fd is not None else None)
        if cg_fd is not None:
            os.close(5)
        os.chdir("/tmp" if info["minimal_root"] else tmp)
        _child_common(cfg)
    except BaseException as e:  # no CONFINED mark: the parent records a sandbox_error, never a verdict
        tb = e.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        os.write(2, f"sandbox setup failed in {tb.tb_frame.f_code.co_name}: {e!r}\n".encode())
        os._exit(SETUP_FAILED)
    os.write(1, CONFINED)
    try:
        head = wire.read_exact(CALL_FD, 4)
        req = marshal.loads(wire.read_exact(CALL_FD, int.from_bytes(head, "little")))  # from the zygote
        if cfg["backend"] == "bwrap":
            _exec_bwrap(req, cfg)
        serve.run(req, CALL_FD, REPLY_FD)
    except BaseException as e:
        os.write(2, f"{type(e).__name__}: {e}\n".encode())
    finally:
        os._exit(1)


class Judge:
    """The judge process of this zygote, serving samples until it ends (see ``judge.serve``)."""

    def __init__(self, cfg, info, uid):
        sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        jobs_r, self.jobs_w = os.pipe()
        self.pid = isolate.spawn(0)
        if self.pid == 0:
            try:
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                _place([child_sock.fileno(), jobs_r])
                # no CPU rlimit: it would add up over samples; the supervisor's wall clock bounds each one
                isolate.confine(dict(cfg, cpu_seconds=None), info, uid, 16, JUDGE_OOM, own_proc=False)
                _child_common(cfg)
                # a candidate that closes its call pipe must not kill the judge (its write fails, and the judge
                # records the candidate as gone: the sample's failure, not the sandbox's)
                signal.signal(signal.SIGPIPE, signal.SIG_IGN)
                judge.serve(3, 4, cfg["memory_mb"] * 512)
            except BaseException:
                pass
            os._exit(SETUP_FAILED)
        child_sock.close()
        os.close(jobs_r)
        self.sock = sock

    def alive(self):
        return self.pid is not None and os.waitpid(self.pid, os.WNOHANG)[0] == 0

    def submit(self, req, fds):
        """Hand it a sample: the fds first, which it waits for first, then the request (a test of any size: written
        before them, one that overflows the pipe would block this process while the judge waits for the fds)."""
        socket.send_fds(self.sock, [b"j"], fds)
        wire_body = marshal.dumps(req)
        view = memoryview(len(wire_body).to_bytes(4, "little") + wire_body)
        while view:
            view = view[os.write(self.jobs_w, view):]

    def close(self):
        if self.pid is not None:
            _kill(self.pid)
            os.waitpid(self.pid, 0)
            self.pid = None
        self.sock.close()
        os.close(self.jobs_w)


_JUDGE = [None]


def _judge(cfg, info, uid):
    j = _JUDGE[0]
    if j is None or not j.alive():
        if j is not None:
            j.pid = None
            j.close()
        j = _JUDGE[0] = Judge(cfg, info, uid)
    return j


BWRAP_BOOT = ("import marshal, sys, types; f = open('/tmp/.ieta-req', 'rb'); req, mods = marshal.loads(f.read()); "
              "f.close(); import os; os.unlink('/tmp/.ieta-req')\n"
              "for name, src in mods:\n"
              "    m = types.ModuleType(name); exec(compile(src, name + '.py', 'exec'), vars(m)); sys.modules[name] = m\n"
              "sys.modules['serve'].run(req, 3, 4)")


def _exec_bwrap(req, cfg):
    """Re-run the candidate's side inside bubblewrap (its own user/pid/net/ipc/uts namespaces)."""
    with open("/tmp/.ieta-req", "wb") as f:  # read and deleted before candidate code runs
        f.write(marshal.dumps((req, cfg["bwrap_modules"])))
    args = [cfg["bwrap"], "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/",
            "--bind", "/tmp", "/tmp", "--proc", "/proc", "--dev-bind", "/dev", "/dev", "--chdir", "/tmp",
            "--", cfg["python"], "-I", "-S", "-c", BWRAP_BOOT]
    os.execv(args[0], args)


class _Capped:
    """Keeps the first and last ``cap // 2`` bytes of a stream and counts the rest."""

    def __init__(self, cap, extra=0):
        self.half, self.head, self.tail, self.total = max(1, cap // 2), bytearray(), bytearray(), 0
        self.head_room = self.half + extra

    def add(self, data):
        self.total += len(data)
        room = self.head_room - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail = (self.tail + data)[-self.half:]


def _cgroup_dir(cg, name, cfg):
    """A fresh cgroup for one sample; returns an fd of its ``cgroup.procs`` (or None)."""
    if cg is None:
        return None
    try:
        os.mkdir(name, 0o755, dir_fd=cg)
        for key, value in (("memory.max", cfg["memory_mb"] << 20), ("memory.swap.max", 0),
                           ("pids.max", cfg["max_processes"])):
            fd = os.open(f"{name}/{key}", os.O_WRONLY, dir_fd=cg)
            try:
                os.write(fd, str(value).encode())
            except OSError:
                if key != "memory.swap.max":
                    raise
            finally:
                os.close(fd)
        return os.open(f"{name}/cgroup.procs", os.O_WRONLY, dir_fd=cg)
    except OSError:
        return None


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Candidate:
    """A candidate's process, spawned and confined ahead of its sample; it waits for the program on its call pipe."""

    def __init__(self, cfg, info, seq, cg):
        self.uid = cfg["base_uid"] + cfg["slot"] if info["uid_drop"] else os.geteuid()
        self.tmp = None
        if not info["minimal_root"]:  # weaker mode: a directory of the shared /tmp
            self.tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ieta-{os.getpid()}-{seq}")
            os.mkdir(self.tmp, 0o700)
            os.chown(self.tmp, self.uid, self.uid)
        self.cg_name = f"ieta-{os.getpid()}-{seq}"
        cg_fd = _cgroup_dir(cg, self.cg_name, cfg)
        if cg_fd is None:
            self.cg_name = None
        self.out_r, out_w = os.pipe()
        call_r, self.call_w = os.pipe()
        self.reply_r, reply_w = os.pipe()
        self.child_ends = (out_w, call_r, reply_w, cg_fd)
        # every namespace of kernel objects its own: in the worker's shared network namespace a sample's sockets (an
        # abstract name, a port) outlived it while their fds were in flight, a channel to the next samples
        self.flags = (isolate.CLONE_NEWPID | isolate.CLONE_NEWNS | isolate.CLONE_NEWIPC | isolate.CLONE_NEWNET
                      | isolate.CLONE_NEWUTS) if info["minimal_root"] else 0
        self.pid = None

    @classmethod
    def adopt(cls, meta, fds):
        """The zygote's side of a candidate the spawner forked: ``meta`` and its three ends (see ``Spawner``)."""
        cand = cls.__new__(cls)
        cand.pid, cand.uid, cand.tmp, cand.cg_name, cand.flags = meta
        cand.out_r, cand.call_w, cand.reply_r = fds
        cand.child_ends = ()
        return cand

    def fork(self, cfg, info, parent=0):
        """Start the process (it closes every fd but its own ends as it confines itself); ``parent``:
        ``isolate.CLONE_PARENT`` makes it a child of this process's parent (the spawner's zygote)."""
        self.pid = isolate.spawn(self.flags | parent)
        if self.pid == 0:
            candidate_child(cfg, info, self.uid, *self.child_ends, self.tmp)

    def close_child_ends(self):
        for fd in self.child_ends:
            if fd is not None:
                os.close(fd)
        self.child_ends = ()

    def start(self, req):
        """Hand it the program; False if it is already gone (its confinement failed)."""
        body = marshal.dumps(req)
        view = memoryview(len(body).to_bytes(4, "little") + body)
        try:
            while view:
                view = view[os.write(self.call_w, view):]
        except OSError:
            return False
        return True

    def discard(self, cg):
        _kill(self.pid)
        for fd in (self.out_r, self.call_w, self.reply_r):
            os.close(fd)
        _reap_later(self.pid, self.cg_name, cg)


#: candidates' processes forked back to back: after a fork every page this process writes is copied,
#: so a burst pays that once for ``BURST`` samples instead of once per sample
BURST = 8
_READY = collections.deque()  # confined candidates' processes waiting for their samples
_SEQ = itertools.count(1)     # names their tmp dirs and cgroups


def _fork_candidates(cfg, info, cg, count, parent=0):
    """``count`` candidates' processes: everything prepared first, then the forks back to back, so that between two
    forks this process writes (and so copies) as few pages as it can."""
    cands = [Candidate(cfg, info, next(_SEQ), cg) for _ in range(count)]
    for cand in cands:
        cand.fork(cfg, info, parent)
    for cand in cands:
        cand.close_child_ends()
    return cands


class Spawner:
    """The process that forks every candidate's process once the zygote serves samples.

    A forked process starts as a copy of its parent's memory, and the zygote's holds what passed through it: earlier
    samples' requests (their tests, with the expected values, their helpers and code) and responses (their output,
    their reports), in live objects and in freed memory alike. The spawner is forked from the zygote before the
    first request and only ever reads counts, so a candidate's memory holds no other sample's data. Its children
    are the zygote's (``CLONE_PARENT``): the zygote waits for them, reads their status and kills them as before;
    each burst comes over a ``SOCK_SEQPACKET`` socket as one message: their metadata and their ends (``SCM_RIGHTS``).
    """

    def __init__(self, cfg, info, cg):
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.asked = 0  # the size of the burst asked for and not yet received (one at a time)
        self.pid = isolate.spawn(0)
        if self.pid == 0:
            try:
                keep = sorted({child.fileno()} | ({cg} if cg is not None else set()))
                lo = 3
                for fd in keep:  # nothing of the zygote's pipes, nor of its judge's
                    os.closerange(lo, fd)
                    lo = fd + 1
                os.closerange(lo, 65536)
                isolate._libc.prctl(isolate.PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                _serve_spawns(child, cfg, info, cg)
            finally:
                os._exit(0)
        child.close()

    def ask(self, count):
        """Have ``count`` more forked (at most ``BURST``); they come while this zygote serves a sample."""
        self.sock.send(bytes([count]))
        self.asked = count

    def receive(self):
        """The burst asked for (confined processes, children of this zygote); waits for it if need be."""
        if not self.asked:
            self.ask(1)
        count, self.asked = self.asked, 0
        metas, fds, _, _ = socket.recv_fds(self.sock, 4096, 3 * count)
        if not metas or len(fds) != 3 * count:
            raise OSError("the spawner ended")
        return [Candidate.adopt(meta, fds[3 * i:3 * i + 3]) for i, meta in enumerate(marshal.loads(metas))]

    def close(self, cg):
        """Discard the candidates still coming, end the spawner (it reads the end of its socket) and collect it: no
        zombie is left to an init that may never reap it."""
        if self.asked:
            for cand in self.receive():
                cand.discard(cg)
        self.sock.close()
        os.waitpid(self.pid, 0)


def _serve_spawns(sock, cfg, info, cg):
    """The spawner's loop: for each count read, fork that many candidates and hand each to the zygote."""
    while True:
        count = sock.recv(1)
        if not count:
            return
        cands = _fork_candidates(cfg, info, cg, count[0], isolate.CLONE_PARENT)
        ends = [fd for cand in cands for fd in (cand.out_r, cand.call_w, cand.reply_r)]
        socket.send_fds(sock, [marshal.dumps([(c.pid, c.uid, c.tmp, c.cg_name, c.flags) for c in cands])], ends)
        for fd in ends:
            os.close(fd)


_SPAWNER = [None]


def _next_candidate(cfg, info, cg):
    """A confined candidate's process for the next sample: one waiting, else the spawner's next (without a spawner:
    the probe, before any request, or an architecture without a raw clone) one forked here."""
    if not _READY:
        _READY.extend(_SPAWNER[0].receive() if _SPAWNER[0] is not None else _fork_candidates(cfg, info, cg, 1))
    return _READY.popleft()


def prespawn(cfg, info, cg):
    """Have the next burst of candidates' processes forked once none is left, ready or coming: by the spawner (while
    this zygote serves), else here. Never more than one burst waits: as an ordinary user every worker's samples share
    one uid, whose process count the sample's process limit counts (asked for with 2 still waiting, a sample's fork
    got EAGAIN)."""
    if _READY:
        return
    if _SPAWNER[0] is None:
        _READY.extend(_fork_candidates(cfg, info, cg, BURST))
    elif not _SPAWNER[0].asked:
        _SPAWNER[0].ask(BURST)


def supervise(req, cfg, info, cg=None):
    """Run one sample; returns the response."""
    cand = _next_candidate(cfg, info, cg)
    uid, cpid, flags, out_r, cg_name = cand.uid, cand.pid, cand.flags, cand.out_r, cand.cg_name
    rep_r, rep_w = os.pipe()
    t0 = time.monotonic()
    cand.start({k: v for k, v in req.items() if k not in ("helpers", "test")})
    judge_req = {k: v for k, v in req.items() if k != "candidate"}
    try:
        _judge(cfg, info, uid).submit(judge_req, [cand.reply_r, cand.call_w, rep_w])
    except OSError:  # it ended meanwhile (after an unhealthy sample): one fresh try
        _JUDGE[0].close()
        _JUDGE[0] = None
        _judge(cfg, info, uid).submit(judge_req, [cand.reply_r, cand.call_w, rep_w])
    for fd in (cand.call_w, cand.reply_r, rep_w):
        os.close(fd)
    out, report = _Capped(cfg["max_output_bytes"], len(CONFINED)), bytearray()
    poller = select.poll()
    for fd in (out_r, rep_r):
        poller.register(fd, select.POLLIN)
    open_fds, timed_out = {out_r, rep_r}, False
    deadline = t0 + req["timeout"]
    while rep_r in open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = rep_r in open_fds
            break
        for fd, _ in poller.poll(max(1, int(min(left, 0.05) * 1000))):
            data = os.read(fd, 65536)
            if not data:
                open_fds.discard(fd)
                poller.unregister(fd)
            elif fd == out_r:
                out.add(data)
            elif len(report) < 8 * 1024 * 1024:
                report += data
    duration = time.monotonic() - t0
    kinds, done = _kinds(report)
    jstatus = 0 if "done" in kinds else -1
    if timed_out or done is None or done.get("retire"):
        # timed out, it may be stuck on the candidate's answer; else it ends after this sample (or it ended): replace
        # it now, so that no next sample is handed to a judge that is exiting (its report would be empty: a
        # sandbox_error that was another sample's doing)
        _JUDGE[0].close()
        _JUDGE[0] = None
    done, cstatus, ru = os.wait4(cpid, os.WNOHANG)
    if done or not flags or "gone" in kinds:  # its own end is part of the verdict: wait for it
        _kill(cpid)
        if not done:
            _, cstatus, ru = os.wait4(cpid, 0)
        maxrss = ru.ru_maxrss
        _reap_later(None, cg_name, cg)
    else:  # still serving: the verdict is in, so kill it and let the kernel tear its namespaces down meanwhile
        maxrss = _peak_rss_kb(cpid)
        _kill(cpid)
        cstatus = int(signal.SIGKILL)  # as a wait status: killed by SIGKILL
        _reap_later(cpid, cg_name, cg)
    if not flags:
        _kill_uid(uid, info)
        shutil.rmtree(cand.tmp, ignore_errors=True)
    while out_r in open_fds and poller.poll(0):  # what the sample's processes wrote before they died
        data = os.read(out_r, 65536)
        if not data:
            break
        out.add(data)
    for fd in (out_r, rep_r):
        os.close(fd)
    confined = out.head.startswith(CONFINED)
    if confined:
        del out.head[:len(CONFINED)]
        out.total -= len(CONFINED)
    return {"status": cstatus, "judge_status": jstatus, "timed_out": timed_out, "duration": duration,
            "maxrss_kb": maxrss, "out_head": bytes(out.head),
            "out_tail": bytes(out.tail), "out_total": out.total, "report": bytes(report), "confined": confined}


def _kinds(report):
    """The event kinds in the judge's report (it is not the candidate's) and its ``done`` payload (None: none)."""
    try:
        events = [wire.loads(body) for body in wire.frames(bytes(report))]
        done = next((e[1] for e in events if e[0] == "done" and isinstance(e[1], dict)), None)
        return {e[0] for e in events}, done
    except (wire.BadData, TypeError, IndexError, KeyError):
        return set(), None


_PENDING = []  # (pid or None, cgroup name or None, cgroup fd): killed candidates still being torn down
MAX_PENDING = 16


def _peak_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    except OSError:
        return 0


def _reap_later(pid, cg_name, cg):
    _PENDING.append((pid, cg_name, cg))
    reap(block=len(_PENDING) > MAX_PENDING)


def reap(block=False):
    """Collect killed candidates (all of them if ``block``) and remove their cgroups."""
    for item in list(_PENDING):
        pid, cg_name, cg = item
        if pid is not None:
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
            if not done:
                continue
        if cg_name is not None:
            try:
                os.rmdir(cg_name, dir_fd=cg)
            except OSError:
                if not block:
                    continue
        _PENDING.remove(item)


def _kill_uid(uid, info):
    """Without a PID namespace: kill every process of the sample's uid (from a process with that uid)."""
    if not info["uid_drop"]:
        return
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


PROBE = "def f(x):\n    return x\n"


def probe(cfg, info, cg):
    """Run one trivial sample; None if it passed, else why not."""
    test = compile("def check(candidate):\n    __ieta_assert__(0, lambda: candidate(1), None, False, None, True)\n",
                   "<test>", "exec")
    req = {"candidate": PROBE, "helpers": marshal.dumps(compile("", "<prompt>", "exec")), "test": marshal.dumps(test),
           "entry_point": "f", "timeout": 10.0, "trace": False, "trace_max_events": 1, "trace_repr_chars": 1,
           "slot": cfg["slot"]}
    resp = supervise(req, cfg, info, cg)
    events = [wire.loads(b) for b in wire.frames(resp["report"])]
    if any(k == "done" and p.get("asserts_passed") == 1 and p.get("clean") is True for k, p in events):
        return None
    text = (resp["out_head"] + resp["out_tail"]).decode("utf-8", "replace").strip()
    return text or f"probe sample failed (status {resp['status']}, judge {resp['judge_status']})"


def open_cgroup(cfg):
    """An fd of a cgroup v2 directory whose children get memory and pids limits, and a note."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next((line[3:].strip() for line in f if line.startswith("0::")), None)
        with open("/proc/self/mountinfo") as f:
            mnt = next((line.split()[4] for line in f if " - cgroup2 " in line), None)
    except OSError:
        path = mnt = None
    if path is None or mnt is None:
        return None, "none: no cgroup v2 hierarchy"
    d = os.path.join(mnt, path.lstrip("/"))
    try:
        with open(os.path.join(d, "cgroup.subtree_control")) as f:
            enabled = f.read().split()
        if not {"memory", "pids"} <= set(enabled) and path == "/":
            with open(os.path.join(d, "cgroup.controllers")) as f:
                have = f.read().split()
            if {"memory", "pids"} <= set(have):
                with open(os.path.join(d, "cgroup.subtree_control"), "w") as f:
                    f.write("+memory +pids")
                enabled = ["memory", "pids"]
        if not {"memory", "pids"} <= set(enabled) or not os.access(d, os.W_OK):
            return None, f"none: memory and pids controllers are not delegated at {d}"
        return os.open(d, os.O_RDONLY | os.O_DIRECTORY), f"v2 at {d}"
    except OSError as e:
        return None, f"none: {d}: {e.strerror}"


def main():
    rfd, wfd = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.environ.clear()  # children inherit exactly ENV
    os.environ.update(ENV)
    cfg = wire.loads(wire.read_body(rfd, 1 << 20))
    sys.path[:] = [p for p in sys.path if p != cfg["sandbox_dir"]] + cfg["site_dirs"]  # (started with -S)
    for name in cfg["preload"]:
        try:
            __import__(name)
        except Exception:
            pass
    compile(PROBE, "<warm-up>", "exec")  # the first compile sets up the parser's types: 2.6 ms a sample otherwise
    if cfg["backend"] == "bwrap":  # read now: the sandbox's files are not in the minimal root
        cfg["bwrap_modules"] = []
        for name in ("wire", "tracer", "serve"):
            with open(os.path.join(cfg["sandbox_dir"], name + ".py")) as f:
                cfg["bwrap_modules"].append((name, f.read()))
    cg, cg_note = open_cgroup(cfg) if cfg["namespaces"] else (None, "none: namespaces disabled")
    info = isolate.enter(cfg)
    info["uid_drop"] = bool(cfg["drop_uid"] and info["root"])
    if info["root"] and not info["uid_drop"]:
        info["lost"].append("no uid drop (sandbox.drop_uid=false): samples run as root")
    info["cgroup"] = cg_note
    info["oom_score_adj"] = CANDIDATE_OOM
    if info["minimal_root"]:
        why = probe(cfg, info, cg)
        if why is not None:
            info["minimal_root"] = False
            info["lost"].append(f"a sample could not be confined ({why[-300:]}); fix: " + isolate.FIXES["mount"])
    gc.freeze()  # forked children then never walk (and copy) the zygote's objects in a collection
    if "clone" in isolate.SYS:  # CLONE_PARENT needs the raw clone
        _SPAWNER[0] = Spawner(cfg, info, cg)
    else:
        info["lost"].append(f"no raw clone on {isolate._ARCH}: candidates are forked by the zygote, so a candidate's "
                            "memory may hold earlier samples' data (their tests included)")
    wire.write(wfd, info)
    prespawn(cfg, info, cg)
    while True:
        try:
            body = wire.read_body(rfd, 1 << 30)
        except wire.BadData:
            break
        if body is None:
            break
        reap()
        req = marshal.loads(body)  # from the pipeline (trusted)
        try:
            resp = supervise(req, cfg, info, cg)
        except Exception as e:
            resp = {"error": f"supervisor failed: {e!r}"}
        wire.write(wfd, resp)
        prespawn(cfg, info, cg)  # confined while the pipeline prepares the next request
    while _READY:
        _READY.popleft().discard(cg)
    reap(block=True)
    if _JUDGE[0] is not None:
        _JUDGE[0].close()
    if _SPAWNER[0] is not None:
        _SPAWNER[0].close(cg)
        reap(block=True)


if __name__ == "__main__":
    main()
