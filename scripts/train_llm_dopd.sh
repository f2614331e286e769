#!/usr/bin/env bash
# DOPD training of a text LLM. No CONFIG: the paper's Qwen3-8B -> 1.7B recipe where CUDA is available, else the
# offline demo (configs/demo/llm_demo.yaml); the script says which.
# Usage: bash scripts/train_llm_dopd.sh [CONFIG.yaml] [key=value ...]
#   e.g. bash scripts/train_llm_dopd.sh configs/demo/llm_demo.yaml max_steps=2
#   NPROC_PER_NODE=8 bash scripts/train_llm_dopd.sh          # 8 GPUs, DeepSpeed from the config's `deepspeed:` key
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/_launch.sh"
dopd_launch train "$here/../configs/recipes/qwen3_8b_to_1.7b_dopd.yaml" "$here/../configs/demo/llm_demo.yaml" "$@"
