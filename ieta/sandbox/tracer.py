"""Line-level tracer for failing samples, installed in the candidate's process on a re-run.

Records the executed lines of the candidate's functions with a bounded, repr-truncated snapshot of
their locals, and streams them in batches so a timeout still leaves a partial trace.
"""

import sys

MAX_LOCALS = 8
BATCH = 25


def install(emit, safe_repr, max_events, repr_chars, filename="<candidate>"):
    """Start tracing; returns ``flush`` which sends what is still buffered."""
    events, sent = [], [0]

    def flush():
        if events:
            emit("trace", list(events))
            sent[0] += len(events)
            events.clear()

    def snapshot(frame):
        items = list(frame.f_locals.items())[:MAX_LOCALS]
        return {k: safe_repr(v, repr_chars) for k, v in items}

    def local(frame, event, arg):
        if sent[0] + len(events) >= max_events:
            return None
        if event == "line":
            events.append({"line": frame.f_lineno, "function": frame.f_code.co_name, "locals": snapshot(frame)})
        elif event == "return":
            events.append({"line": frame.f_lineno, "function": frame.f_code.co_name, "return": safe_repr(arg, repr_chars)})
        elif event == "exception":
            events.append({"line": frame.f_lineno, "function": frame.f_code.co_name, "exception": arg[0].__name__})
        if len(events) >= BATCH:
            flush()
        return local

    def global_(frame, event, arg):
        code = frame.f_code
        if code.co_filename != filename or code.co_name == "<module>" or sent[0] + len(events) >= max_events:
            return None
        return local

    sys.settrace(global_)
    return flush
