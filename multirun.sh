#!/usr/bin/env bash
# Compare methods in one Hydra multirun; extra overrides pass through, e.g. ./multirun.sh experiment=quick
# The sweep dir is SWEEP_DIR if set, else multirun/<date>/<time>; ieta.callbacks.ComparisonCallback writes its summary.
# METHODS picks the methods (default baseline,dpo,rlaif), e.g. METHODS=baseline,dpo,rlaif,sft ./multirun.sh ...
# Logs to W&B by default (logger=wandb): online when W&B finds a login (WANDB_API_KEY, or `wandb login`), else
# offline into each job's dir; WANDB_MODE decides when set; logger=none (or any logger=...) overrides it.
set -euo pipefail
cd "$(dirname "$0")"
sweep_dir="${SWEEP_DIR:-multirun/$(date +%Y-%m-%d)/$(date +%H-%M-%S)}"
# logger=wandb comes first: a later logger=... among the arguments wins
# share_dir: the jobs of one seed reuse the untrained policy's stages (ieta/share.py)
python -m ieta.main -m method="${METHODS:-baseline,dpo,rlaif}" logger=wandb hydra.sweep.dir="$sweep_dir" \
  share_dir="$sweep_dir/shared" "$@"
echo "Sweep summary: $sweep_dir/summary.md (rebuild it with: python -m ieta.report $sweep_dir)"
