#!/usr/bin/env bash
# Evaluate a model on registry datasets, deployed (without privileged information) by default.
# Usage: bash scripts/eval.sh [CONFIG.yaml] [key=value ...]   (no CONFIG: the offline VLM demo, configs/demo/vlm_demo.yaml)
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"
cfg="$(dirname "${BASH_SOURCE[0]}")/../configs/demo/vlm_demo.yaml"
dopd_launch eval "$cfg" "$cfg" "$@"
