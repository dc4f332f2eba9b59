"""Malicious bytes never crash the judge or the parent: the plain-data decoder, the report parser, and
candidates that write hostile payloads on their reply channel."""

from __future__ import annotations

import marshal
import os
import random
import signal
import threading
import time

import pytest

from ieta.data import Problem
from ieta.execute import SandboxConfig, execute_samples
from ieta.sandbox import wire
from ieta.sandbox.instrument import instrument_test
from ieta.sandbox.report import build_record

PLAIN = [None, True, False, 0, -1, 2**31, -(2**100), 3.5, float("inf"), 1 + 2j, "héllo\udc80", "", b"\x00x",
         (1, (2,)), [1, [2, 3]], {1: [2], "a": (1, 2)}, {1, 2}, frozenset({3}), [[0] * 3] * 3, 10**500]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_plain_data_round_trips(value):
    assert repr(wire.loads(marshal.dumps(value, 2))) == repr(value)


def test_decoder_rejects_everything_else():
    for bad in (compile("1", "x", "eval"), (lambda: 0).__code__):
        with pytest.raises(wire.BadData):
            wire.loads(marshal.dumps(bad))
    for raw in (b"", b"N\x00", b"[\xff\xff\xff\x7f", b"(\x02\x00\x00\x00N", b"{[\x00\x00\x00\x00N0",
                b"l\xff\xff\xff\x7f", b"u\x05\x00\x00\x00ab", b"r\x00\x00\x00\x00", b"S", b"c" + bytes(64),
                b"[\x01\x00\x00\x00" * 10_000 + b"N"):
        with pytest.raises(wire.BadData):
            wire.loads(raw)


def test_decoder_fuzz_only_raises_bad_data():
    rng = random.Random(0)
    seeds = [marshal.dumps(v, 2) for v in PLAIN]
    for _ in range(20_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[:rng.randrange(len(data) + 1)]
        if rng.random() < 0.1:
            data = bytearray(rng.randbytes(rng.randint(0, 64)))
        try:
            value = wire.loads(bytes(data))
        except wire.BadData:
            continue
        assert type(value) in (type(None), bool, int, float, complex, str, bytes, tuple, list, dict, set, frozenset)


def test_big_ints_round_trip_exactly_in_linear_time():
    rng = random.Random(1)
    values = [2**31, -(2**31) - 1, 2**45 - 1, -(2**45), 2**60, 10**4300 + 7]
    values += [s * rng.getrandbits(b) for b in (31, 32, 59, 60, 61, 1000, 99_999, 300_001) for s in (1, -1)]
    for v in values:
        assert wire.loads(marshal.dumps(v, 2)) == v, v.bit_length()
    big = rng.getrandbits(15 * (1 << 18)) | 1 << (15 * (1 << 18) - 1)  # 2**18 digits: folding them one by one took s
    start = time.process_time()
    assert wire.loads(marshal.dumps(-big, 2)) == -big
    assert time.process_time() - start < 0.5
    digit = bytearray(marshal.dumps(2**45, 2))
    digit[-1] |= 0x80  # a 16-bit word past 15 bits is no digit
    with pytest.raises(wire.BadData):
        wire.loads(bytes(digit))


def _budget(items=1000, digits=1000, nbytes=1 << 20):
    return wire.Budget(items, digits, nbytes)


def test_the_decoding_budget_bounds_all_messages_together():
    b = _budget()
    assert wire.loads(marshal.dumps([1] * 995, 2), b) == [1] * 995  # 1 + 3 + 995 items: 1 left
    with pytest.raises(wire.OverBudget, match="1000 items"):
        wire.loads(marshal.dumps([1, 2], 2), b)
    with pytest.raises(wire.OverBudget, match="1000 items"):  # once over it, every later message is
        wire.loads(marshal.dumps(None, 2), b)
    assert issubclass(wire.OverBudget, wire.BadData)
    for value, kind in [([[]] * 250, "items"), ({i: i for i in range(500)}, "items"),
                        ({(1,) * 500, (2,) * 500}, "items"), (2 ** (15 * 1001), "int digits"),
                        ([2 ** (15 * 600)] * 2, "int digits"), ("x" * (1 << 20), "bytes")]:
        with pytest.raises(wire.OverBudget, match=kind):
            wire.loads(marshal.dumps(value, 2), _budget())
    assert wire.loads(marshal.dumps([[]] * 249, 2), _budget()) == [[]] * 249
    assert wire.loads(marshal.dumps(2 ** (15 * 1000) - 1, 2), _budget()) == 2 ** (15 * 1000) - 1
    assert wire.loads(marshal.dumps([None] * 10**6, 2)) == [None] * 10**6  # no budget: unbounded (trusted senders)


def test_an_announced_size_past_the_budget_is_refused_before_decoding():
    raw = b"[" + (1 << 24).to_bytes(4, "little") + b"N" * (1 << 24)  # as a candidate could write it
    start = time.process_time()
    with pytest.raises(wire.OverBudget):
        wire.loads(raw, wire.Budget(*wire.ANSWERS))
    assert time.process_time() - start < 0.05
    many = marshal.dumps({i: None for i in range(1 << 20)}, 2)  # a dict has no count: refused as it goes past
    start = time.process_time()
    with pytest.raises(wire.OverBudget):
        wire.loads(many, wire.Budget(*wire.ANSWERS))
    assert time.process_time() - start < 2.0


def test_the_candidates_process_copies_no_more_than_the_judge_decodes():
    import sys
    sys.path.insert(0, os.path.dirname(wire.__file__))
    try:
        import serve
    finally:
        sys.path.pop(0)
    b = wire.Budget(*wire.ANSWERS)
    for value in ([None] * (30 << 20), [[]] * (1 << 18), 1 << (15 * (1 << 18) + 15)):
        start = time.process_time()
        with pytest.raises(serve.NotData, match="decoding budget"):
            serve.plain(value, b)
        assert time.process_time() - start < 0.5
    assert b.left == list(wire.ANSWERS)  # a copy that fails spends nothing
    assert serve.plain([list(range(1000))] * 100, b) == [list(range(1000))] * 100
    assert serve.builtin_of(type("ValueError", (Exception,), {})) == "Exception"
    import json
    assert serve.builtin_of(json.JSONDecodeError) == "ValueError"
    assert serve.builtin_of(KeyError) == "KeyError"


TEST = instrument_test("def check(candidate):\n    assert candidate(1) == 1\n", 2)
GOOD = {"status": 9, "judge_status": 0, "timed_out": False, "duration": 0.01, "maxrss_kb": 1000, "out_head": b"",
        "out_tail": b"", "out_total": 0, "confined": True,
        "report": wire.dumps(("ok", 0)) + wire.dumps(("done", {"asserts_passed": 1, "clean": True}))}


def _record(resp):
    return build_record(resp, "def f(x):\n    return x\n", "def check(candidate):\n    assert candidate(1) == 1\n",
                        "f", TEST, SandboxConfig())


def test_a_clean_report_passes():
    assert _record(GOOD)["outcome"] == "passed"


@pytest.mark.parametrize("change", [
    {"report": b"\x05\x00\x00\x00junk"}, {"report": wire.dumps(("done", "clean"))}, {"report": wire.dumps(["ok"])},
    {"report": wire.dumps(("fail", {"no": "fields"}))}, {"report": wire.dumps(("trace", 5))}, {"report": b"\x01"},
    {"report": wire.dumps(("nonsense", 1))}, {"status": "x"}, {"maxrss_kb": None}, {"out_head": 5},
    {"report": None}, {"error": "zygote died"}, {"confined": False}])
def test_a_malformed_response_is_a_sandbox_error_not_a_crash(change):
    rec = _record({**GOOD, **change})
    assert rec["passed"] is False and rec["outcome"] == "sandbox_error"


ECHO = Problem("w/echo", "def f(x):\n", "def check(candidate):\n    r = candidate(1)\n    assert r == 1\n"
               "    assert r == 2\n", "f")
# each writes a hostile payload on its reply channel (fd 4) instead of, or before, answering
PAYLOADS = {
    "wrong_shape": "('ret',)", "not_a_tuple": "['ret', 1]", "kind_not_str": "(5, 1)", "unknown_kind": "('done', 1)",
    "raise_with_junk": "('raise', 5)", "raise_bad_fields": "('raise', {'exception': 5, 'frames': 'x', 'message': []})",
    "trace_junk": "('trace', [1, {'line': 'x'}, {'line': 3, 'locals': 7}])", "ready_again": "('ready', None)",
    "deep": "('ret', " + "[" * 300 + "]" * 300 + ")",
}


def _writer(expr: str) -> str:
    return ("    import os, marshal\n    body = marshal.dumps(" + expr + ", 2)\n"
            "    os.write(4, len(body).to_bytes(4, 'little') + body)\n    return x\n")


RAW = {
    "random_bytes": "    import os\n    os.write(4, os.urandom(512))\n    return x\n",
    "truncated": "    import os\n    os.write(4, (100).to_bytes(4, 'little') + b'N')\n    os._exit(0)\n",
    "huge_prefix": "    import os\n    os.write(4, (2**31 - 1).to_bytes(4, 'little'))\n    return x\n",
    "marshal_ref": "    import os\n    b = b'\\xdb\\x01\\x00\\x00\\x00r\\x00\\x00\\x00\\x00'\n"
                   "    os.write(4, len(b).to_bytes(4, 'little') + b)\n    return x\n",
    "flood": "    import os\n    for _ in range(100):\n        os.write(4, os.urandom(65536))\n    return x\n",
}


def test_hostile_reply_payloads_never_pass_and_the_run_goes_on():
    cases = {name: _writer(expr) for name, expr in PAYLOADS.items()} | RAW
    samples = [{"task_id": ECHO.task_id, "completion": body, "case": name} for name, body in cases.items()]
    samples.append({"task_id": ECHO.task_id, "completion": "    return x\n", "case": "honest"})
    config = SandboxConfig(workers=2, timeout=2.0, trace=False)
    recs = {r["case"]: r for r in execute_samples([ECHO], samples, config, progress=False)}
    for name in cases:
        assert recs[name]["passed"] is False, name
        assert recs[name]["outcome"] not in ("passed", "sandbox_error"), (name, recs[name]["outcome"])
    assert recs["honest"]["outcome"] == "failed" and recs["honest"]["asserts_passed"] == 1


def _children(pid: int) -> list[int]:
    out = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p))
        except (OSError, ValueError, IndexError):
            pass
    return out


def _single_ns_pid(pid: int) -> bool:
    """Whether ``pid`` is a candidate's process (two PIDs: the host's and 1 in its own namespace). A process that
    ended meanwhile (a waiting candidate reaped) also counts as one: it is nothing to kill."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return len(next(line for line in f if line.startswith("NSpid:")).split()) == 2
    except (OSError, StopIteration):
        return True


SLOW = Problem("w/slow", "def f(x):\n", "def check(candidate):\n    assert candidate(1) == 1\n", "f")
SLOW_BODY = "    import time\n    time.sleep(0.6)\n    return x\n"


def _zygote() -> int | None:
    for c in _children(os.getpid()):
        try:
            with open(f"/proc/{c}/cmdline", "rb") as f:
                if b"zygote.main()" in f.read():
                    return c
        except OSError:
            pass
    return None


def _kill_during_run(pick) -> list[dict]:
    """Run two slow samples; while the first runs, kill the process ``pick(zygote_pid)`` names."""
    def killer():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            z = _zygote()
            victim = pick(z) if z else None
            if victim:
                time.sleep(0.2)
                os.kill(victim, signal.SIGKILL)
                return
            time.sleep(0.02)

    t = threading.Thread(target=killer)
    t.start()
    samples = [{"task_id": SLOW.task_id, "completion": SLOW_BODY}] * 2
    recs = execute_samples([SLOW], samples, SandboxConfig(workers=1, timeout=3.0, trace=False), progress=False)
    t.join()
    return recs


def test_a_zygote_death_is_a_sandbox_error_retried_once():
    recs = _kill_during_run(lambda z: z if any(not _single_ns_pid(c) for c in _children(z)) else None)
    assert [r["outcome"] for r in recs] == ["passed", "passed"]
    assert recs[0].get("sandbox_retried") is True and not recs[1].get("sandbox_retried")


def test_a_judge_death_is_a_sandbox_error_retried_once():
    def judge_of(z):  # once a candidate runs: the zygote's child outside the candidate's PID namespace
        kids = _children(z)
        if not any(not _single_ns_pid(c) for c in kids):
            return None
        return next((c for c in kids if _single_ns_pid(c)), None)

    recs = _kill_during_run(judge_of)
    assert [r["outcome"] for r in recs] == ["passed", "passed"]
    assert recs[0].get("sandbox_retried") is True
