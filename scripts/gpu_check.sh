#!/usr/bin/env bash
# The GPU checks of issue 19 in one run, on a lent CUDA machine (not yet run: no GPU has been lent since it was
# written). Real architectures with random weights (model=random / --shape): the embedded weights cannot travel.
#   bash scripts/gpu_check.sh          # writes every table and log to $OUT (default: ./gpu_check_out)
# Needs the project installed there (pip install --no-index --find-links <wheels> -e ".[dev]") and CUDA torch.
# Budget: about 8 minutes on an H200; each step has its own timeout so one slow step cannot eat the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
export WANDB_MODE=offline HF_HUB_OFFLINE=1
status=0
step() {  # step NAME TIMEOUT_S COMMAND...: run, log to $OUT/NAME.log, record wall time and exit code
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "| $name | $rc | $((SECONDS - start)) s | \`$*\` |" >>"$OUT/steps.md"
  [ "$rc" -eq 0 ] || status=1
}
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -l 1 >"$OUT/gpu_memory.csv" 2>/dev/null &
smi=$!
trap 'kill $smi 2>/dev/null' EXIT
echo "| step | rc | wall | command |" >"$OUT/steps.md"
echo "|---|---|---|---|" >>"$OUT/steps.md"
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" >"$OUT/device.txt" 2>&1

# sampling: our sampler, HF generate batched, transformers' generate_batch; same workload at each size
for shape in qwen2.5-0.5b qwen2.5-1.5b qwen2.5-7b; do
  step "sample_$shape" 150 python -m ieta.bench sample --shape "$shape" --references hf,cb
done
# training steps in bf16 with LoRA: DPO and GRPO at 0.5B and 7B
for shape in qwen2.5-0.5b qwen2.5-7b; do
  step "train_dpo_$shape" 120 python -m ieta.bench train --only-ieta --steps 3 model=random "model.random_init.shape=$shape"
  step "train_grpo_$shape" 120 python -m ieta.bench train --method grpo --problems 4 model=random "model.random_init.shape=$shape"
done
# ZeRO-3 at 7B in one process: the pipeline's accelerate launch of the training stage
step zero3_7b 150 python -m ieta.main model=random model.random_init.shape=qwen2.5-7b experiment=quick method=dpo \
  dataset.limit=4 sampler.max_new_tokens=64 iteration.steps_per_iteration=2 accelerate=zero3 accelerate.num_processes=1 \
  "hydra.run.dir=$OUT/zero3_7b"
# one iteration of the pipeline at 1.5B: dpo and interactive
for method in dpo interactive; do
  step "pipeline_${method}_1.5b" 150 python -m ieta.main model=random model.random_init.shape=qwen2.5-1.5b \
    experiment=quick "method=$method" dataset.limit=8 sampler.max_new_tokens=128 "hydra.run.dir=$OUT/pipeline_$method"
done
cat "$OUT/steps.md"
exit $status
