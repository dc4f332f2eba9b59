#!/usr/bin/env bash
# Compare methods in one Hydra multirun; extra overrides pass through, e.g. ./multirun.sh experiment=quick logger=wandb
# The sweep dir is SWEEP_DIR if set, else multirun/<date>/<time>; ieta.callbacks.ComparisonCallback writes its summary.
# METHODS picks the methods (default baseline,dpo,rlaif), e.g. METHODS=baseline,dpo,rlaif,sft ./multirun.sh ...
set -euo pipefail
cd "$(dirname "$0")"
sweep_dir="${SWEEP_DIR:-multirun/$(date +%Y-%m-%d)/$(date +%H-%M-%S)}"
python -m ieta.main -m method="${METHODS:-baseline,dpo,rlaif}" hydra.sweep.dir="$sweep_dir" "$@"
echo "Sweep summary: $sweep_dir/summary.md (rebuild it with: python -m ieta.report $sweep_dir)"
