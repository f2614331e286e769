#!/usr/bin/env bash
# The GPU benchmark set of issue 12 in one run, in priority order, inside one time budget:
#   0. step_vlm    : the one figure still NOT met on the H200 (2026-12-04): VLM DOPD / vanilla OPD step at GA 4
#                    (1.39x), step scope only, with its rollout / scoring / update split
#   1. bench_trl   : TRL's DistillationTrainer against ours at equal work (pure bf16), peak memory and step time
#   2. bench_step  : DOPD / vanilla OPD step, GA 4, routing scope step against micro_batch (text and VLM)
#   3. bench_rollout --step-compare : one rollout per optimizer step against one per micro-batch (text and VLM)
#   4. bench_rollout sweep, VLM rows (tokens/s by prompts x G)
#   5. bench_rollout --hf-options --compile : transformers' own batched-sampling options
# Each part gets at most its own limit and never runs past the budget, so the figures of the parts that finished
# always come back: results and logs land in OUT_DIR (and OUT_DIR.tgz).
#
# Measured on an H200 (docs/benchmarks.md): trl ~45 s per framework incl. setup, step ~30 s per variant; the whole
# set needs ~15 minutes. With less, pick parts: PARTS=step_vlm,trl (names: step_vlm trl step rollout_step rollout_vlm
# hf_options).
#
# Usage: [PARTS=a,b] bash benchmarks/gpu_benchmarks.sh OUT_DIR [BUDGET_SECONDS]
# Dry run of the same commands on the CPU with toy shapes (checks the script, not the figures):
#   BENCH_DEVICE=cpu BENCH_SHAPE="--hidden 64 --layers 1 --teacher-hidden 64 --teacher-layers 1 --max-new-tokens 4" \
#       bash benchmarks/gpu_benchmarks.sh /tmp/gpu_dry 900
set -uo pipefail
out="${1:?usage: gpu_benchmarks.sh OUT_DIR [BUDGET_SECONDS]}"; mkdir -p "$out"
budget="${2:-540}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
dev=(--device "${BENCH_DEVICE:-cuda}" --dtype bfloat16)
read -r -a shape <<< "${BENCH_SHAPE:-}"
py="${PYTHON:-python3}"

parts=",${PARTS:-step_vlm,trl,step,rollout_step,rollout_vlm,hf_options},"

part() {  # part NAME LIMIT_S COMMAND...: run with min(LIMIT_S, what is left of the budget), log to OUT/NAME.log
  local name="$1" limit="$2"; shift 2
  [[ "$parts" == *",$name,"* ]] || return 0
  local left=$((budget - SECONDS - 20))
  (( left < limit )) && limit=$left
  if (( limit < 30 )); then echo "== $name: skipped (budget spent)"; return; fi
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1; local rc=$?
  echo "== $name: exit $rc in $((SECONDS - start)) s (limit $limit s)"
  grep -vE "^\s*$|it/s\]|s/it\]|Warning|warn\(" "$out/$name.log" | tail -n 40
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$py" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  "$py" -c "import trl, peft, datasets; print('trl', trl.__version__, 'peft', peft.__version__, 'datasets', datasets.__version__)"
  lscpu | grep -m1 "Model name"; } > "$out/env.txt" 2>&1
cat "$out/env.txt"

part step_vlm 120 "$py" -m benchmarks.bench_step "${dev[@]}" "${shape[@]}" --families vlm \
    --stages vanilla_opd,dopd --accumulation 4 --scopes step --chunk-size 256 --steps 2 \
    --out "$out/bench_step_ga4_vlm.json"
part trl 260 "$py" -m benchmarks.bench_trl "${dev[@]}" "${shape[@]}" \
    --frameworks trl,vanilla_opd,vanilla_opd_full_rkl,dopd,vanilla_opd_full_rkl_fp32_master --steps 3 \
    --out "$out/bench_trl.json"
part step 280 "$py" -m benchmarks.bench_step "${dev[@]}" "${shape[@]}" --families text,vlm \
    --stages vanilla_opd,dopd --accumulation 4 --scopes step,micro_batch --chunk-size 256 --steps 2 \
    --out "$out/bench_step_ga4.json"
part rollout_step 100 "$py" -m benchmarks.bench_rollout "${dev[@]}" "${shape[@]}" --step-compare \
    --families text,vlm --out "$out/bench_rollout_step.json"
part rollout_vlm 120 "$py" -m benchmarks.bench_rollout "${dev[@]}" "${shape[@]}" --families vlm \
    --batch-sizes 1,4,16 --num-generations 1,4,8 --repeats 1 --out "$out/bench_rollout_vlm.json"
part hf_options 150 "$py" -m benchmarks.bench_rollout "${dev[@]}" "${shape[@]}" --hf-options --compile \
    --out "$out/bench_rollout_hf_options.json"
tar czf "$out.tgz" -C "$(dirname "$out")" "$(basename "$out")" && echo "== packed $out.tgz"
