"""Kernel isolation for the zygote and its samples (child side, no ``ieta`` imports).

``enter`` (once per zygote): private user (when not root), mount, network, IPC and UTS namespaces,
and a new root: a read-only tmpfs holding only ``/usr`` (and its ``/bin``, ``/lib`` links), a few
device nodes, the Python prefix with its site-packages emptied except ``packages``, and ``/proc``.
Nothing else of the host exists there: no home, no project, no dataset, no run dir.
``confine`` (each sample process, in its fresh PID + mount namespace): its own ``/proc`` and
``/tmp``, ``oom_score_adj``, the cgroup when one is delegated, rlimits, and an unprivileged uid
without capabilities (as root: a per-worker uid; as a user: a nested user namespace, uid 1000).
"""

import ctypes
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
MS_REC, MS_PRIVATE = 0x4000, 0x40000
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 4, 38, 47
_ARCH = os.uname().machine
SYS = {"x86_64": {"clone": 56, "pivot_root": 155, "capset": 126},
       "aarch64": {"clone": 220, "pivot_root": 41, "capset": 91}}.get(_ARCH, {})
INNER_UID = 1000  # the sample's uid inside its nested user namespace (ordinary-user mode)
#: the calls a sample's processes may not make (seccomp), none of use to a solution:
#: - ``add_key``, ``request_key`` and ``keyctl``: the kernel's keyrings belong to no namespace, so a sample's process
#:   inherits its launcher's session keyring (a PAM login's or a container's, the host's keys in it) and shares it with
#:   every other sample (a channel from one to the next);
#: - ``memfd_create``: its memory is in no process's address space, so outside RLIMIT_AS and unseen by the OOM
#:   killer's count of the sample (which would kill another process first), 64 files of 16 MB per process;
#: - ``fadvise64``, ``readahead``, ``mincore``, ``cachestat`` and ``process_madvise`` (and ``madvise``'s MADV_COLD and
#:   MADV_PAGEOUT): the page cache belongs to no namespace either, and evicting, loading or reading the residency of
#:   pages of the shared read-only files was a channel from one sample to the next (timed reads tell cached pages)
DENIED_SYSCALLS = {"x86_64": (248, 249, 250, 319, 221, 187, 27, 451, 440),
                   "aarch64": (217, 218, 219, 279, 223, 213, 232, 451, 440)}.get(_ARCH, ())
MADVISE = {"x86_64": 28, "aarch64": 233}.get(_ARCH)
MADV_COLD, MADV_PAGEOUT = 20, 21
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(_ARCH)
SECCOMP = bool(DENIED_SYSCALLS) and _AUDIT_ARCH is not None  # the filter's numbers are known on this architecture
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
#: where the new root may be assembled before pivot_root: the first that holds none of the paths bound into it
#: (a venv under /tmp would be hidden by a tmpfs mounted on /tmp)
ASSEMBLY_DIRS = ("/tmp", "/mnt", "/media", "/srv", "/run", "/var/tmp")
DEVICES = ("null", "zero", "full", "random", "urandom")
ETC_FILES = ("ld.so.cache", "localtime")
FIXES = {
    "user": "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu also "
            "kernel.apparmor_restrict_unprivileged_userns=0) or run as root",
    "mount": "run where mount namespaces are allowed (in a container: --privileged or a seccomp profile "
             "that allows unshare/mount)",
}
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_CAP_HEADER = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
_CAP_DATA = (ctypes.c_uint32 * 6)()                  # all sets empty (built here, not in each child)


def _err(what):
    return f"{what}: {os.strerror(ctypes.get_errno())}"


def _mount(src, target, fstype, flags, data=None):
    enc = (lambda s: None if s is None else s.encode())
    if _libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise OSError(ctypes.get_errno(), _err(f"mount {target}"))


def _write(path, text):
    fd = os.open(path, os.O_WRONLY)  # not open(): far fewer objects touched in a freshly forked child
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _bind(src, target, readonly=True):
    if os.path.isdir(src):
        os.makedirs(target, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        open(target, "a").close()
    _mount(src, target, None, MS_BIND | MS_REC)
    if readonly:
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def enter(cfg):
    """Enter this zygote's namespaces and new root; returns what is active and what was lost."""
    info = {"namespaces": [], "lost": [], "root": os.geteuid() == 0, "uid_drop": False, "minimal_root": False}
    if not cfg["namespaces"]:
        info["lost"].append("namespaces disabled by config (sandbox.namespaces=false)")
        return info
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    uid, gid = os.geteuid(), os.getegid()
    if not info["root"]:
        if _libc.unshare(CLONE_NEWUSER | flags) != 0:
            info["lost"].append(_err("user namespace") + "; fix: " + FIXES["user"])
            return info
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
        info["namespaces"].append("user")
    elif _libc.unshare(flags) != 0:
        info["lost"].append(_err("mount/network namespaces") + "; fix: " + FIXES["mount"])
        return info
    info["namespaces"] += ["mnt", "net", "ipc", "uts"]
    if not SECCOMP:
        info["lost"].append(f"no seccomp filter on {_ARCH}: samples can reach the kernel's keyrings (their launcher's "
                            "session keyring, shared by every sample), memory outside their limits (memfd_create) and "
                            "the page cache's eviction and residency")
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _build_root(cfg, info)
        info["minimal_root"] = True
    except OSError as e:
        info["lost"].append(f"minimal root filesystem failed ({e}); fix: " + FIXES["mount"])
    return info


def _assembly_dir(cfg):
    needed = [os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, *cfg["site_dirs"])]
    for d in ASSEMBLY_DIRS:
        if os.path.isdir(d) and not os.path.islink(d) and not any((n + "/").startswith(d + "/") for n in needed):
            return d
    raise OSError(f"no directory to assemble the sandbox's root in: each of {ASSEMBLY_DIRS} holds the Python "
                  f"prefix or its packages ({needed})")


def _build_root(cfg, info):
    root = _assembly_dir(cfg)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,nr_inodes=4096,mode=0755")
    for top in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + top
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{root}/{top}")
        elif os.path.isdir(host):
            _bind(host, f"{root}/{top}")
    os.mkdir(f"{root}/etc", 0o755)
    for name in ETC_FILES:
        host = "/etc/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{root}/etc/{name}")
        elif os.path.isfile(host):
            _bind(host, f"{root}/etc/{name}")
    os.mkdir(f"{root}/dev", 0o755)
    for name in DEVICES:
        _bind("/dev/" + name, f"{root}/dev/{name}", readonly=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    for d in ("dev/shm", "tmp", "proc", ".old"):
        os.mkdir(f"{root}/{d}", 0o755)
    # the host /proc stays under the sample's own /proc: the kernel lets a namespace mount a new proc
    # only where a full one is visible; the sample has no capability to unmount its own
    _mount("/proc", f"{root}/proc", None, MS_BIND | MS_REC)
    prefixes = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    for prefix in sorted(prefixes):
        if not prefix.startswith("/usr/"):
            _bind(prefix, root + prefix)
    hidden = []
    for sp in cfg["site_dirs"]:
        if not os.path.isdir(root + sp):
            continue
        _mount("tmpfs", root + sp, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=1024,mode=0755")
        for name in cfg["packages"]:
            if os.path.exists(os.path.join(sp, name)):
                _bind(os.path.join(sp, name), f"{root}{sp}/{name}")
        _mount(None, root + sp, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        hidden.append(sp)
    info["site_packages_hidden"] = hidden
    os.chdir(root)
    if _libc.syscall(SYS["pivot_root"], b".", b".old") != 0:
        raise OSError(ctypes.get_errno(), _err("pivot_root"))
    os.chdir("/")
    if _libc.umount2(b"/.old", MNT_DETACH) != 0:
        raise OSError(ctypes.get_errno(), _err("detach old root"))
    os.rmdir("/.old")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=8m,mode=0755")


def limits(cfg):
    mb = 1024 * 1024
    return [(resource.RLIMIT_AS, cfg["memory_mb"] * mb), (resource.RLIMIT_CPU, cfg["cpu_seconds"]),
            (resource.RLIMIT_FSIZE, cfg["max_file_mb"] * mb), (resource.RLIMIT_NOFILE, cfg["max_open_files"]),
            (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, cfg["max_processes"])]


def _drop_caps():
    """No capability left: empty effective, permitted, inheritable and ambient sets.

    The bounding set is left alone (64 calls that cost more than the rest of the confinement): it only
    caps what an ``execve`` could grant, and with ``no_new_privs`` and a non-root uid (the only one
    mapped) an ``execve`` grants nothing.
    """
    _libc.prctl(PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    if _libc.syscall(SYS["capset"], _CAP_HEADER, _CAP_DATA) != 0:
        raise OSError(ctypes.get_errno(), _err("capset"))


def drop_privileges(info, uid, nested_userns_ok=False):
    """Become uid ``INNER_UID`` of a nested user namespace, without capabilities, that may not nest further.

    As root the process first becomes the per-worker ``uid`` (the namespace maps to it); as an ordinary
    user the namespace maps to the zygote's uid 0, i.e. the user.  ``nested_userns_ok`` (bwrap) leaves
    further nesting allowed.  Where the kernel refuses the namespace as root, the uid drop alone stays.
    """
    outer = 0
    if info["root"]:
        if not info["uid_drop"]:
            return
        os.setgroups([])  # leaving uid 0 clears every capability set; no_new_privs keeps them from coming back
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # else /proc/self stays root's and the maps cannot be written
        outer = uid
    elif "user" not in info["namespaces"]:
        return
    if _libc.unshare(CLONE_NEWUSER) == 0:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{INNER_UID} {outer} 1")
        _write("/proc/self/gid_map", f"{INNER_UID} {outer} 1")
        if not nested_userns_ok:
            _write("/proc/sys/user/max_user_namespaces", "0")
        _drop_caps()
    elif not info["root"]:
        raise OSError(ctypes.get_errno(), _err("nested user namespace"))
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def deny_syscalls(numbers, madvise=None, advice=()):
    """A seccomp filter on this process and its children: ``numbers`` fail with EPERM, so does the call ``madvise``
    with an ``advice`` (its third argument), and so does every call of another ABI (i386, x32: the same calls under
    other numbers). Needs ``no_new_privs``."""
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    allow, deny = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    k, a = len(numbers), len(advice)
    last = 8 + k + a  # the index of the final "deny" (the "allow" before it)
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, _AUDIT_ARCH), (ret, 0, 0, deny), (ld, 0, 0, 0),  # arch, then the number
            (jge, last - 5, 0, 0x40000000)]  # x32
    prog += [(jeq, last - (6 + i), 0, n) for i, n in enumerate(numbers)]
    # madvise: its advice (seccomp_data.args[2], low word, at 32), else allowed
    prog += [(jeq, 0, a + 1, -1 if madvise is None else madvise), (ld, 0, 0, 32)]
    prog += [(jeq, last - (7 + k + j) - 1, 0, v) for j, v in enumerate(advice)]
    prog += [(ret, 0, 0, allow), (ret, 0, 0, deny)]
    assert len(prog) == last + 1
    filters = (_SockFilter * len(prog))(*[_SockFilter(*f) for f in prog])
    fprog = _SockFprog(len(prog), filters)
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), _err("seccomp filter"))


def confine(cfg, info, uid, tmp_size_mb, oom_score_adj, cgroup_procs_fd=None, own_proc=True):
    """Confine the calling process (a sample's candidate or judge process)."""
    if own_proc and info["minimal_root"]:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        owner = f",uid={uid},gid={uid}" if info["uid_drop"] else ""
        opts = f"size={tmp_size_mb}m,nr_inodes=4096,mode=0700{owner}"
        for d in ("/tmp", "/dev/shm"):
            _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, opts)
    _write("/proc/self/oom_score_adj", str(oom_score_adj))
    if cgroup_procs_fd is not None:
        os.write(cgroup_procs_fd, b"0")
    nproc = None
    for res, value in limits(cfg):
        if value is None:
            continue
        if res == resource.RLIMIT_NPROC:
            nproc = value
            continue
        resource.setrlimit(res, (value, value + 1 if res == resource.RLIMIT_CPU else value))
    drop_privileges(info, uid, nested_userns_ok=cfg["backend"] == "bwrap")
    if nproc is not None and (info["uid_drop"] or "user" in info["namespaces"]):
        # set once inside the process's own user namespace, where only its own processes count: the namespace keeps,
        # for the uid outside (where the processes waiting for later samples and the judge are), the limit it was
        # made under; set before, a sample's budget shrank with every process waiting beside it
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    if SECCOMP:
        deny_syscalls(DENIED_SYSCALLS, MADVISE, (MADV_COLD, MADV_PAGEOUT))
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


CLONE_PARENT = 0x00008000  # the child's parent is the caller's parent


def spawn(flags=0):
    """``fork``, into new namespaces if ``flags`` say so: a raw ``clone`` without Python's at-fork hooks
    (safe, the zygote is single-threaded; about half the cost of ``os.fork``). ``CLONE_PARENT`` in ``flags`` needs
    the raw ``clone`` (``SYS``)."""
    if "clone" in SYS or flags & CLONE_PARENT:
        pid = _libc.syscall(SYS["clone"], flags | signal.SIGCHLD, 0, 0, 0, 0)
        if pid < 0:
            raise OSError(ctypes.get_errno(), _err("clone"))
        return pid
    return os.fork()
