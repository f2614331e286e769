#!/usr/bin/env bash
# DOPD with LoRA (finetuning_type=lora whatever the config says). No CONFIG: Qwen3-VL-8B -> 2B on one GPU (bf16,
# gradient checkpointing) where CUDA is available, else the offline LoRA demo (configs/demo/vlm_demo_lora.yaml).
# Usage: bash scripts/train_vlm_dopd_lora.sh [CONFIG.yaml] [key=value ...]
#   e.g. bash scripts/train_vlm_dopd_lora.sh configs/demo/vlm_demo_lora.yaml max_steps=2
#   NPROC_PER_NODE=8 bash scripts/train_vlm_dopd_lora.sh          # 8 GPUs, DeepSpeed from the config's `deepspeed:` key
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/_launch.sh"
for arg in "$@"; do
  if [[ "$arg" == finetuning_type=* && "$arg" != finetuning_type=lora ]]; then
    echo "train_vlm_dopd_lora.sh trains LoRA: drop '$arg' (full / freeze: scripts/train_vlm_dopd.sh)" >&2; exit 2
  fi
done
# the override comes last, so it wins over the config's `finetuning_type` (the demo configs say `full`)
dopd_launch train "$here/../configs/recipes/qwen3vl_8b_to_2b_dopd_lora.yaml" "$here/../configs/demo/vlm_demo_lora.yaml" \
  "$@" finetuning_type=lora
