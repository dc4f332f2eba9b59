"""Runs in the candidate's process: load the program, then answer calls of its entry point.

Nothing here decides a verdict.  The judge (``judge.py``, another process) sends
``("call", args, kwargs)``; this side answers ``("ret", value)`` with a plain-data copy of the result,
``("opaque", type name)`` when the result is not plain data (or more than the judge decodes, ``wire.ANSWERS``), or
``("raise", record)`` when the call raised.  Whatever the candidate does to this module only changes what it answers.
"""

import builtins
import gc
import marshal
import os
import sys

import tracer as _tracer
import wire

_SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None)})
MAX_REPLY = 32 << 20


class NotData(TypeError):
    pass


def plain(v, budget=None):
    """A copy of ``v`` built with the builtin types' own methods (subclasses lose their overrides); ``NotData`` if it
    is not plain data or (copying it spends what the judge would decoding it) more than is left of ``budget`` (a
    ``wire.Budget``, spent only by a copy that succeeds; none: a fresh one)."""
    budget = wire.Budget(*wire.ANSWERS) if budget is None else budget
    saved = list(budget.left)
    collect = gc.isenabled()
    gc.disable()  # as the judge decodes: the containers it makes would start collections
    try:
        return _plain(v, 0, budget)
    except BaseException:
        budget.left[:] = saved
        raise
    finally:
        if collect:
            gc.enable()


def _spend(budget, what, n):
    budget.left[what] -= n
    if budget.left[what] < 0:
        raise NotData("an answer " + budget.why(what))


def _int(v, budget):
    if not -(1 << 31) <= v < 1 << 31:  # marshal's 15-bit digits, past 32 bits
        _spend(budget, 1, (int.bit_length(v) + 14) // 15)
    return v


def _items(it, depth, budget):
    """Plain copies of the items ``it`` yields, the commonest (exact builtin scalars) inline."""
    out = []
    append = out.append
    for x in it:
        t = type(x)
        if t is int:
            append(x if -(1 << 31) <= x < 1 << 31 else _int(x, budget))
        elif t in _SCALARS:
            append(x)
        else:
            append(_plain(x, depth, budget))
    return out


def _plain(v, depth, budget):
    t = type(v)
    if t in _SCALARS:
        return _int(v, budget) if t is int else v
    if depth > 100:
        raise NotData("nesting too deep")
    items = wire.CONTAINER - 1  # what the container costs the judge's budget, its items apart
    if issubclass(t, list):
        _spend(budget, 0, items + list.__len__(v))
        return _items(list.__iter__(v), depth + 1, budget)
    if issubclass(t, tuple):
        _spend(budget, 0, items + tuple.__len__(v))
        return tuple(_items(tuple.__iter__(v), depth + 1, budget))
    if issubclass(t, dict):
        _spend(budget, 0, items + 2 * dict.__len__(v))
        return {_plain(k, depth + 1, budget): _plain(x, depth + 1, budget) for k, x in dict.items(v)}
    if issubclass(t, frozenset):
        _spend(budget, 0, items + frozenset.__len__(v))
        return frozenset(_items(frozenset.__iter__(v), depth + 1, budget))
    if issubclass(t, set):
        _spend(budget, 0, items + set.__len__(v))
        return set(_items(set.__iter__(v), depth + 1, budget))
    if issubclass(t, bool):
        return bool(int.__int__(v))
    if issubclass(t, int):
        return _int(int.__int__(v), budget)
    if issubclass(t, float):
        return float.__float__(v)
    if issubclass(t, str):
        return str.__str__(v)
    if issubclass(t, bytes):
        return bytes.__bytes__(v)
    raise NotData(t.__name__)


def safe_repr(v, limit=200):
    try:
        text = repr(plain(v))
    except BaseException:
        text = f"<{type(v).__name__} object>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def safe_str(e, limit=500):
    try:
        return str.__str__(str(e))[:limit]
    except BaseException:
        return "<unprintable>"


# the builtin exception classes, by id (a class's own ``__eq__``/``__hash__`` play no part), taken before any
# candidate code runs
_BUILTIN_EXCEPTIONS = {id(c): n for n, c in vars(builtins).items()
                       if isinstance(c, type) and issubclass(c, BaseException) and c.__name__ == n}
_MRO = type.__dict__["__mro__"].__get__  # the class's real MRO, which ``except`` matches by (not a metaclass's)


def builtin_of(cls) -> str:
    """The name of the nearest builtin exception class in ``cls``'s MRO (``json.JSONDecodeError``: ValueError;
    ``type('ValueError', (Exception,), {})``: Exception); the judge re-raises the call's exception as one of that."""
    try:
        return next(_BUILTIN_EXCEPTIONS[id(c)] for c in _MRO(cls) if id(c) in _BUILTIN_EXCEPTIONS)
    except BaseException:
        return "BaseException"


def exc_record(e):
    """Class name, nearest builtin exception class, message and the candidate's frames of ``e``."""
    frames = []
    tb = e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == "<candidate>":
            frames.append(("<candidate>", str(code.co_name), int(tb.tb_lineno)))
        tb = tb.tb_next
    if len(frames) > 12:
        frames = frames[:4] + [("...", f"{len(frames) - 10} frames", 0)] + frames[-6:]
    rec = {"exception": str(type(e).__name__), "builtin": builtin_of(type(e)), "message": safe_str(e),
           "frames": frames}
    if isinstance(e, SyntaxError):
        rec.update(message=safe_str(e.msg), line=int(e.lineno or 0))
    return rec


def _flush():
    """Push buffered output to the pipe: the process is killed, not ended, once the judge is done."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass


def run(req, call_fd, reply_fd):
    """Serve until the judge hangs up; ends the process."""
    def send(obj):
        _flush()
        wire.write(reply_fd, obj)

    for name in ("serve", "tracer", "wire", "zygote", "judge", "isolate", "taxonomy"):
        sys.modules.pop(name, None)
    if "random" in sys.modules:  # forked without Python's at-fork reseed: not the zygote's stream (nor the judge's)
        sys.modules["random"].seed()
    try:
        code = compile(req["candidate"], "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as e:
        send(("syntax" if isinstance(e, SyntaxError) else "load_error", exc_record(e)))
        os._exit(0)
    flush = None
    if req.get("trace"):
        flush = _tracer.install(lambda kind, events: send((kind, events)), safe_repr, req["trace_max_events"],
                                req["trace_repr_chars"])
    g = {"__name__": "__main__"}
    try:
        exec(code, g)
        fn = g[req["entry_point"]] if req["entry_point"] in g else None
        if fn is None:
            raise NameError(f"name {req['entry_point']!r} is not defined")
    except BaseException as e:
        send(("load_error", exc_record(e)))
        os._exit(0)
    send(("ready", None))
    dumps = marshal.dumps
    while True:
        head = wire.read_exact(call_fd, 4)
        if head is None:
            os._exit(0)
        _, args, kwargs = marshal.loads(wire.read_exact(call_fd, int.from_bytes(head, "little")))
        try:
            result = fn(*args, **kwargs)
            try:
                body = dumps(("ret", plain(result)), 2)  # items and digits within what the judge decodes of one
                if len(body) > MAX_REPLY:  # its bytes: 32 MiB, under the judge's 64 MiB (wire.ANSWERS)
                    body = dumps(("opaque", f"a result of {len(body)} bytes"), 2)
            except (NotData, ValueError, RecursionError, MemoryError) as e:
                body = dumps(("opaque", safe_str(e, 100) if isinstance(e, NotData) else type(e).__name__), 2)
        except BaseException as e:
            body = dumps(("raise", exc_record(e)), 2)
        if flush is not None:
            flush()
        _flush()
        data = memoryview(len(body).to_bytes(4, "little") + body)
        while data:
            data = data[os.write(reply_fd, data):]
