"""`dopd-cli train`: config -> validated data -> models -> the stage's trainer -> checkpoints, logs and plots.

Everything a user can get wrong (config keys, data, model compatibility) is checked before the first step, and
data problems before any model is loaded.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from accelerate import PartialState
from transformers import PreTrainedModel
from transformers.trainer_utils import enable_full_determinism, set_seed

import dopd.model  # load_adapter / load_model are looked up at call time: a test stands in for them
from dopd.data import CanonicalSample, load_and_validate
from dopd.distill import DOPDLossConfig
from dopd.hparams import ConfigError, DOPDConfig, parse_config
from dopd.model import apply_finetuning, check_compatibility
from dopd.model.adapters.base import ModelAdapter
from dopd.model.check_data import privilege_required
from dopd.model.loader import freeze_model
from dopd.model.paths import resolve_model_path
from dopd.train.base_trainer import BaseTrainer
from dopd.train.callbacks import use_compact_console
from dopd.train.dataset import PromptViewDataset, collate_encoded_samples
from dopd.train.distributed import rank_checksums, use_gloo_for_cpu_deepspeed
from dopd.train.plots import plot_log_history
from dopd.train.premise_alarm import PremiseAlarmCallback
from dopd.train.rollout import check_sampling_matches_loss
from dopd.train.sft_trainer import SFTTrainer
from dopd.train.trainer import DOPDTrainer

logger = logging.getLogger("dopd")


@dataclass
class TrainResult:
    output_dir: str
    global_step: int
    log_history: list = field(default_factory=list)
    plots: list = field(default_factory=list)
    stopped_early: Optional[str] = None
    exit_code: int = 0  # what `dopd-cli train` exits with: 1 non-finite losses, 128 + the signal when one stopped it


def _resume_arg(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "latest"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "none", ""):
        return None
    return value


def _seed(training_args: Any) -> None:
    """Seed before any weight is initialised (LoRA's A matrices, drawn by peft when it wraps the student), as
    LLaMA-Factory does when it parses the arguments: the Trainer seeds only when it is constructed, after the models,
    so without this a LoRA run's start depended on whatever had drawn numbers in the process before (e.g. building a
    tiny model), not on `seed`."""
    if training_args.full_determinism:
        enable_full_determinism(training_args.seed)
    else:
        set_seed(training_args.seed)


def stage_objective(cfg: DOPDConfig) -> tuple[Optional[DOPDLossConfig], bool]:
    """The stage's loss config (None for sft) and whether the stage needs the teacher, derived from the config here
    only: `run_train` checks them before any data or model loads, `build_trainer` builds with them."""
    stage = cfg.finetuning.stage
    if stage == "sft":
        return None, False
    loss_config = DOPDLossConfig.from_args(cfg.distill, stage)
    return loss_config, loss_config.needs_teacher


def build_trainer(cfg: DOPDConfig, samples: Sequence[CanonicalSample],
                  eval_samples: Optional[Sequence[CanonicalSample]] = None, *,
                  student: Optional[PreTrainedModel] = None,
                  teacher: Optional[PreTrainedModel] = None) -> BaseTrainer:
    """The one way a trainer is built: `run_train` and every benchmark call this, so benchmarks measure what users
    run. One trainer class per stage: `SFTTrainer` for `sft`, `DOPDTrainer` for every distillation method.

    config + validated `CanonicalSample`s -> adapters (the teacher's checked against the student's), models,
    finetuning, the lazy prompt-view datasets, the trainer (which adds its own callbacks: `trainer_log.jsonl`, the
    graceful stop on SIGTERM/Ctrl-C as `trainer.graceful_stop`, whose signal handlers the caller installs, the
    non-finite loss guard as `trainer.nonfinite_guard`, the step timer) and the compact console. `student` /
    `teacher`: models already in memory to use instead of loading `model_name_or_path` /
    `teacher_model_name_or_path` (those folders still give the adapters: config, tokenizer, processor); an in-memory
    teacher is frozen like a loaded one.
    """
    data_args, distill_args, rollout_args, training_args = cfg.data, cfg.distill, cfg.rollout, cfg.training
    stage = cfg.finetuning.stage
    loss_config, needs_teacher = stage_objective(cfg)
    _seed(training_args)

    adapter, teacher_adapter, student, teacher = _models(cfg, needs_teacher, student, teacher)
    train_dataset = PromptViewDataset(
        samples, adapter, data_args, teacher_adapter=teacher_adapter,
        teacher_sees_privileged=distill_args.teacher_sees_privileged,
    )
    eval_dataset = PromptViewDataset(eval_samples, adapter, data_args) if eval_samples else None
    common = dict(model=student, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                  data_collator=collate_encoded_samples, data_args=data_args, eval_args=cfg.evaluation,
                  processing_class=adapter.processor or adapter.tokenizer, adapter=adapter, rollout_args=rollout_args,
                  distill_args=distill_args)
    if stage == "sft":
        trainer = SFTTrainer(**common)
    else:
        trainer = DOPDTrainer(**common, teacher=teacher, teacher_adapter=teacher_adapter, loss_config=loss_config)
    use_compact_console(trainer)  # one console line per log record; the whole record stays in trainer_log.jsonl
    if cfg.probe.premise_alarm and loss_config is not None and loss_config.needs_teacher \
            and loss_config.needs_privileged_student:
        # first among the callbacks: its premise/* values reach the record before trainer_log.jsonl is written
        trainer.callback_handler.callbacks.insert(
            0, PremiseAlarmCallback(loss_config.table, cfg.probe.premise_check_steps))
    return trainer


def _models(cfg: DOPDConfig, needs_teacher: bool, student: Optional[PreTrainedModel],
            teacher: Optional[PreTrainedModel],
            ) -> tuple[ModelAdapter, Optional[ModelAdapter], PreTrainedModel, Optional[PreTrainedModel]]:
    """The student's adapter and model (loaded unless given, then finetuning applied) and, when the method scores a
    teacher, the teacher's adapter (checked against the student's) and frozen model; None for both otherwise."""
    model_args, training_args = cfg.model, cfg.training
    student_path = resolve_model_path(model_args.model_name_or_path, "student")
    adapter = dopd.model.load_adapter(student_path, model_args)
    teacher_adapter = teacher_path = None
    if needs_teacher:
        teacher_path = resolve_model_path(model_args.teacher_model_name_or_path, "teacher")
        teacher_adapter = dopd.model.load_adapter(teacher_path, model_args)
        check_compatibility(adapter, teacher_adapter, model_args)
    if student is None:
        student = dopd.model.load_model(student_path, model_args, adapter=adapter, role="student",
                                        gradient_checkpointing=training_args.gradient_checkpointing)
    student = apply_finetuning(student, adapter, cfg.finetuning, model_args, training_args=training_args)
    if not needs_teacher:
        teacher = None
    elif teacher is None:
        teacher = dopd.model.load_model(teacher_path, model_args, adapter=teacher_adapter, role="teacher")
    else:
        teacher = freeze_model(teacher)
    return adapter, teacher_adapter, student, teacher


def run_train(cfg: DOPDConfig) -> TrainResult:
    model_args, data_args, rollout_args, training_args = cfg.model, cfg.data, cfg.rollout, cfg.training
    stage = cfg.finetuning.stage
    if not data_args.dataset:
        raise ConfigError("`dataset` is required: a name (or comma-separated names) from dataset_info.json")
    if not model_args.model_name_or_path:
        raise ConfigError("`model_name_or_path` is required: the student model")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not training_args.deepspeed:
        # scoring runs the unwrapped student, which plain DDP would not synchronise: DeepSpeed handles it
        raise ConfigError("multi-process training needs a DeepSpeed config: add e.g. "
                          "`deepspeed: configs/deepspeed/ds_z2_config.json`")
    loss_config, needs_teacher = stage_objective(cfg)
    check_sampling_matches_loss(loss_config, rollout_args)
    if needs_teacher and not model_args.teacher_model_name_or_path:
        raise ConfigError(f"stage `{stage}` needs `teacher_model_name_or_path`")

    samples, eval_samples = _load_data(cfg)  # before any model is loaded
    trainer = build_trainer(cfg, samples, eval_samples)
    stop, nonfinite = trainer.graceful_stop, trainer.nonfinite_guard
    stop.install()
    try:
        trainer.train(resume_from_checkpoint=_resume_arg(training_args.resume_from_checkpoint))
    finally:
        stop.uninstall()

    if trainer.accelerator.num_processes > 1:
        _check_replicas(trainer, training_args.output_dir)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    plots = []
    if training_args.plot_loss and trainer.is_world_process_zero():
        plots = plot_log_history(trainer.state.log_history, training_args.output_dir)
    stopped = "non-finite loss" if nonfinite.stopped_for_nonfinite else ("signal" if stop.requested else None)
    code = 1 if nonfinite.stopped_for_nonfinite else (stop.exit_code or 0)
    return TrainResult(training_args.output_dir, trainer.state.global_step, trainer.state.log_history, plots,
                       stopped, code)


def _load_data(cfg: DOPDConfig) -> tuple[list[CanonicalSample], Optional[list[CanonicalSample]]]:
    """The training samples and, when the run evaluates, the eval samples, validated; a method that scores x+p is
    refused data without any p."""
    data_args, training_args = cfg.data, cfg.training
    samples = load_and_validate(data_args, data_args.dataset, require_privilege=privilege_required(cfg))
    if not samples:
        raise ConfigError(f"dataset `{data_args.dataset}` has no valid samples")
    eval_samples = None
    if training_args.eval_strategy != "no":
        if not data_args.eval_dataset:
            raise ConfigError(f"eval_strategy={training_args.eval_strategy.value} needs `eval_dataset`")
        eval_samples = load_and_validate(data_args, data_args.eval_dataset)
    return samples, eval_samples


def _check_replicas(trainer: BaseTrainer, output_dir: str) -> None:
    sums = rank_checksums(trainer.model_wrapped, trainer.accelerator)
    if trainer.is_world_process_zero():
        agree = max(sums) - min(sums) <= 1e-9 * max(1.0, abs(sums[0]))
        if not agree:
            logger.warning("ranks hold different weights after training: checksums %s", sums)
        with open(os.path.join(output_dir, "rank_checksums.json"), "w", encoding="utf-8") as fh:
            json.dump({"checksums": sums, "agree": agree}, fh)


def run_train_cli(config_path: Optional[str], overrides: Sequence[str]) -> int:
    logging.basicConfig(format="[%(levelname)s|%(name)s] %(message)s", level=logging.INFO)
    use_gloo_for_cpu_deepspeed()
    cfg = parse_config(config_path, overrides)
    try:
        result = run_train(cfg)
    finally:  # as LLaMA-Factory does: a finished two-rank CPU ZeRO-3 run once aborted in the interpreter's
        # teardown of the group ('terminate called without an active exception', exit -6) after saving everything
        PartialState().destroy_process_group()
    if result.stopped_early == "non-finite loss":
        print(f"training stopped at step {result.global_step}: too many consecutive non-finite losses")
        return result.exit_code
    print(f"\nDOPD training finished at step {result.global_step}.")
    print(f"  checkpoint : {os.path.abspath(result.output_dir)}")
    print(f"  log        : {os.path.join(os.path.abspath(result.output_dir), 'trainer_log.jsonl')}")
    for path in result.plots:
        print(f"  plot       : {os.path.abspath(path)}")
    if result.stopped_early == "signal":
        print(f"  (stopped by a signal, exit code {result.exit_code}; resume with resume_from_checkpoint=true)")
    return result.exit_code
