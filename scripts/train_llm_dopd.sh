#!/usr/bin/env bash
# DOPD training of a text LLM (default: the paper's Qwen3-8B -> 1.7B recipe).
# Usage: bash scripts/train_llm_dopd.sh [CONFIG.yaml] [key=value ...]
#   e.g. bash scripts/train_llm_dopd.sh configs/demo/vlm_demo.yaml max_steps=2
#   NPROC_PER_NODE=8 bash scripts/train_llm_dopd.sh          # 8 GPUs, DeepSpeed from the config's `deepspeed:` key
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
dopd_launch train "$(dirname "${BASH_SOURCE[0]}")/../configs/recipes/qwen3_8b_to_1.7b_dopd.yaml" "$@"
