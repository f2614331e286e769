#!/usr/bin/env bash
# DOPD training of a VLM (default: the paper's Qwen3-VL-8B -> 2B recipe).
# Usage: bash scripts/train_vlm_dopd.sh [CONFIG.yaml] [key=value ...]
#   e.g. bash scripts/train_vlm_dopd.sh configs/demo/vlm_demo.yaml max_steps=2
#   NPROC_PER_NODE=8 bash scripts/train_vlm_dopd.sh          # 8 GPUs, DeepSpeed from the config's `deepspeed:` key
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
dopd_launch train "$(dirname "${BASH_SOURCE[0]}")/../configs/recipes/qwen3vl_8b_to_2b_dopd.yaml" "$@"
