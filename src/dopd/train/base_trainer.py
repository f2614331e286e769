"""BaseTrainer: what every stage's trainer shares on top of transformers' Trainer.

One trainer per stage, as LLaMA-Factory has: `DOPDTrainer` (`dopd.train.trainer`: every distillation method) and
`SFTTrainer` (`dopd.train.sft_trainer`: `stage: sft`); `dopd.train.workflow.build_trainer` picks the class by stage.
Shared here: the run's callbacks (`trainer_log.jsonl`, graceful stop, the non-finite loss guard, the step timer),
the metrics logged with each record, exact resume, autocast for upcast trainable weights, evaluation by generation
(`dopd.eval`), and a non-finite loss replaced by a zero that keeps gradient accumulation and DeepSpeed in step.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Optional

import torch
from transformers import Trainer

from dopd.eval import evaluate_samples, write_predictions
from dopd.hparams import DataArguments, DistillArguments, RolloutArguments
from dopd.hparams.eval_args import EvalArguments
from dopd.model.adapters.base import ModelAdapter
from dopd.train.callbacks import GracefulStopCallback, JsonlLogCallback, NonFiniteLossCallback
from dopd.train.checkpoint import load_checkpoint
from dopd.train.dataset import EncodedSample
from dopd.train.metrics import StepMetrics, StepTimer
from dopd.train.rollout import model_for_generation

logger = logging.getLogger("dopd.train.trainer")  # one logger name for every stage's trainer messages


class BaseTrainer(Trainer):
    #: the phases a stage times itself inside `training_step` (see `StepTimer`)
    timed_phases: tuple[str, ...] = ()

    def __init__(
        self,
        *args: Any,
        adapter: ModelAdapter,
        rollout_args: Optional[RolloutArguments] = None,
        distill_args: Optional[DistillArguments] = None,
        data_args: Optional[DataArguments] = None,
        eval_args: Optional[EvalArguments] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.adapter = adapter
        self.rollout_args = rollout_args
        self.distill_args = distill_args
        self.data_args = data_args
        self.eval_args = eval_args
        self.metrics = StepMetrics()  # averaged into each training log record
        self.num_truncated = 0  # prompts shortened to cutoff_len so far
        self._zero_anchor: Optional[torch.Tensor] = None  # what a non-finite loss is replaced by (see _guard_finite)
        # the run's own callbacks: trainer_log.jsonl, a checkpoint on SIGTERM/Ctrl-C (its signal handlers are
        # installed by the caller, run_train), skipping updates after a non-finite loss, and the step's time split
        self.graceful_stop = GracefulStopCallback()
        self.nonfinite_guard = NonFiniteLossCallback((distill_args or DistillArguments()).max_nonfinite_steps)
        self.timer = StepTimer(self.metrics, self.args.device, self.timed_phases)
        for callback in (JsonlLogCallback(), self.graceful_stop, self.nonfinite_guard, self.timer):
            self.add_callback(callback)

    # ------------------------------------------------------------------ resume
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Optional[torch.nn.Module] = None) -> None:
        """Resume's weights: exactly the checkpoint's, for every family, or a `CheckpointMismatchError`.

        The Trainer's own version loads `save_pretrained`'s layout without transformers' key conversion and only warns
        about the keys that do not match (a Qwen2-VL run went on from the base weights); see `dopd.train.checkpoint`.
        DeepSpeed runs resume from DeepSpeed's state instead and do not come here; FSDP is left to the Trainer."""
        if self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        logger.info("resuming the weights of %s", resume_from_checkpoint)
        load_checkpoint(self.model if model is None else model, resume_from_checkpoint)

    # ------------------------------------------------------------------ metrics
    def log(self, logs: dict[str, float], start_time: Optional[float] = None) -> None:
        if self.metrics and "loss" in logs:  # training logs only; eval logs carry their own keys
            logs.update(self.metrics.drain())
        super().log(logs, start_time)

    # ------------------------------------------------------------------ the step
    def training_step(self, model: torch.nn.Module, inputs: dict, num_items_in_batch: Any = None) -> torch.Tensor:
        with self.timer.phase("step"):
            loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.gradient_state.sync_gradients:  # the step's last micro-batch: times per optimizer step
            self.timer.end_step()
        return loss

    def autocast(self) -> Any:
        """A student whose trainable parameters were upcast to fp32 from bf16/fp16 (no DeepSpeed, see
        `dopd.model.finetuning.upcast_trainable_params`) runs its rollout, scorings and eval under autocast to the
        dtype it was loaded in: fp32 master weights, half-precision compute."""
        dtype = getattr(self.model, "dopd_compute_dtype", None)
        return torch.autocast(self.args.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def compute_loss_context_manager(self) -> Any:
        stack = super().compute_loss_context_manager()
        stack.enter_context(self.autocast())
        return stack

    def _start_micro_batch(self, samples: list[EncodedSample]) -> None:
        """What every stage logs of a micro-batch's prompts, before its loss."""
        self._zero_anchor = None
        self.metrics.record("privileged/fraction_with_p", sum(s.has_privilege for s in samples) / len(samples))
        self._count_truncated(samples)

    def _count_truncated(self, samples: list[EncodedSample]) -> None:
        """Prompts over `cutoff_len` were shortened by the adapter's rule; say so, with a running count."""
        cut = sum(any(getattr(p, "truncated", False) for p in (s.plain, s.privileged, s.teacher) if p is not None)
                  for s in samples)
        self.metrics.record("prompts/truncated_fraction", cut / len(samples))
        if cut:
            self.num_truncated += cut
            logger.warning("%d prompt(s) in this batch exceeded cutoff_len=%s and were shortened (%d so far): "
                           "raise cutoff_len to keep them whole", cut, self.data_args.cutoff_len if self.data_args
                           else "?", self.num_truncated)

    # ------------------------------------------------------------------ evaluation during training
    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict:
        """Held-out accuracy of the deployed student (plain view unless `eval_with_privilege`), by generation.

        Every rank evaluates the same samples (under ZeRO-3 all ranks must join the parameter gather anyway)."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        with model_for_generation(self.model_wrapped, self.accelerator) as model, self.autocast():
            result = evaluate_samples(model, self.adapter, dataset.samples, self.data_args, self.eval_args,
                                      self.rollout_args)
        if self.is_world_process_zero():  # the answers behind the numbers, for reading what the student does
            write_predictions(result.records, os.path.join(
                self.args.output_dir, "eval_predictions", f"step-{self.state.global_step}.jsonl"))
        metrics = {f"{metric_key_prefix}/{key}": value for key, value in result.metrics.items()}
        metrics[f"{metric_key_prefix}/seconds"] = result.seconds
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ------------------------------------------------------------------ non-finite losses
    def _anchor_zero(self, hidden: torch.Tensor) -> None:
        """A zero that reaches every trained parameter through finite values: what a non-finite loss is replaced by."""
        self._zero_anchor = torch.nan_to_num(hidden, nan=0.0, posinf=0.0, neginf=0.0).sum() * 0.0

    def _guard_finite(self, loss: torch.Tensor) -> torch.Tensor:
        if torch.isfinite(loss).all():
            self.metrics.record("nonfinite_loss", 0.0)
            return loss
        self.metrics.record("nonfinite_loss", 1.0)
        self.nonfinite_guard.skip_update()
        # Backward runs on a zero connected to the student through finite values only (0 x NaN would still be NaN),
        # which keeps gradient accumulation and DeepSpeed in step. NonFiniteLossCallback then skips the update by
        # setting gradients to None; under DeepSpeed, whose gradients live in its own buffers, the step sees zero
        # gradients instead (no update from this batch; Adam's moments still decay).
        return self._zero_anchor
