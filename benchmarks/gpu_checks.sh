#!/usr/bin/env bash
# GPU checks (bf16, DeepSpeed on the GPU) on tiny models, through the same scripts users run.
# Usage: bash benchmarks/gpu_checks.sh OUT_DIR      (figures and logs land in OUT_DIR)
set -uo pipefail
out="${1:?usage: gpu_checks.sh OUT_DIR}"; mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 DOPD_TINY_DIR="${DOPD_TINY_DIR:-/tmp/dopd_tiny}"
status=0
run() {  # run NAME COMMAND...: log to OUT/NAME.log, print the last lines and the exit code
  local name="$1"; shift
  local start=$SECONDS
  "$@" > "$out/$name.log" 2>&1; local rc=$?
  echo "== $name: exit $rc in $((SECONDS - start)) s"; grep -E "finished at step|Error|error:" "$out/$name.log" | tail -n 3
  [[ $rc -eq 0 ]] || status=1
}
python3 -m dopd env > "$out/env.txt" 2>&1; grep -E "torch|transformers|deepspeed|gpus|cuda" "$out/env.txt"
common=(use_cpu=false bf16=true torch_dtype=bfloat16 max_steps=6 save_steps=3)
run vlm_bf16 bash scripts/train_vlm_dopd.sh configs/demo/vlm_demo.yaml "${common[@]}" output_dir=/tmp/gpu_vlm
run llm_bf16_lora bash scripts/train_llm_dopd.sh configs/demo/llm_demo.yaml "${common[@]}" finetuning_type=lora output_dir=/tmp/gpu_lora
run llm_z2 bash scripts/train_llm_dopd.sh configs/demo/llm_demo.yaml "${common[@]}" deepspeed=configs/deepspeed/ds_z2_config.json output_dir=/tmp/gpu_z2
run vlm_z3 bash scripts/train_vlm_dopd.sh configs/demo/vlm_demo.yaml "${common[@]}" deepspeed=configs/deepspeed/ds_z3_config.json output_dir=/tmp/gpu_z3
run resume_vlm bash scripts/train_vlm_dopd.sh configs/demo/vlm_demo.yaml "${common[@]}" max_steps=8 output_dir=/tmp/gpu_vlm resume_from_checkpoint=true
for d in gpu_vlm gpu_lora gpu_z2 gpu_z3; do tail -n 2 /tmp/$d/trainer_log.jsonl | head -n 1 | cut -c1-400; done
exit $status
