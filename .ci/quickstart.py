"""The README's Quick start, for CI (.ci/run) and tests/test_quickstart.py:

    python .ci/quickstart.py commands README.md "Quick start"   # its commands, one per line, as written
    python .ci/quickstart.py run-dir <since-file> <method>      # the run dir the first command made
    python .ci/quickstart.py check <run_dir>                    # that run finished: metrics.json, run_info.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

#: the default run dir of ``python -m ieta.main`` (conf/config.yaml: outputs/<date>/<time>_<method>)
RUN_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}_(?P<method>[\w-]+)$")


def readme_commands(readme: Path, heading: str) -> list[str]:
    """The non-blank, non-comment lines of the first ```bash block in section ``## <heading>``."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    try:
        start = lines.index(f"## {heading}") + 1
    except ValueError:
        raise SystemExit(f"{readme}: no '## {heading}' section") from None
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    section = lines[start:end]
    try:
        fence = section.index("```bash") + 1
        close = section.index("```", fence)
    except ValueError:
        raise SystemExit(f"{readme}: no ```bash block under '## {heading}'") from None
    return [line.strip() for line in section[fence:close] if line.strip() and not line.strip().startswith("#")]


def new_run_dirs(outputs: Path, since: float, method: str) -> list[Path]:
    """Default-named run dirs of ``method`` under ``outputs`` created after ``since`` (a timestamp)."""
    return sorted(d for d in outputs.glob("*/*") if d.is_dir() and d.stat().st_mtime >= since
                  and (m := RUN_DIR.match(d.relative_to(outputs).as_posix())) and m["method"] == method)


def check_run(run_dir: Path) -> str:
    """Raise ``SystemExit`` unless ``run_dir`` holds a finished run: one metrics record per evaluation (initial +
    each iteration) with pass@1 and execution rate in [0, 1], and, for a method that trains, each adapter."""
    info = json.loads((run_dir / "run_info.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    iterations = list(range(info["num_iterations"] + 1))
    problems = []
    if [r["iteration"] for r in metrics] != iterations:
        problems.append(f"metrics.json has iterations {[r['iteration'] for r in metrics]}, expected {iterations}")
    for r in metrics:
        for key in ("pass@1", "execution_rate"):
            if not (isinstance(r.get(key), (int, float)) and 0 <= r[key] <= 1):
                problems.append(f"iteration {r['iteration']}: {key}={r.get(key)!r}")
    if info["config"]["method"]["train"]:
        problems += [f"no adapter iter_{k}/adapter" for k in iterations[1:]
                     if not (run_dir / f"iter_{k}" / "adapter" / "adapter_config.json").is_file()]
    if problems:
        raise SystemExit(f"{run_dir}: " + "; ".join(problems))
    return f"{run_dir}: " + ", ".join(f"iteration {r['iteration']} pass@1={r['pass@1']:.3f}" for r in metrics)


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["commands", readme, heading]:
            print("\n".join(readme_commands(Path(readme), heading)))
        case ["run-dir", since, method]:
            dirs = new_run_dirs(Path("outputs"), Path(since).stat().st_mtime, method)
            if len(dirs) != 1:
                raise SystemExit(f"expected one new outputs/<date>/<time>_{method} run dir, found {dirs}")
            print(dirs[0])
        case ["check", run_dir]:
            print(check_run(Path(run_dir)))
        case _:
            raise SystemExit(__doc__)
