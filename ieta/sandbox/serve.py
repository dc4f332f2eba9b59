"""Runs in the candidate's process: load the program, then answer calls of its entry point.

Nothing here decides a verdict.  The judge (``judge.py``, another process) sends
``("call", args, kwargs)``; this side answers ``("ret", value)`` with a plain-data copy of the result,
``("opaque", type name)`` when the result is not plain data, or ``("raise", record)`` when the call
raised.  Whatever the candidate does to this module only changes what it answers.
"""

import marshal
import os
import sys

import tracer as _tracer
import wire

_SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None)})
MAX_REPLY = 32 << 20


class NotData(TypeError):
    pass


def plain(v, depth=0):
    """A copy of ``v`` built with the builtin types' own methods (subclasses lose their overrides)."""
    t = type(v)
    if t in _SCALARS:
        return v
    if depth > 100:
        raise NotData("nesting too deep")
    if issubclass(t, list):
        return [plain(x, depth + 1) for x in list.__iter__(v)]
    if issubclass(t, tuple):
        return tuple(plain(x, depth + 1) for x in tuple.__iter__(v))
    if issubclass(t, dict):
        return {plain(k, depth + 1): plain(x, depth + 1) for k, x in dict.items(v)}
    if issubclass(t, frozenset):
        return frozenset(plain(x, depth + 1) for x in frozenset.__iter__(v))
    if issubclass(t, set):
        return {plain(x, depth + 1) for x in set.__iter__(v)}
    if issubclass(t, bool):
        return bool(int.__int__(v))
    if issubclass(t, int):
        return int.__int__(v)
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


def exc_record(e):
    """Class name, message and the candidate's frames of ``e``."""
    frames = []
    tb = e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == "<candidate>":
            frames.append(("<candidate>", str(code.co_name), int(tb.tb_lineno)))
        tb = tb.tb_next
    if len(frames) > 12:
        frames = frames[:4] + [("...", f"{len(frames) - 10} frames", 0)] + frames[-6:]
    rec = {"exception": str(type(e).__name__), "message": safe_str(e), "frames": frames}
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

    for name in ("serve", "tracer", "wire", "zygote", "judge", "isolate"):
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
                body = dumps(("ret", plain(result)), 2)
                if len(body) > MAX_REPLY:
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
