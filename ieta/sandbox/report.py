"""Turn a supervisor's response into the trace record; the verdict is decided here, in the parent."""

from __future__ import annotations

import marshal
import os
import signal

from ieta.sandbox.config import SandboxConfig
from ieta.sandbox.instrument import InstrumentedTest
from ieta.sandbox.taxonomy import bucket, outcome_of_exception


def parse_report(raw: bytes, nonce: bytes) -> tuple[list[tuple[str, object]], bool]:
    """Frames that carry the run's nonce, in order; the flag says whether anything else was found."""
    events, pos, n = [], 0, len(nonce)
    while pos < len(raw):
        if raw[pos:pos + n] != nonce or pos + n + 4 > len(raw):
            return events, True
        size = int.from_bytes(raw[pos + n:pos + n + 4], "little")
        body = raw[pos + n + 4:pos + n + 4 + size]
        if len(body) != size:
            return events, True
        try:
            kind, payload = marshal.loads(body)
        except (ValueError, EOFError, TypeError):
            return events, True
        events.append((kind, payload))
        pos += n + 4 + size
    return events, False


def _program_lines(candidate: str, test: str, entry_point: str) -> list[str]:
    return (candidate + "\n" + test + "\n" + f"check({entry_point})").split("\n")


def _src(lines: list[str], n: int | None) -> str | None:
    return lines[n - 1].strip() if n and 0 < n <= len(lines) else None


def _exception_fields(info: dict, lines: list[str], test: InstrumentedTest) -> dict:
    frames = [f for f in info.get("frames", []) if f[0] in ("<candidate>", "...")]
    tb = [f'  File "<candidate>", line {ln}, in {fn}\n    {_src(lines, ln) or ""}' if name != "..." else f"  ... {fn}"
          for name, fn, ln in frames]
    line = frames[-1][2] if frames else info.get("line")
    idx = info.get("assert")
    if not line and idx is not None and idx < len(test.assert_lines):
        line = test.assert_lines[idx]
    if not line and info.get("frames"):
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


def build_record(resp: dict, nonce: bytes, candidate: str, test_src: str, entry_point: str,
                 test: InstrumentedTest, config: SandboxConfig) -> dict:
    """The verdict and trace fields of one sample (without the sample's own fields)."""
    lines = _program_lines(candidate, test_src, entry_point)
    rec = {"passed": False, "outcome": "crashed", "error_type": "Other", "exception": None, "message": "",
           "line": None, "source_line": None, "traceback": None, "asserts_passed": 0,
           "asserts_total": test.n_asserts, "first_failure": None, "stdout_tail": "", "duration_s": None,
           "peak_memory_mb": None, "line_trace": None}
    if "error" in resp:
        rec.update(message=f"sandbox failure: {resp['error']}")
        return rec
    events, tampered = parse_report(resp["report"], nonce)
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
    trace = [e for k, p in events if k == "trace" for e in p]
    status = resp["status"]
    clean_exit = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    rec["asserts_passed"] = done["asserts_passed"] if done else len(ok_asserts)
    if trace:
        rec["line_trace"] = trace[:config.trace_max_events]
    if failure is not None:
        rec.update(_exception_fields(failure, lines, test))
        rec["outcome"] = outcome_of_exception(failure["exception"])
    elif done is not None and done["clean"] and clean_exit and not resp["timed_out"] and not tampered:
        rec.update(passed=True, outcome="passed", error_type=None)
        return rec
    elif resp["timed_out"] or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU):
        rec.update(outcome="timeout", exception="Timeout", message=f"exceeded {config.timeout}s wall clock "
                   f"or {config.cpu_seconds}s CPU")
    elif os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        near_limit = resp["maxrss_kb"] >= 0.85 * config.memory_mb * 1024
        rec.update(outcome="memory_limit" if near_limit else "crashed", exception=sig,
                   message=f"killed by {sig}" + (" near the memory limit" if near_limit else ""))
    else:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
        why = "the report was tampered with" if tampered else "before the tests finished"
        rec.update(outcome="crashed", exception="Exit", message=f"process exited with code {code} {why}")
    rec["error_type"] = "Timeout" if rec["outcome"] == "timeout" else bucket(rec["exception"]) or "Other"
    return rec
