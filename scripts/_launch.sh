#!/usr/bin/env bash
# Shared launcher for the train_*.sh scripts:
#   `dopd_launch SUBCOMMAND RECIPE_CONFIG DEMO_CONFIG [CONFIG.yaml] [key=value ...]`
# Without CONFIG.yaml: RECIPE_CONFIG (the paper's recipe, bf16 on GPUs) where torch sees CUDA, else DEMO_CONFIG (the
# offline CPU demo), said in one line. Environment: NPROC_PER_NODE (default: visible GPUs, 1 without CUDA), NNODES
# (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), MASTER_PORT (29500). On a GPU machine, or with more than one process
# in all -> torchrun (DeepSpeed is configured by the `deepspeed:` key of the YAML and needs a launcher even on one
# GPU); else a plain process.
set -euo pipefail

dopd_launch() {
  local subcommand="$1" recipe_config="$2" demo_config="$3"; shift 3
  local config
  if [[ $# -gt 0 && "$1" != *=* ]]; then
    config="$1"; shift
  elif [[ "$recipe_config" == "$demo_config" ]]; then
    config="$recipe_config"
  elif python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    config="$recipe_config"
    echo "no config given: CUDA is available, so the paper's recipe $recipe_config"
  else
    config="$demo_config"
    echo "no config given and no CUDA GPU (the paper's recipe $recipe_config needs bf16 GPUs): the offline demo $demo_config"
  fi
  if [[ ! -f "$config" ]]; then echo "config not found: $config" >&2; exit 2; fi

  local gpus=0
  if command -v nvidia-smi >/dev/null 2>&1; then gpus=$(nvidia-smi -L 2>/dev/null | wc -l || echo 0); fi
  if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then gpus=$(awk -F, '{print NF}' <<<"$CUDA_VISIBLE_DEVICES"); fi
  local nproc="${NPROC_PER_NODE:-$(( gpus > 0 ? gpus : 1 ))}"
  local nnodes="${NNODES:-1}" node_rank="${NODE_RANK:-0}"
  local master_addr="${MASTER_ADDR:-127.0.0.1}" master_port="${MASTER_PORT:-29500}"

  local cmd
  if (( nproc * nnodes > 1 || gpus > 0 )); then
    cmd=(torchrun --nnodes "$nnodes" --node_rank "$node_rank" --nproc_per_node "$nproc"
         --master_addr "$master_addr" --master_port "$master_port" -m dopd "$subcommand" "$config" "$@")
  else
    cmd=(python -m dopd "$subcommand" "$config" "$@")
  fi
  echo "+ ${cmd[*]}"
  exec "${cmd[@]}"
}
