"""Helpers of the synthetic-model benchmarks (bench_step, bench_rollout, bench_trl, bench_objective), one job a module:

- `cli`: the arguments the scripts share, torch setup, the scratch folder, the student / teacher pair they describe
- `models`: a random-init Qwen2 / Qwen2-VL model of a given width and depth, saved so `load_adapter` works
- `data`: in-memory prompts, fixed-length answers, images and `CanonicalSample`s
- `trainers`: the config and the `DOPDTrainer` (through `dopd.train.workflow.build_trainer`), fixed-length rollouts
- `measure`: wall and CPU time, peak memory, a case in a fresh process, mean / median
- `report`: the environment, Markdown tables, verdicts, the JSON results file

Importing any of them makes the hub offline: the benchmarks build every model from a config, nothing is downloaded.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
