"""The trainer a benchmark measures: a `DOPDConfig` as `dopd-cli train` parses it, the `DOPDTrainer` from
`dopd.train.workflow.build_trainer` (the builder `run_train` uses), fixed-length rollouts, no per-step printing."""

from __future__ import annotations

import argparse
import os
from typing import Any, Optional, Sequence

from benchmarks.lib.cli import workdir


def dopd_config(args: argparse.Namespace, stage: str, student_dir: str, teacher_dir: Optional[str],
                batch_size: int, num_generations: int, max_new_tokens: int, max_steps: int,
                **extra: Any) -> Any:
    """A `DOPDConfig` as `dopd-cli train` would parse it (the dataset is given in memory instead)."""
    from dopd.hparams.parser import parse_config_dict

    cfg = {
        "model_name_or_path": student_dir, "stage": stage, "num_generations": num_generations,
        "max_new_tokens": max_new_tokens, "temperature": 1.0, "cutoff_len": 4096,
        "output_dir": os.path.join(workdir(args), f"out-{stage}"), "per_device_train_batch_size": batch_size,
        "max_steps": max_steps, "logging_steps": 1, "save_strategy": "no", "learning_rate": 1e-5,
        "report_to": "none", "use_cpu": not args.device.startswith("cuda"), "seed": args.seed,
        "disable_tqdm": True, "plot_loss": False, "bf16": False, "fp16": False, "dataloader_num_workers": 0,
        "image_max_pixels": 224 * 224, "image_min_pixels": 56 * 56, "torch_dtype": args.dtype,
    }
    if teacher_dir:
        cfg["teacher_model_name_or_path"] = teacher_dir
    cfg.update(extra)
    return parse_config_dict(cfg)


def make_dopd_trainer(cfg: Any, student: Any, teacher: Optional[Any], samples: Sequence[Any]) -> Any:
    """`DOPDTrainer` from `dopd.train.workflow.build_trainer`, the function `run_train` builds it with (models given
    in memory instead of loaded; the adapters come from the saved config/tokenizer folders)."""
    from dopd.train.workflow import build_trainer

    return build_trainer(cfg, list(samples), student=student, teacher=teacher)


def fixed_length_rollouts(adapter: Any) -> None:
    """Make `adapter.generate` produce exactly `max_new_tokens` tokens per answer: `min_new_tokens =
    max_new_tokens` (transformers masks every stop token until then), so every step and every stage does the
    same work whatever the random model samples. Patches this adapter instance only."""
    original = adapter.generate

    def generate(model: Any, batch: dict, **gen_kwargs: Any) -> list[list[int]]:
        if "max_new_tokens" in gen_kwargs:
            gen_kwargs.setdefault("min_new_tokens", gen_kwargs["max_new_tokens"])
        return original(model, batch, **gen_kwargs)

    adapter.generate = generate


def quiet(trainer: Any) -> None:
    """No per-step log dicts printed to stdout (the benchmark prints its own table)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
