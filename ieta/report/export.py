"""``python -m ieta.report.export <sweep_dir> <dest>``: a sweep's report without its samples, for a repository.

Copies, per job, the files a report is rebuilt from (``metrics.json``, ``run_info.json``, ``report_inputs.json``,
``.hydra/``) and the sweep's ``multirun.yaml``, then rebuilds every summary, figure and ``comparison.csv`` at
``dest`` from those files alone. ``python -m ieta.report <dest>`` later gives the same ``summary.md`` (tested on
``tests/fixtures/report_sweep``). Samples, executions, adapters, W&B runs and the sweep's shared store stay behind.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ieta.report.inputs import INPUTS_FILE
from ieta.report.loading import find_job_dirs
from ieta.report.sweep import write_sweep_report

#: per job: what the report is rebuilt from
JOB_FILES = ("metrics.json", "run_info.json", INPUTS_FILE, ".hydra/overrides.yaml", ".hydra/config.yaml")
SWEEP_FILES = ("multirun.yaml",)


def export(sweep_dir: Path, dest: Path) -> Path:
    """Copy ``sweep_dir``'s report inputs to ``dest`` (which must not hold jobs yet) and rebuild its report there;
    returns the sweep ``summary.md``."""
    sweep_dir, dest = Path(sweep_dir), Path(dest)
    jobs = find_job_dirs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir} holds no job dir with a metrics.json")
    missing = [str(j / INPUTS_FILE) for j in jobs if not (j / INPUTS_FILE).is_file()]
    if missing:
        raise FileNotFoundError(f"not finished (no {INPUTS_FILE}): {', '.join(missing)}")
    if dest.exists() and find_job_dirs(dest):
        raise FileExistsError(f"{dest} already holds jobs; export into a new dir")
    for job in jobs:
        for name in JOB_FILES:
            src = job / name
            if src.is_file():
                target = dest / job.relative_to(sweep_dir) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
    for name in SWEEP_FILES:
        if (sweep_dir / name).is_file():
            shutil.copyfile(sweep_dir / name, dest / name)
    return write_sweep_report(dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ieta.report.export", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a finished sweep dir (./multirun.sh's SWEEP_DIR)")
    parser.add_argument("dest", type=Path, help="where the report goes, e.g. results/humaneval-standard")
    args = parser.parse_args(argv)
    try:
        print(export(args.sweep_dir, args.dest))
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
