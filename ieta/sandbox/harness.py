"""Runs inside the sandboxed child: load the candidate, run the rewritten tests, report to the parent.

Imported by the zygote before any candidate code exists, and never imports ``ieta``.  The report
goes to a pipe; every frame starts with a per-run nonce the candidate cannot reach: it lives only in
a closure, and an audit hook blocks the ways to reach it (frame walking, ``gc`` referrers, tracing,
``/proc/self/mem``, ``ctypes.pythonapi``).  Builtins used here are bound in this module's globals so
that patching ``builtins`` or ``sys.modules`` does not change what the harness computes.
"""

import builtins as _builtins

globals().update({k: v for k, v in vars(_builtins).items() if not k.startswith("__")})

import marshal  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import tracer as _tracer  # noqa: E402

_write, _exit, _mdumps, _mloads = os.write, os._exit, marshal.dumps, marshal.loads
_SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None)})
_BLOCKED = {"sys._getframe": ValueError, "sys._current_frames": ValueError, "sys.settrace": RuntimeError,
            "sys.setprofile": RuntimeError, "gc.get_objects": RuntimeError, "gc.get_referrers": RuntimeError,
            "gc.get_referents": RuntimeError}
_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"})
_OPS = {"Eq": lambda a, b: a == b, "NotEq": lambda a, b: a != b, "Lt": lambda a, b: a < b,
        "LtE": lambda a, b: a <= b, "Gt": lambda a, b: a > b, "GtE": lambda a, b: a >= b,
        "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b}
REPR_CHARS = 200


class Untrusted(TypeError):
    """An operand is not plain data, so its comparison methods are the candidate's own code."""


class AssertFailed(AssertionError):
    """A nested assert failed; already recorded, it just unwinds ``check``."""


def plain(v, depth=0):
    """A plain-data copy of ``v`` built with the builtin types' own methods, or ``Untrusted``."""
    t = type(v)
    if t in _SCALARS:
        return v
    if depth > 100:
        raise Untrusted("nesting too deep")
    if t in (list, tuple) or issubclass(t, (list, tuple)):
        base = list if issubclass(t, list) else tuple
        return base(plain(x, depth + 1) for x in base.__iter__(v))
    if issubclass(t, dict):
        return {plain(k, depth + 1): plain(x, depth + 1) for k, x in dict.items(v)}
    if issubclass(t, (set, frozenset)):
        base = set if issubclass(t, set) else frozenset
        return base(plain(x, depth + 1) for x in base.__iter__(v))
    if issubclass(t, int) and not issubclass(t, bool):
        return int.__int__(v)
    if issubclass(t, float):
        return float.__float__(v)
    if issubclass(t, str):
        return str.__str__(v)
    raise Untrusted(f"comparison involves a non-data object of type {t.__name__!r}")


def compare(op, a, b):
    """One comparison with builtin semantics on plain copies; non-data objects only equal themselves."""
    if op == "Is":
        return a is b
    if op == "IsNot":
        return a is not b
    try:
        return _OPS[op](plain(a), plain(b))
    except Untrusted:
        if op in ("Eq", "NotEq") and (type(a) is type or type(b) is type or a is b):
            return (a is b) == (op == "Eq")
        raise


def safe_repr(v, limit=REPR_CHARS):
    """A truncated repr that never calls candidate-defined ``__repr__`` on non-data objects."""
    try:
        t = type(v)
        if t is str and len(v) > limit:
            v = v[:limit]
        if t in (list, tuple, dict, set, frozenset) and len(v) > limit:
            return f"<{t.__name__} of {len(v)} items>"
        text = repr(plain(v))
    except BaseException:
        text = f"<{type(v).__name__} object>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def safe_str(e, limit=500):
    try:
        text = str.__str__(str(e))
    except BaseException:
        text = "<unprintable>"
    return text[:limit]


def make_guard(nonce_blocked_paths=("/mem",)):
    """Install the audit hook; returns ``state`` whose ``armed`` flag the harness toggles for itself."""
    state = {"armed": False}

    def hook(event, args):
        if not state["armed"]:
            return
        exc = _BLOCKED.get(event)
        if exc is not None:
            raise exc(f"sandbox: {event} is not allowed")
        if event == "object.__getattr__" and args[1] in _FRAME_ATTRS:
            raise AttributeError(f"sandbox: {args[1]} is not allowed")
        if event == "open" and isinstance(args[0], str) and args[0].startswith("/proc/") \
                and args[0].endswith(nonce_blocked_paths):
            raise PermissionError(f"sandbox: opening {args[0]} is not allowed")
        if event == "ctypes.dlsym" and isinstance(args[1], str) and args[1].lstrip("_").startswith("Py"):
            raise AttributeError(f"sandbox: ctypes access to {args[1]} is not allowed")

    sys.addaudithook(hook)
    return state


def exc_record(e, guard, where=None):
    """Class name, message and the candidate/test frames of ``e`` (frames read with the guard lifted)."""
    frames = []
    guard["armed"] = False
    try:
        tb = e.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if code.co_filename in ("<candidate>", "<test>"):
                frames.append((code.co_filename, code.co_name, tb.tb_lineno))
            tb = tb.tb_next
    finally:
        guard["armed"] = True
    if len(frames) > 12:
        frames = frames[:4] + [("...", f"{len(frames) - 10} frames", 0)] + frames[-6:]
    rec = {"exception": type(e).__name__, "message": safe_str(e), "frames": frames}
    if type(e) is SyntaxError or isinstance(e, SyntaxError):
        rec.update(message=str(e.msg), line=e.lineno or 0)
    if where is not None:
        rec["assert"] = where
    return rec


def run(req, fd):
    """Load the candidate, run the rewritten tests and stream the report; ends the process."""
    nonce = req.pop("nonce")

    def emit(kind, payload):
        body = _mdumps((kind, payload))
        data = memoryview(nonce + len(body).to_bytes(4, "little") + body)
        while data:
            data = data[_write(fd, data):]

    guard = make_guard()
    pristine = dict(vars(_builtins))
    snapshots = {}
    for name in req["modules"]:
        try:
            module = __import__(name)
            snapshots[name] = (module, dict(vars(module)))
        except BaseException:
            pass

    def restore():
        for name, (module, snap) in snapshots.items():
            sys.modules[name] = module
            d = vars(module)
            for k, v in snap.items():
                if d.get(k) is not v:
                    d[k] = v

    passed, failed, state = set(), set(), {"first": None}

    def record_fail(idx, info):
        failed.add(idx)
        if state["first"] is None:
            state["first"] = info
            emit("fail", info)

    def truth(v):
        return bool(plain(v))

    def assert_(idx, thunk, op, swap, msg, top):
        restore()
        try:
            if op is None:
                ok = truth(thunk())
            elif op == "Not":
                ok = not truth(thunk())
            else:
                a, b = thunk()
                ok = compare(op, a, b)
        except Untrusted as e:  # the candidate answered with a non-data object: the assert fails
            ok, op, msg = False, None, (lambda: str.__str__(str(e)))
        except BaseException as e:
            record_fail(idx, exc_record(e, guard, idx))
            # go on to the next assert after ordinary errors only; resource errors would just repeat
            if top and isinstance(e, Exception) and not isinstance(e, (MemoryError, RecursionError)):
                return
            raise AssertFailed() from None
        if ok:
            if idx not in passed:
                passed.add(idx)
                emit("ok", idx)
            return
        info = {"exception": "AssertionError", "message": "", "frames": [], "assert": idx}
        if msg is not None:
            try:
                info["message"] = safe_repr(msg(), 500).strip("'\"")
            except BaseException:
                pass
        if op not in (None, "Not"):
            actual, expected = (b, a) if swap else (a, b)
            info["expected"], info["actual"] = safe_repr(expected), safe_repr(actual)
        record_fail(idx, info)
        if not top:
            raise AssertFailed()

    def cmp(ops, a, b, *rest):
        for i, op in enumerate(ops):
            if i:
                b = rest[i - 1]()
            if not compare(op, a, b):
                return False
            a = b
        return True

    for name in ("harness", "zygote", "tracer"):
        sys.modules.pop(name, None)
    flush = None
    try:
        code = compile(req["candidate"], "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as e:
        rec = exc_record(e, guard)
        rec["phase"] = "compile"
        emit("syntax" if isinstance(e, SyntaxError) else "error", rec)
        _finish(emit, passed, failed, state, True)
    if req.get("trace"):
        flush = _tracer.install(emit, safe_repr, req["trace_max_events"], req["trace_repr_chars"])
    guard["armed"] = True
    errored = False
    g = {}
    try:
        exec(code, g)
    except BaseException as e:
        rec = exc_record(e, guard)
        rec["phase"] = "load"
        emit("error", rec)
        errored = True
    if not errored:
        tg = {k: v for k, v in g.items() if k not in pristine or k.startswith("__")}
        tg.update({"__builtins__": pristine, "__ieta_cmp__": cmp, "__ieta_assert__": assert_})
        try:
            restore()
            exec(_mloads(req["test"]), tg)
            check, entry = tg["check"], req["entry_point"]
            if entry not in tg:
                raise NameError(f"name {entry!r} is not defined")
            check(tg[entry])
        except AssertFailed:
            pass
        except BaseException as e:
            if state["first"] is None:
                rec = exc_record(e, guard)
                rec["phase"] = "test"
                emit("error", rec)
            errored = True
    if flush is not None:
        flush()
    _finish(emit, passed, failed, state, errored)


def _finish(emit, passed, failed, state, errored):
    emit("done", {"asserts_passed": len(passed - failed), "clean": not errored and state["first"] is None and not failed})
    try:
        sys.__stdout__.flush()
    except BaseException:
        pass
    _exit(0)
