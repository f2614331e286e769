"""Benchmarks and experiments, run from the repo root as `python -m benchmarks.<name>` (the `dopd` package installed).

- `bench_objective`, `bench_step`, `bench_rollout`, `bench_trl`: speed and memory on random-init models of the real
  architectures; their shared helpers are in `benchmarks.lib`
- `real_pair` (+ `real_pair_report`): real Qwen2.5-Coder weights, teacher 1.5B -> student 0.5B, on CPU
- `privilege_illusion`: the tiny-model testbed of the paper's premise
"""
