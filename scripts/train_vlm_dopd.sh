#!/usr/bin/env bash
# DOPD training of a VLM. No CONFIG: the paper's Qwen3-VL-8B -> 2B recipe where CUDA is available, else the
# offline demo (configs/demo/vlm_demo.yaml); the script says which.
# Usage: bash scripts/train_vlm_dopd.sh [CONFIG.yaml] [key=value ...]
#   e.g. bash scripts/train_vlm_dopd.sh configs/demo/vlm_demo.yaml max_steps=2
#   NPROC_PER_NODE=8 bash scripts/train_vlm_dopd.sh          # 8 GPUs, DeepSpeed from the config's `deepspeed:` key
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/_launch.sh"
dopd_launch train "$here/../configs/recipes/qwen3vl_8b_to_2b_dopd.yaml" "$here/../configs/demo/vlm_demo.yaml" "$@"
