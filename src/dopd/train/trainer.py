"""DOPDTrainer: transformers' Trainer whose loss is one on-policy distillation step.

Per micro-batch of prompts: roll out G answers from the plain view x with the current student (no grad), then
score the same answer tokens three times -- student on x (grad), student on x+p and teacher on x+p (no grad) --
and hand the three to the objective in `dopd.distill`. Optimizer, schedules, accumulation, mixed precision,
DeepSpeed, peft, checkpoints and `report_to` are the Trainer's own.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from typing import Any, Optional

import torch
import torch.nn.functional as F
from transformers import Trainer

from dopd.train.distributed import prepare_teacher
from dopd.train.rollout import RolloutResult, generation_kwargs, model_for_generation, repeat_each
from dopd.train.scoring import gather_response

logger = logging.getLogger(__name__)


class DOPDTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        adapter: Any,
        teacher: Optional[torch.nn.Module] = None,
        teacher_adapter: Optional[Any] = None,
        stage: str = "dopd",
        loss_config: Any = None,
        rollout_args: Any = None,
        distill_args: Any = None,
        data_args: Any = None,
        eval_args: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.adapter = adapter
        self.teacher = teacher
        self.teacher_adapter = teacher_adapter or adapter
        self.stage = stage
        self.loss_config = loss_config
        self.rollout_args = rollout_args
        self.distill_args = distill_args
        self.data_args = data_args
        self.eval_args = eval_args
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self.skip_next_update = False  # set by a non-finite loss; honoured by NonFiniteLossCallback
        if self.teacher is not None:
            self.teacher = prepare_teacher(self.teacher, self.accelerator, self.args.device)

    # ------------------------------------------------------------------ metrics
    def _record(self, name: str, value: float) -> None:
        self._metrics[name].append(float(value))

    def log(self, logs: dict[str, float], start_time: Optional[float] = None) -> None:
        if self._metrics and "loss" in logs:  # training logs only; eval logs carry their own keys
            for key, values in self._metrics.items():
                logs[key] = sum(values) / len(values)
            self._metrics.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ the step
    def training_step(self, model: torch.nn.Module, inputs: dict, num_items_in_batch: Any = None) -> torch.Tensor:
        start = time.perf_counter()
        self._step_phase_seconds = 0.0
        loss = super().training_step(model, inputs, num_items_in_batch)
        _sync(self.args.device)
        self._record("time/update_s", time.perf_counter() - start - self._step_phase_seconds)
        return loss

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        samples = inputs["samples"]
        self._zero_anchor = None
        self._record("privileged/fraction_with_p", sum(s.has_privilege for s in samples) / len(samples))
        self._count_truncated(samples)
        if self.stage == "sft":
            loss = self._sft_loss(model, samples)
        else:
            rollout = self.rollout(model, samples)
            started = time.perf_counter()
            loss = self._distill_loss(model, samples, rollout)
            _sync(self.args.device)
            scoring_s = time.perf_counter() - started
            self._record("time/scoring_s", scoring_s)
            self._step_phase_seconds = getattr(self, "_step_phase_seconds", 0.0) + rollout.seconds + scoring_s
        return self._guard_finite(loss)

    def rollout(self, model: torch.nn.Module, samples: list) -> RolloutResult:
        started = time.perf_counter()
        group = self.rollout_args.num_generations
        prompts = repeat_each([s.plain for s in samples], group)
        with model_for_generation(model, self.accelerator) as student:
            batch = _to_device(self.adapter.collate_prompts(prompts), self.args.device)
            responses = self.adapter.generate(student, batch, **generation_kwargs(self.rollout_args))
        _sync(self.args.device)
        seconds = time.perf_counter() - started
        num_tokens = sum(len(r) for r in responses)
        self._record("time/rollout_s", seconds)
        self._record("rollout/tokens_per_s", num_tokens / max(seconds, 1e-9))
        self._record("rollout/response_length", num_tokens / len(responses))
        stops = set(self.adapter.stop_token_ids)
        self._record("rollout/stopped_fraction", sum(bool(r) and r[-1] in stops for r in responses) / len(responses))
        return RolloutResult(prompts=prompts, responses=responses, num_tokens=num_tokens, seconds=seconds)

    def _score(self, model: torch.nn.Module, adapter: Any, prompts: list, responses: list[list[int]]):
        batch, labels = adapter.build_scoring_batch(prompts, responses)
        batch = _to_device(batch, self.args.device)
        hidden, lm_head = adapter.forward_hidden(model, batch)
        packed, packed_labels = gather_response(hidden, labels.to(hidden.device))
        return packed, packed_labels, lm_head

    def _distill_loss(self, model: torch.nn.Module, samples: list, rollout: RolloutResult) -> torch.Tensor:
        from dopd.distill import dopd_loss, dopd_loss_from_hidden

        group = self.rollout_args.num_generations
        student = self.accelerator.unwrap_model(model)
        cfg = self.loss_config
        # the two no-grad passes first: their activations are gone before the student's graph is built
        hidden_p = hidden_t = labels_p = labels_t = head_t = None
        with torch.no_grad():
            if cfg.needs_privileged_student:
                privileged = repeat_each([s.privileged for s in samples], group)
                hidden_p, labels_p, _ = self._score(student, self.adapter, privileged, rollout.responses)
            if cfg.needs_teacher:
                teacher_prompts = repeat_each([s.teacher for s in samples], group)
                hidden_t, labels_t, head_t = self._score(self.teacher, self.teacher_adapter, teacher_prompts,
                                                         rollout.responses)
        hidden_s, labels, head_s = self._score(student, self.adapter, rollout.prompts, rollout.responses)
        if labels_p is not None:
            _check_same_tokens(labels, labels_p, "privileged student")
        if labels_t is not None:
            _check_same_tokens(labels, labels_t, "teacher")
        # a zero that reaches every trained parameter through finite values: what a non-finite loss is replaced by
        self._zero_anchor = torch.nan_to_num(hidden_s, nan=0.0, posinf=0.0, neginf=0.0).sum() * 0.0
        vocab = self.adapter.vocab_size  # the ids the student can sample (teacher compatibility-checked)
        if self._params_partitioned():
            # ZeRO-3: lm_head weights exist only inside their module's forward (DeepSpeed gathers them in hooks),
            # so the heads are called as modules and the objective runs on logits (memory grows with T x V).
            with torch.no_grad():
                logits_p = head_s(hidden_p)[..., :vocab] if hidden_p is not None else None
                logits_t = head_t(hidden_t)[..., :vocab] if hidden_t is not None else None
            out = dopd_loss(head_s(hidden_s)[..., :vocab], logits_p, logits_t, labels, config=cfg)
        else:
            # whole heads plus the number of valid rows: slicing the student's weight here would make autograd
            # pad the slice's gradient back to [V, H] (one more [V, H] copy at the peak of the backward)
            out = dopd_loss_from_hidden(
                hidden_s, hidden_p, hidden_t, labels, head_s, head_t, config=cfg,
                chunk_size=self.distill_args.loss_chunk_size or None, vocab_size=vocab,
            )
        for key, value in out.metrics.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self._record(f"dopd/{key}", value)
        return out.loss

    def _sft_loss(self, model: torch.nn.Module, samples: list) -> torch.Tensor:
        """Supervised fine-tuning on reference responses (the testbed makes its teachers this way)."""
        use_privileged = getattr(self.args, "sft_view", "plain") == "privileged"
        prompts = [s.privileged if use_privileged else s.plain for s in samples]
        missing = [s.uid for s in samples if not s.response]
        if missing:
            raise ValueError(f"stage sft needs a reference response; samples without one: {missing[:5]}")
        responses = [self.adapter.encode_response(s.response) for s in samples]
        student = self.accelerator.unwrap_model(model)
        hidden, labels, lm_head = self._score(student, self.adapter, prompts, responses)
        self._zero_anchor = torch.nan_to_num(hidden, nan=0.0, posinf=0.0, neginf=0.0).sum() * 0.0
        logits = lm_head(hidden)[..., : self.adapter.vocab_size].float()
        per_token = F.cross_entropy(logits.flatten(0, 1), labels.flatten().clamp_min(0), reduction="none")
        mask = labels.ne(-100).flatten().float()
        loss = (per_token * mask).sum() / mask.sum().clamp_min(1.0)
        self._record("sft/response_length", float(mask.sum()) / len(samples))
        return loss

    def _params_partitioned(self) -> bool:
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        return plugin is not None and plugin.zero_stage == 3

    # ------------------------------------------------------------------ evaluation during training
    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict:
        """Held-out accuracy of the deployed student (plain view unless `eval_with_privilege`), by generation.

        Every rank evaluates the same samples (under ZeRO-3 all ranks must join the parameter gather anyway)."""
        from dopd.eval import evaluate_samples

        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        with model_for_generation(self.model_wrapped, self.accelerator) as model:
            result = evaluate_samples(model, self.adapter, dataset.samples, self.data_args, self.eval_args,
                                      self.rollout_args)
        metrics = {f"{metric_key_prefix}/{key}": value for key, value in result.metrics.items()}
        metrics[f"{metric_key_prefix}/seconds"] = result.seconds
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _count_truncated(self, samples: list) -> None:
        """Prompts over `cutoff_len` were shortened by the adapter's rule; say so, with a running count."""
        cut = sum(any(getattr(p, "truncated", False) for p in (s.plain, s.privileged, s.teacher) if p is not None)
                  for s in samples)
        self._record("prompts/truncated_fraction", cut / len(samples))
        if cut:
            self.num_truncated = getattr(self, "num_truncated", 0) + cut
            logger.warning("%d prompt(s) in this batch exceeded cutoff_len=%s and were shortened (%d so far): "
                           "raise cutoff_len to keep them whole", cut, self.data_args.cutoff_len if self.data_args
                           else "?", self.num_truncated)

    # ------------------------------------------------------------------ non-finite losses
    def _guard_finite(self, loss: torch.Tensor) -> torch.Tensor:
        if torch.isfinite(loss).all():
            self._record("nonfinite_loss", 0.0)
            return loss
        self._record("nonfinite_loss", 1.0)
        self.skip_next_update = True
        # Backward runs on a zero connected to the student through finite values only (0 x NaN would still be NaN),
        # which keeps gradient accumulation and DeepSpeed in step. NonFiniteLossCallback then skips the update by
        # setting gradients to None; under DeepSpeed, whose gradients live in its own buffers, the step sees zero
        # gradients instead (no update from this batch; Adam's moments still decay).
        return self._zero_anchor


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so the logged time split is the real one."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_same_tokens(reference: torch.Tensor, other: torch.Tensor, name: str) -> None:
    if reference.shape != other.shape or not torch.equal(reference, other):
        raise RuntimeError(
            f"the {name} scored different response tokens than the student: the views must share the answer ids"
        )


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
