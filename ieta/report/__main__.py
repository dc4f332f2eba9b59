"""``python -m ieta.report <run_or_sweep_dir>``: rebuild summaries and figures without running anything."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ieta.report import write_run_report, write_sweep_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ieta.report", description=__doc__)
    parser.add_argument("path", type=Path, help="a run dir (holds metrics.json) or a sweep dir (holds job dirs)")
    parser.add_argument("--against", metavar="METHOD", default=None,
                        help="sweep dirs: compare every method with this one (a method name or job label; "
                             "default: baseline)")
    args = parser.parse_args(argv)
    if not args.path.is_dir():
        parser.error(f"{args.path} is not a directory")
    try:
        is_run = (args.path / "metrics.json").is_file()
        if is_run and args.against:
            parser.error("--against compares the methods of a sweep dir; a run dir is compared with its initial "
                         "evaluation")
        out = write_run_report(args.path) if is_run else write_sweep_report(args.path, against=args.against)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
