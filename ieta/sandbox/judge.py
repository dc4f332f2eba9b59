"""Runs in the judge process: the problem's helpers and rewritten test, calling the candidate over a pipe.

The candidate's process (``serve.py``) is another process in another PID namespace; all that comes
back from it is decoded by ``wire.loads`` into plain data (or an ``Opaque`` stand-in), so every
value an assert compares is built-in data or the test's own; what it decodes of each message is bounded
(``wire.ANSWERS``), so a huge answer fails the sample in a fraction of its time.  The report this process
writes to the supervisor is the only thing the verdict is built from.  Never imports ``ieta``.
"""

import builtins
import marshal
import os
import random
import socket
import time

import taxonomy
import wire

MAX_REPLY = 32 << 20
FLUSH_S = 0.005  # passed asserts reach the supervisor at most this late (a timeout may lose that much)
MAX_SAMPLES = 1000  # a judge process serves at most this many samples, then a fresh one takes over
_OPS = {"Eq": lambda a, b: a == b, "NotEq": lambda a, b: a != b, "Lt": lambda a, b: a < b,
        "LtE": lambda a, b: a <= b, "Gt": lambda a, b: a > b, "GtE": lambda a, b: a >= b,
        "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b,
        "Is": lambda a, b: a is b, "IsNot": lambda a, b: a is not b}
_CONTAINERS = (list, tuple, dict, set, frozenset)


class Untrusted(TypeError):
    """A comparison involves a value the candidate's process could not send as plain data."""


class AssertFailed(AssertionError):
    """A nested assert failed; already recorded, it just unwinds ``check``."""


class CandidateGone(BaseException):
    """The candidate's process ended or broke the protocol; no later call can succeed."""


class Unsendable(BaseException):
    """The test passed an argument that is not plain data (a limit of the sandbox, not the model)."""


def _refuse(self, *a, **k):
    raise Untrusted(f"the candidate returned a non-data object ({object.__getattribute__(self, 'what')})")


class Opaque:
    """Stands for a result that was not plain data: every operation on it fails."""
    __slots__ = ("what",)

    def __init__(self, what):
        object.__setattr__(self, "what", str(what)[:100])

    def __repr__(self):
        return f"<non-data result: {self.what}>"


for _name in ("eq", "ne", "lt", "le", "gt", "ge", "bool", "len", "iter", "hash", "contains", "getitem", "add",
              "radd", "sub", "rsub", "mul", "rmul", "truediv", "floordiv", "mod", "neg", "abs", "int", "float",
              "index", "round", "getattr", "call", "format", "str"):
    setattr(Opaque, f"__{_name}__", _refuse)
_EXC_CACHE = {}


def builtin_exception(name):
    """The builtin exception class of this process named ``name`` (the candidate's process reports the nearest one
    of its exception's class), else ``Exception``."""
    cls = vars(builtins).get(name) if type(name) is str else None
    if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == "builtins":
        return cls
    return Exception


def _stand_in_class(name, base):
    """A class named ``name`` (else as ``base``: a name with a NUL) derived from ``base``, else from the nearest
    class of ``base``'s MRO that can be made without arguments (an ExceptionGroup cannot)."""
    for shown in (name, base.__name__):
        for parent in base.__mro__[:-1]:
            try:
                cls = type(shown, (parent,), {"__module__": "candidate"})
                cls.__new__(cls)
                return cls
            except Exception:
                pass
    return type("Exception", (Exception,), {"__module__": "candidate"})


def _reraised(rec):
    """An exception standing for one the candidate raised: of a class named as the candidate's (for display only)
    and derived from the nearest builtin class of the candidate's, so the test's ``except`` clauses catch it as they
    would the candidate's (a class named ``ValueError`` is no ValueError; ``json.JSONDecodeError`` is one)."""
    rec = rec if isinstance(rec, dict) else {}
    name = str(rec.get("exception", "Exception"))[:100]
    base = builtin_exception(rec.get("builtin"))
    if issubclass(base, (StopIteration, StopAsyncIteration)):  # as PEP 479 does at a generator's edge: it would end
        base = RuntimeError  # the test's own loop (map, all, any) as if the iterable were done
    cls = _EXC_CACHE.get((name, base))
    if cls is None:
        cls = _stand_in_class(name, base)
        _EXC_CACHE[(name, base)] = cls
    e = cls.__new__(cls)
    e.args = (str(rec.get("message", ""))[:500],)
    e.ieta_record = rec
    return e


def safe_repr(v, limit=200):
    try:
        if type(v) in _CONTAINERS and len(v) > limit:
            return f"<{type(v).__name__} of {len(v)} items>"
        text = repr(v)
    except BaseException:
        text = f"<{type(v).__name__} object>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _text(v, limit):
    """A string field of the candidate's: cut to ``limit``, lone surrogates (which UTF-8 cannot hold) escaped."""
    return v[:limit].encode("utf-8", "backslashreplace").decode("utf-8") if type(v) is str else ""


def _holds_opaque(v, depth=0):
    """Whether ``v`` holds a stand-in for one of the candidate's non-data answers (``Opaque``)."""
    if type(v) is Opaque:
        return True
    if depth > 50 or type(v) not in _CONTAINERS:
        return False
    items = [x for kv in v.items() for x in kv] if type(v) is dict else v
    return any(_holds_opaque(x, depth + 1) for x in items)


#: the names Python gives code that has none (a name like ``<tool_call>`` would be a special token in a prompt)
_SYNTHETIC = frozenset({"<module>", "<lambda>", "<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})


def _name(v, default=""):
    """A name the candidate reports (an exception class, a function, a variable): an identifier, or one of Python's
    own ``<module>``-like names, else ``default``; nothing else, so no name can carry text into a feedback prompt."""
    return v if type(v) is str and len(v) <= 100 and (v.isidentifier() or v in _SYNTHETIC) else default


def _line(v):
    """A line number from the candidate's process, or None when it cannot be one (an int of 5000 digits, say)."""
    return v if type(v) is int and 0 <= v < 1 << 31 else None


def clean_record(rec, where=None):
    """The failure record of an exception raised by the candidate (fields checked, sizes bounded)."""
    rec = rec if isinstance(rec, dict) else {}
    frames = []
    for f in rec.get("frames", [])[:12] if isinstance(rec.get("frames"), list) else []:
        if isinstance(f, (tuple, list)) and len(f) == 3 and _line(f[2]) is not None and f[0] in ("<candidate>", "..."):
            frames.append((f[0], _name(f[1], "<unknown>"), f[2]))
    # by the candidate's code: its name is the candidate's to choose, so the outcome and bucket (which the record's
    # name decides) are those of the class's nearest builtin: a class named MemoryError is no memory limit
    builtin = builtin_exception(rec.get("builtin")).__name__
    name = _name(rec.get("exception"), builtin)
    out = {"exception": taxonomy.exception_name(name, builtin), "message": _text(rec.get("message"), 500),
           "frames": frames, "raised": "candidate"}
    if out["exception"] != name:
        out["class"] = name  # the name it showed, which would have been classed as another builtin
    if _line(rec.get("line")) is not None:
        out["line"] = rec["line"]
    if where is not None:
        out["assert"] = where
    return out


def exc_record(e, where=None, offset=0):
    """Record of an exception seen in this process (the candidate's own come with their record)."""
    rec = getattr(e, "ieta_record", None)
    if rec is not None:
        return clean_record(rec, where)
    frames = []
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<test>":
            frames.append(("<test>", tb.tb_frame.f_code.co_name, tb.tb_lineno + offset))
        tb = tb.tb_next
    try:
        message = _text(str(e), 500)
    except BaseException:
        message = "<unprintable>"
    rec = {"exception": type(e).__name__, "message": message, "frames": frames[-12:]}
    if where is not None:
        rec["assert"] = where
    return rec


def clean_trace(events, repr_chars):
    """Trace events from the candidate's process, reduced to the fields and types the record has."""
    out = []
    for ev in events if isinstance(events, list) else []:
        if not isinstance(ev, dict) or _line(ev.get("line")) is None:
            continue
        item = {"line": ev["line"], "function": _name(ev.get("function"), "<unknown>")}
        if isinstance(ev.get("locals"), dict):
            item["locals"] = {_name(k): _text(v, repr_chars) for k, v in list(ev["locals"].items())[:8] if _name(k)}
        for key in ("return", "exception"):
            if key in ev:
                item[key] = _text(ev[key], repr_chars)
        out.append(item)
    return out


def serve(sock_fd, jobs_fd, memory_kb):
    """Judge samples one after another; each arrives as a request on ``jobs_fd`` and three fds on ``sock_fd``.

    Every sample gets fresh globals for the prompt's helpers and the test; all that ever came from a
    candidate is plain data the test compared.  After a sample whose candidate broke the protocol, or
    that hit a resource error here, or once memory grows, this process ends and the zygote starts a fresh one.
    """
    sock = socket.socket(fileno=sock_fd)
    for i in range(MAX_SAMPLES):
        try:
            _, fds, _, _ = socket.recv_fds(sock, 1, 3)
            body = wire.read_body(jobs_fd, 1 << 30)
        except OSError:
            break
        if body is None or len(fds) != 3:
            break
        try:  # the request is from the zygote (trusted): it holds code objects
            fit = run(marshal.loads(body), *fds, last=i == MAX_SAMPLES - 1, memory_kb=memory_kb)
        finally:
            for fd in fds:
                os.close(fd)
        if not fit:
            break
    os._exit(0)


def _rss_kb():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


def run(req, reply_fd, call_fd, report_fd, last=False, memory_kb=None):
    """Judge one sample and stream the report; returns whether this process is fit for another sample (not after a
    candidate broke the protocol, a resource error, memory above ``memory_kb`` or the ``last`` sample). The report's
    ``done`` says so (``retire``), so the zygote replaces this process before the next sample instead of handing it
    to one that is ending."""
    # the test's random draws (``import random`` is this module): from the OS for each sample, so no candidate can
    # know them (every process here starts as a fork of the zygote, without Python's at-fork reseed)
    random.seed()
    pending, flushed = bytearray(), [time.monotonic()]

    def flush():
        view = memoryview(bytes(pending))
        while view:
            view = view[os.write(report_fd, view):]
        pending.clear()
        flushed[0] = time.monotonic()

    def emit(kind, payload, lazy=False):
        """Report an event; passed asserts (``lazy``) go out in batches, at most ``FLUSH_S`` late."""
        pending.extend(wire.dumps((kind, payload)))
        if not lazy:
            flush()

    state = {"first": None, "gone": None, "traced": 0, "resource": False}
    passed, failed = set(), set()
    max_events, repr_chars = req["trace_max_events"], req["trace_repr_chars"]
    offset = req.get("test_line_offset", 0)

    def receive():
        """The next answer from the candidate's process, forwarding trace events on the way."""
        while True:
            try:
                body = wire.read_body(reply_fd, MAX_REPLY)
                msg = None if body is None else wire.loads(body, wire.Budget(*wire.ANSWERS))
            except wire.OverBudget as e:  # too large to decode within the sample's time: a non-data answer (as the
                return ("opaque", f"an answer {e}")  # candidate's process makes one), which fails every comparison
            except wire.BadData as e:
                state["gone"] = ("garbage", f"the candidate's process sent an invalid message ({e})")
                raise CandidateGone() from None
            if msg is None:
                state["gone"] = ("gone", "the candidate's process ended")
                raise CandidateGone()
            if type(msg) is not tuple or len(msg) != 2 or type(msg[0]) is not str:
                state["gone"] = ("garbage", "the candidate's process sent a message that is not (kind, value)")
                raise CandidateGone()
            if msg[0] == "trace":  # only a traced run has them: elsewhere they are the candidate's forgeries
                events = clean_trace(msg[1], repr_chars)[:max(0, max_events - state["traced"])] if req["trace"] else []
                if events:
                    state["traced"] += len(events)
                    emit("trace", events)
                continue
            return msg

    def candidate(*args, **kwargs):
        if state["gone"] is not None:
            raise CandidateGone()
        try:
            body = marshal.dumps(("call", args, kwargs), 2)
        except ValueError:
            if _holds_opaque((args, kwargs)):  # the candidate's own non-data answer, passed back to it
                raise Untrusted("the test passed the candidate's own non-data answer back to it") from None
            state["gone"] = ("unsendable", "the test passed an argument that is not plain data")
            raise Unsendable() from None
        if pending and time.monotonic() - flushed[0] > FLUSH_S:  # the call may hang: report progress first
            flush()
        data = memoryview(len(body).to_bytes(4, "little") + body)
        try:
            while data:
                data = data[os.write(call_fd, data):]
        except OSError:
            state["gone"] = ("gone", "the candidate's process ended")
            raise CandidateGone() from None
        kind, value = receive()
        if kind == "ret":
            return value
        if kind == "opaque":
            return Opaque(value)
        if kind == "raise":
            raise _reraised(value)
        state["gone"] = ("garbage", f"the candidate's process sent an unexpected {kind[:40]!r} message")
        raise CandidateGone()

    def record_fail(idx, info):
        failed.add(idx)
        if state["first"] is None:
            state["first"] = info
            emit("fail", info)

    def assert_(idx, thunk, op, swap, msg, top):
        try:
            if op is None:
                ok = bool(thunk())
            elif op == "Not":
                ok = not thunk()
            else:
                a, b = thunk()
                ok = bool(_OPS[op](a, b))
        except Untrusted as e:  # the candidate answered with a non-data object: the assert fails
            why = str(e)
            ok, op, msg = False, None, (lambda: why)
        except (CandidateGone, Unsendable):
            raise
        except BaseException as e:
            state["resource"] |= isinstance(e, (MemoryError, RecursionError))
            record_fail(idx, exc_record(e, idx, offset))
            # go on to the next assert after ordinary errors only; resource errors would just repeat
            if top and isinstance(e, Exception) and not isinstance(e, (MemoryError, RecursionError)):
                return
            raise AssertFailed() from None
        if ok:
            if idx not in passed:  # once per assert site: the report's size is the test's, not the candidate's
                passed.add(idx)    # (an assert in a loop over its answer would repeat it without bound)
                emit("ok", idx, lazy=True)
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
            if not _OPS[op](a, b):
                return False
            a = b
        return True

    errored = False
    try:
        kind, value = receive()
        if kind in ("syntax", "load_error"):
            rec = clean_record(value)
            rec["phase"] = "compile" if kind == "syntax" else "load"
            emit("syntax" if kind == "syntax" else "error", rec)
            errored = True
        elif kind != "ready":
            state["gone"] = ("garbage", f"the candidate's process sent an unexpected {kind[:40]!r} message")
    except CandidateGone:
        pass
    if state["gone"] is None and not errored:
        tg = {"__name__": "__main__", "__builtins__": builtins, "__ieta_cmp__": cmp, "__ieta_assert__": assert_}
        try:
            exec(marshal.loads(req["helpers"]), tg)
            tg[req["entry_point"]] = candidate
            exec(marshal.loads(req["test"]), tg)
            tg["check"](candidate)
        except (AssertFailed, CandidateGone, Unsendable):
            pass
        except BaseException as e:
            state["resource"] |= isinstance(e, (MemoryError, RecursionError))
            if state["first"] is None:
                rec = exc_record(e, None, offset)
                rec["phase"] = "test"
                emit("error", rec)
            errored = True
    if state["gone"] is not None:
        emit(*state["gone"])
    fit = (state["gone"] is None and not state["resource"] and not last
           and (memory_kb is None or _rss_kb() <= memory_kb))
    emit("done", {"asserts_passed": len(passed - failed),
                  "clean": not errored and state["first"] is None and not failed and state["gone"] is None,
                  "retire": not fit})
    return fit
