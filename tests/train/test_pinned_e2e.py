"""A pinned end-to-end run: two CPU optimizer steps of the `dopd` stage on tiny qwen2 (student and teacher from the
tiny builders, the bundled `llm_demo` data, seed 0), through `run_train` as `dopd-cli train` runs it.

The logged loss and per-regime token fractions of both steps are compared with stored values. Everything on the
way is deterministic on CPU (the tiny models' weights come from a fixed seed, the Trainer seeds sampling), so these
numbers move only when what the pipeline computes moves: prompt rendering, the rollout (what is sampled and how it
is cut), scoring and the alignment of the three views' tokens, the routing thresholds, or the loss. A refactor must
leave them exactly where they are. A change that moves them changes the pipeline, and must say so, and why, in its
commit message, together with the new values; do not re-pin to make a refactor pass.
"""

import json
import os
from pathlib import Path

import pytest

from dopd.hparams import parse_config
from dopd.train.workflow import run_train

REPO = Path(__file__).resolve().parents[2]

# (loss, {regime: token fraction}) of steps 1 and 2, as logged to trainer_log.jsonl; pinned 2026-11-29
PINNED = [
    (0.004722115583717823, {"HT": 7 / 32, "HS": 11 / 32, "LH": 7 / 32, "LL": 7 / 32}),  # 32 response tokens
    (0.0058273375034332275, {"HT": 4 / 27, "HS": 8 / 27, "LH": 10 / 27, "LL": 5 / 27}),  # 27 response tokens
]
LOSS_REL = 1e-4
FRAC_ABS = 1e-6


def pinned_config(tmp_path):
    # every setting the numbers depend on is written here, not inherited from another test's helper
    settings = {
        "stage": "dopd",
        "model_name_or_path": "tiny:qwen2:student",
        "teacher_model_name_or_path": "tiny:qwen2:teacher",
        "dataset": "llm_demo",
        "dataset_dir": str(REPO / "data"),
        "max_samples": 8,
        "cutoff_len": 1024,
        "num_generations": 2,
        "max_new_tokens": 8,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "seed": 0,
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "dataloader_num_workers": 0,
        "logging_steps": 1,
        "save_steps": 100,
        "plot_loss": False,
        "report_to": "none",
        "disable_tqdm": True,
        "output_dir": str(tmp_path / "out"),
    }
    return parse_config(None, [f"{key}={value}" for key, value in settings.items()])


def test_two_dopd_steps_match_pinned_values(tmp_path):
    cfg = pinned_config(tmp_path)
    run_train(cfg)
    with open(os.path.join(cfg.training.output_dir, "trainer_log.jsonl"), encoding="utf-8") as fh:
        steps = [record for record in map(json.loads, fh) if "loss" in record]
    observed = [(r["loss"], {regime: r.get(f"dopd/{regime}/token_frac", 0.0) for regime in PINNED[0][1]})
                for r in steps]
    assert [r["step"] for r in steps] == [1, 2], observed
    assert [r["dopd/num_tokens"] for r in steps] == [32, 27], observed  # the rollouts' response tokens
    for step, ((loss, fractions), (want_loss, want_fractions)) in enumerate(zip(observed, PINNED), start=1):
        assert loss == pytest.approx(want_loss, rel=LOSS_REL), f"step {step}: observed {observed}"
        for regime, want in want_fractions.items():
            assert fractions[regime] == pytest.approx(want, abs=FRAC_ABS), f"step {step} {regime}: observed {observed}"
