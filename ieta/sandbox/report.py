"""Turn a supervisor's response into the trace record; the verdict is decided here, in the parent.

Only the judge's report and the processes' exit statuses count; the candidate's process never
writes to the report.  Anything unreadable gives a ``sandbox_error`` record, never an exception.
"""

from __future__ import annotations

import os
import re
import signal

from ieta.sandbox import wire
from ieta.sandbox.config import SandboxConfig
from ieta.sandbox.instrument import InstrumentedTest
from ieta.sandbox.taxonomy import bucket, outcome_of_exception

_KINDS = {"ok", "fail", "error", "syntax", "trace", "gone", "garbage", "unsendable", "done"}


def parse_report(raw: bytes) -> list[tuple[str, object]]:
    """The judge's events in order; ``wire.BadData`` if the report is not well formed."""
    events = []
    for body in wire.frames(raw):
        msg = wire.loads(body)
        if type(msg) is not tuple or len(msg) != 2 or msg[0] not in _KINDS:
            raise wire.BadData("unexpected event")
        events.append(msg)
    return events


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def source_lines(text: str) -> list[str]:
    """``text``'s lines as Python numbers them (``\r``, ``\r\n`` and ``\n`` each end one)."""
    return _LINE_BREAK.split(text)


def _program_lines(own: list[str], test: str, entry_point: str) -> list[str]:
    """The program's lines: the candidate's ``own``, then the test's (numbered after them, as the judge reports
    them), then the call of ``check``."""
    return own + source_lines(test) + [f"check({entry_point})"]


def _src(lines: list[str], n: int | None) -> str | None:
    return lines[n - 1].strip() if n and 0 < n <= len(lines) else None


def _exception_fields(info: dict, lines: list[str], test: InstrumentedTest, own: int) -> dict:
    """``own``: the candidate's own lines (the first ``own`` of ``lines``). A line the candidate's process reports (a
    frame's, a SyntaxError's) is shown only within them: past them lies the hidden test."""
    frames = [f for f in info.get("frames", []) if f[0] in ("<candidate>", "...")]
    mine = (lambda n: n if n and n <= own else None)  # noqa: E731
    tb = [f'  File "<candidate>", line {ln}, in {fn}\n    {_src(lines, mine(ln)) or ""}' if name != "..."
          else f"  ... {fn}" for name, fn, ln in frames]
    line = mine(frames[-1][2] if frames else info.get("line"))
    idx = info.get("assert")
    if not line and idx is not None and idx < len(test.assert_lines):
        line = test.assert_lines[idx]
    if not line and info.get("raised") != "candidate" and info.get("frames"):  # the judge's own frames: the test's
        line = info["frames"][-1][2]
    tail = f"{info['exception']}: {info['message']}" if info.get("message") else info["exception"]
    first = None
    if idx is not None and idx < len(test.assert_src):
        first = {"assert": test.assert_src[idx], "expected": info.get("expected"), "actual": info.get("actual")}
    return {"exception": info["exception"], "message": info.get("message", ""), "line": line or None,
            "source_line": _src(lines, line), "traceback": "\n".join(["Traceback (candidate frames):", *tb, tail]),
            "first_failure": first}


def _decode(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _blank(test: InstrumentedTest) -> dict:
    return {"passed": False, "outcome": "crashed", "error_type": "Other", "exception": None, "message": "",
            "line": None, "source_line": None, "traceback": None, "asserts_passed": 0,
            "asserts_total": test.n_asserts, "first_failure": None, "stdout_tail": "", "duration_s": None,
            "peak_memory_mb": None, "line_trace": None}


def sandbox_error(test: InstrumentedTest, why: str) -> dict:
    rec = _blank(test)
    rec.update(outcome="sandbox_error", exception="SandboxError", message=f"sandbox failure: {why}")
    return rec


def build_record(resp: dict, candidate: str, test_src: str, entry_point: str, test: InstrumentedTest,
                 config: SandboxConfig) -> dict:
    """The verdict and trace fields of one sample (without the sample's own fields)."""
    if "error" in resp:
        return sandbox_error(test, str(resp["error"]))
    try:
        return _verdict(resp, candidate, test_src, entry_point, test, config)
    except (wire.BadData, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        return sandbox_error(test, f"unreadable judge report ({type(e).__name__}: {e})")


_RESPONSE = {"status": int, "judge_status": int, "timed_out": bool, "duration": (int, float), "maxrss_kb": int,
             "out_head": bytes, "out_tail": bytes, "out_total": int, "report": bytes, "confined": bool}


def _verdict(resp, candidate, test_src, entry_point, test, config):
    bad = [k for k, t in _RESPONSE.items() if not isinstance(resp.get(k), t)]
    if bad:
        raise ValueError(f"malformed supervisor response (fields {bad})")
    own = source_lines(candidate)
    lines = _program_lines(own, test_src, entry_point)
    rec = _blank(test)
    events = parse_report(resp["report"])
    tail = _decode(resp["out_tail"] or resp["out_head"])
    if resp["out_total"] > len(resp["out_head"]) + len(resp["out_tail"]):
        tail = f"[{resp['out_total'] - len(resp['out_head']) - len(resp['out_tail'])} bytes dropped]\n" + tail
    elif resp["out_tail"]:
        tail = _decode(resp["out_head"] + resp["out_tail"])
    rec.update(stdout_tail=tail[-config.max_output_bytes:], duration_s=round(resp["duration"], 4),
               peak_memory_mb=round(resp["maxrss_kb"] / 1024, 1))
    ok_asserts = {p for k, p in events if k == "ok"}
    failure = next((p for k, p in events if k in ("fail", "error", "syntax")), None)
    done = next((p for k, p in events if k == "done"), None)
    gone = next(((k, p) for k, p in events if k in ("gone", "garbage", "unsendable")), None)
    trace = [e for k, p in events if k == "trace" for e in p]
    status, jstatus = resp["status"], resp["judge_status"]
    rec["asserts_passed"] = done["asserts_passed"] if done else len(ok_asserts)
    if trace:
        rec["line_trace"] = trace[:config.trace_max_events]
    if not resp["confined"]:  # written before any candidate code runs, so the candidate cannot fake its absence
        return sandbox_error(test, "the candidate's process could not be confined: " + tail[-300:].strip())
    if failure is not None:
        rec.update(_exception_fields(failure, lines, test, len(own)))
        rec["outcome"] = outcome_of_exception(failure["exception"], failure.get("phase") == "compile",
                                              failure.get("raised") == "candidate")
    elif done is not None and done["clean"] and not resp["timed_out"]:
        rec.update(passed=True, outcome="passed", error_type=None)
        return rec
    elif gone is not None and gone[0] == "unsendable":
        return sandbox_error(test, gone[1]) | {"stdout_tail": rec["stdout_tail"]}
    elif resp["timed_out"] or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU):
        rec.update(outcome="timeout", exception="Timeout", message=f"exceeded {config.timeout}s wall clock "
                   f"or {config.cpu_seconds}s CPU")
    elif gone is not None and gone[0] == "gone" and os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        near_limit = resp["maxrss_kb"] >= 0.85 * config.memory_mb * 1024
        if sig == "SIGKILL" and not near_limit:  # killed by us after it hung up on the judge
            rec.update(outcome="crashed", exception="Exit", message=gone[1])
        else:
            rec.update(outcome="memory_limit" if near_limit else "crashed", exception=sig,
                       message=f"killed by {sig}" + (" near the memory limit" if near_limit else ""))
    elif gone is not None and gone[0] == "gone" and os.WIFEXITED(status):
        rec.update(outcome="crashed", exception="Exit",
                   message=f"process exited with code {os.WEXITSTATUS(status)} before the tests finished")
    elif gone is not None:
        rec.update(outcome="crashed", exception="Exit", message=gone[1])
    else:
        return sandbox_error(test, f"the judge ended without a verdict (status {jstatus})")
    rec["error_type"] = "Timeout" if rec["outcome"] == "timeout" else bucket(rec["exception"]) or "Other"
    return rec
