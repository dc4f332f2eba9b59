"""The README's Quick start as CI runs it (.ci/run reads its commands from README.md): the commands, the default run
dir outputs/<date>/<time>_<method> with no hydra.run.dir override, resume= on that dir, and quiet progress bars in
logs. The first command itself (the real 0.5B model, ~5 min) runs in .ci/run; here its path runs on the tiny model."""

from __future__ import annotations

import json
import os
import runpy
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = runpy.run_path(str(ROOT / ".ci" / "quickstart.py"))


def _main_args(command: str) -> list[str]:
    """The ``python -m ieta.main`` overrides of a README command line."""
    words = shlex.split(command.split("&&")[-1])
    assert words[:3] == ["python", "-m", "ieta.main"], command
    return words[3:]


def test_quick_start_has_the_install_and_run_commands_ci_runs():
    first, second = QUICKSTART["readme_commands"](ROOT / "README.md", "Quick start")
    assert first.startswith('pip install torch==2.13.0 -e ".[dev]" && python -m ieta.main ')
    assert second == 'pip install torch==2.13.0 -e ".[dev]" && python -m pytest'
    args = _main_args(first)
    assert "method=dpo" in args and not any(a.startswith(("hydra.run.dir", "resume=")) for a in args)
    assert 'quickstart.py commands README.md "Quick start"' in (ROOT / ".ci" / "run").read_text()


def test_the_first_command_path_writes_the_default_run_dir_and_resumes_there(tmp_path):
    """The Quick start's overrides, shrunk to the tiny model, from a fresh working dir: the run lands in
    outputs/<date>/<time>_dpo/, CI's check accepts it, and resume=<that dir> continues in place."""
    first, _ = QUICKSTART["readme_commands"](ROOT / "README.md", "Quick start")
    args = [*_main_args(first), *TINY]
    since = time.time() - 1
    proc = subprocess.run([sys.executable, "-m", "ieta.main", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    [run_dir] = QUICKSTART["new_run_dirs"](tmp_path / "outputs", since, "dpo")
    assert "pass@1=" in QUICKSTART["check_run"](run_dir)
    metrics = (run_dir / "metrics.json").read_text()

    proc = subprocess.run([sys.executable, "-m", "ieta.main", *args, f"resume={run_dir}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [p for p in (tmp_path / "outputs").glob("*/*")] == [run_dir], "resume= made a new run dir"
    assert (run_dir / "metrics.json").read_text() == metrics
    assert f"run dir: {run_dir}" in proc.stdout + proc.stderr


def test_ci_check_fails_on_an_unfinished_run(tmp_path):
    run_dir = tmp_path / "outputs" / "2026-01-01" / "12-00-00_dpo"
    run_dir.mkdir(parents=True)
    (run_dir / "run_info.json").write_text(json.dumps({"num_iterations": 1, "config": {"method": {"train": True}}}))
    (run_dir / "metrics.json").write_text(json.dumps([{"iteration": 0, "pass@1": 0.5, "execution_rate": 0.9}]))
    proc = subprocess.run([sys.executable, str(ROOT / ".ci" / "quickstart.py"), "check", str(run_dir)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "expected [0, 1]" in proc.stderr and "no adapter iter_1/adapter" in proc.stderr


def test_progress_bars_redraw_at_most_every_few_seconds_when_stderr_is_not_a_terminal(tmp_path):
    """ieta.main sets tqdm's TQDM_MININTERVAL default before tqdm is imported, for our bars and TRL's alike; a
    value the user set stays."""
    probe = ("import io, ieta.main; from tqdm.auto import tqdm; "
             "print(tqdm(total=1, file=io.StringIO()).mininterval)")
    env = {k: v for k, v in os.environ.items() if k != "TQDM_MININTERVAL"}
    with open(tmp_path / "log", "w") as log:  # stderr is a file, as under nohup or CI
        out = subprocess.run([sys.executable, "-c", probe], stderr=log, capture_output=False, stdout=subprocess.PIPE,
                             text=True, env=env, check=True).stdout
    assert float(out) >= 5
    with open(tmp_path / "log", "w") as log:
        out = subprocess.run([sys.executable, "-c", probe], stderr=log, stdout=subprocess.PIPE, text=True,
                             env=env | {"TQDM_MININTERVAL": "0.5"}, check=True).stdout
    assert float(out) == 0.5
