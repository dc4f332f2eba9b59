"""Results reporting: per-run and per-sweep ``summary.md`` with seaborn figures, rebuilt from files on disk.

Reads the run-dir contract: ``run_info.json``, ``metrics.json`` (one record per evaluation, iteration 0
first), ``iter_<k>/train_log.jsonl`` and ``.hydra/overrides.yaml``, plus the per-problem results, pair, judge and
canary statistics it keeps in ``report_inputs.json`` (``ieta.report.inputs``), so the committed files alone
rebuild the summary. Comparisons are paired (``ieta.report.paired``, ``ieta.stats``). A sweep dir is any dir whose
subdirs hold such run dirs (a Hydra multirun dir). ``python -m ieta.report DIR`` rebuilds either.
"""

from ieta.report.run import write_run_report
from ieta.report.sweep import write_sweep_report

__all__ = ["write_run_report", "write_sweep_report"]
