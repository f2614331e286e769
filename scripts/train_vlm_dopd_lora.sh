#!/usr/bin/env bash
# DOPD with LoRA on one GPU (default: Qwen3-VL-8B -> 2B, bf16, gradient checkpointing).
# Usage: bash scripts/train_vlm_dopd_lora.sh [CONFIG.yaml] [key=value ...]
#   e.g. bash scripts/train_vlm_dopd_lora.sh configs/demo/vlm_demo.yaml max_steps=2
#   NPROC_PER_NODE=8 bash scripts/train_vlm_dopd_lora.sh          # 8 GPUs, DeepSpeed from the config's `deepspeed:` key
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
dopd_launch train "$(dirname "${BASH_SOURCE[0]}")/../configs/recipes/qwen3vl_8b_to_2b_dopd_lora.yaml" "$@"
