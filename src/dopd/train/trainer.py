"""DOPDTrainer: transformers' Trainer whose loss is one on-policy distillation step.

The optimizer step is the unit (`routing_scope: step`, the default). At the first micro-batch of a step, the trainer
rolls out the prompts of every micro-batch of the step at once (G answers each from the plain view x, current
student, no grad; `rollout_batch_size` sequences per `generate` call), scores the same answer tokens with the
privileged student and the teacher on x+p (no grad), and computes the routing thresholds over the whole step (and
over all ranks with `routing_across_ranks`): the paper's batch. Each micro-batch then runs its graded pass (student
on x, with grad) and the objective in `dopd.distill` with the step's thresholds and the step's denominator, so the
micro-batches' losses sum to the step's loss (`loss_is_scaled_for_ga`). No weight changes between the rollout and
the last micro-batch: the answers stay on-policy. `routing_scope: micro_batch` keeps each micro-batch on its own
(rollout, scoring, statistics and mean per micro-batch; the Trainer averages the micro-batches).

Optimizer, schedules, accumulation, mixed precision, DeepSpeed, peft, checkpoints and `report_to` are the
Trainer's own; the micro-batches of a step come from its epoch iterator through `get_batch_samples`, so resuming
from a checkpoint skips and orders data exactly as the Trainer does.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from transformers import Trainer

from dopd.train.callbacks import GracefulStopCallback, JsonlLogCallback, NonFiniteLossCallback
from dopd.train.distributed import gathered_parameters, prepare_teacher
from dopd.train.rollout import RolloutResult, build_rollout_engine, model_for_generation, repeat_each
from dopd.train.scoring import gather_response

if TYPE_CHECKING:
    from dopd.distill import DOPDLossConfig
    from dopd.hparams import DataArguments, DistillArguments, RolloutArguments
    from dopd.hparams.eval_args import EvalArguments
    from dopd.model.adapters.base import ModelAdapter

logger = logging.getLogger(__name__)


@dataclass
class _MicroBatch:
    samples: list
    rollout: Optional[RolloutResult] = None
    targets: Optional[tuple] = None  # cached no-grad passes (see _score_targets), or None: recomputed
    routing: Any = None  # dopd.distill.RoutingPass of its tokens, computed once for the step's statistics


@dataclass
class _Step:
    """The micro-batches of one optimizer step on this rank, and what was computed over all of them."""

    micro: list = field(default_factory=list)
    prepared: bool = False
    thresholds: Any = None  # dopd.distill.Thresholds over the step (None: no routing statistics)
    denominator: Optional[float] = None  # tokens (aggregation token) or sequences (sequence) of the step's mean

    def index_of(self, samples: list) -> Optional[int]:
        for i, mb in enumerate(self.micro):  # the Trainer hands the very sample objects back (no copies)
            if len(mb.samples) == len(samples) and all(a is b for a, b in zip(mb.samples, samples)):
                return i
        return None


class DOPDTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        adapter: ModelAdapter,
        teacher: Optional[torch.nn.Module] = None,
        teacher_adapter: Optional[ModelAdapter] = None,
        stage: str = "dopd",
        loss_config: Optional[DOPDLossConfig] = None,
        rollout_args: Optional[RolloutArguments] = None,
        distill_args: Optional[DistillArguments] = None,
        data_args: Optional[DataArguments] = None,
        eval_args: Optional[EvalArguments] = None,
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
        self.num_truncated = 0  # prompts shortened to cutoff_len so far
        self._zero_anchor: Optional[torch.Tensor] = None  # what a non-finite loss is replaced by (see _guard_finite)
        # resolved once, by the loss config (`routing_scope`, `routing_across_ranks`); sft routes nothing
        self.routing_unit, self.rank_scope = ((loss_config.routing_unit, loss_config.rank_scope)
                                              if loss_config is not None else ("micro_batch", "local"))
        self._step: Optional[_Step] = None
        self._head_gather = contextlib.ExitStack()
        self.rollout_engine = build_rollout_engine(getattr(rollout_args, "rollout_engine", "hf") or "hf", adapter,
                                                   self.accelerator, self.args.device) if rollout_args else None
        self._phase: dict[str, float] = defaultdict(float)  # seconds per phase in the current optimizer step
        if self.stage != "sft" and self.routing_unit == "step":
            # each micro-batch's loss is its share of the step's mean: the Trainer must not divide it again
            self.loss_is_scaled_for_ga = True
        if self.teacher is not None:
            self.teacher = prepare_teacher(self.teacher, self.accelerator, self.args.device)
        # the run's own callbacks: trainer_log.jsonl, a checkpoint on SIGTERM/Ctrl-C (its signal handlers are
        # installed by the caller, run_train), and skipping updates after a non-finite loss
        from dopd.hparams import DistillArguments

        self.graceful_stop = GracefulStopCallback()
        self.nonfinite_guard = NonFiniteLossCallback(self, (distill_args or DistillArguments()).max_nonfinite_steps)
        for callback in (JsonlLogCallback(), self.graceful_stop, self.nonfinite_guard):
            self.add_callback(callback)

    # ------------------------------------------------------------------ resume
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Optional[torch.nn.Module] = None) -> None:
        """Resume's weights: exactly the checkpoint's, for every family, or a `CheckpointMismatchError`.

        The Trainer's own version loads `save_pretrained`'s layout without transformers' key conversion and only warns
        about the keys that do not match (a Qwen2-VL run went on from the base weights); see `dopd.train.checkpoint`.
        DeepSpeed runs resume from DeepSpeed's state instead and do not come here; FSDP is left to the Trainer."""
        if self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from dopd.train.checkpoint import load_checkpoint

        logger.info("resuming the weights of %s", resume_from_checkpoint)
        load_checkpoint(self.model if model is None else model, resume_from_checkpoint)

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
    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        """The Trainer fetches the micro-batches of each optimizer step here, before the first one runs: remember
        them, so the first micro-batch can roll out, score and route the whole step."""
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._step = _Step([_MicroBatch(list(b["samples"])) for b in batch_samples if "samples" in b]) \
            if batch_samples else None
        return batch_samples, num_items

    def training_step(self, model: torch.nn.Module, inputs: dict, num_items_in_batch: Any = None) -> torch.Tensor:
        start = time.perf_counter()
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
        finally:
            self._head_gather.close()  # ZeRO-3: the student head, gathered for the loss, partitioned after backward
        _sync(self.args.device)
        self._phase["step_s"] += time.perf_counter() - start
        if self.accelerator.gradient_state.sync_gradients:  # the step's last micro-batch: times per optimizer step
            phase, self._phase = self._phase, defaultdict(float)
            if self.stage != "sft":
                self._record("time/rollout_s", phase["rollout_s"])
                self._record("time/scoring_s", phase["scoring_s"])
            self._record("time/update_s", phase["step_s"] - phase["rollout_s"] - phase["scoring_s"])
        return loss

    def _autocast(self) -> Any:
        """A student whose trainable parameters were upcast to fp32 from bf16/fp16 (no DeepSpeed, see
        `dopd.model.finetuning.upcast_trainable_params`) runs its rollout, scorings and eval under autocast to the
        dtype it was loaded in: fp32 master weights, half-precision compute."""
        import contextlib

        dtype = getattr(self.model, "dopd_compute_dtype", None)
        return torch.autocast(self.args.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def compute_loss_context_manager(self) -> Any:
        stack = super().compute_loss_context_manager()
        stack.enter_context(self._autocast())
        return stack

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        samples = inputs["samples"]
        self._zero_anchor = None
        self._record("privileged/fraction_with_p", sum(s.has_privilege for s in samples) / len(samples))
        self._count_truncated(samples)
        if self.stage == "sft":
            loss = self._sft_loss(model, samples)
        elif self.routing_unit == "step":
            loss = self._step_loss(model, samples)
        else:  # micro_batch scope: this micro-batch is rolled out, scored and routed on its own
            rollout = self.rollout(model, samples)
            started = time.perf_counter()
            loss = self._distill_loss(model, samples, rollout)
            _sync(self.args.device)
            self._phase["scoring_s"] += time.perf_counter() - started
        return self._guard_finite(loss)

    # ------------------------------------------------------------------ the step as the unit
    def _step_loss(self, model: torch.nn.Module, samples: list) -> torch.Tensor:
        step = self._step
        index = step.index_of(samples) if step is not None else None
        if index is None:  # called outside the Trainer's loop (no get_batch_samples): a step of one micro-batch
            step = self._step = _Step([_MicroBatch(list(samples))])
            index = 0
        if not step.prepared:
            self._prepare_step(model, step)
        mb = step.micro[index]
        started = time.perf_counter()
        targets = mb.targets if mb.targets is not None else self._score_targets(model, mb.samples, mb.rollout)
        mb.targets = None  # used once: free the cache as the step goes
        loss = self._distill_loss(model, mb.samples, mb.rollout, targets=targets, thresholds=step.thresholds,
                                  denominator=step.denominator, routing=mb.routing)
        mb.routing = None
        _sync(self.args.device)
        self._phase["scoring_s"] += time.perf_counter() - started
        return loss

    def _prepare_step(self, model: torch.nn.Module, step: _Step) -> None:
        """Roll out every micro-batch of the step at once, score the no-grad passes, compute the step's routing
        statistics (across ranks when `rank_scope` is global) and the denominator of its mean."""
        from dopd.distill import routing_pass_from_hidden
        from dopd.distill.routing import all_gather_varlen, compute_thresholds

        samples = [s for mb in step.micro for s in mb.samples]
        rollout = self.rollout(model, samples)
        started = time.perf_counter()
        group = self.rollout_args.num_generations
        offset = 0
        log_q_s: list[torch.Tensor] = []
        log_q_t: list[torch.Tensor] = []
        cache = getattr(self.rollout_args, "step_score_cache", "device")
        for mb in step.micro:
            rows = slice(offset, offset + len(mb.samples) * group)
            offset = rows.stop
            mb.rollout = RolloutResult(prompts=rollout.prompts[rows], responses=rollout.responses[rows],
                                       num_tokens=sum(len(r) for r in rollout.responses[rows]),
                                       seconds=rollout.seconds)
            targets = self._score_targets(model, mb.samples, mb.rollout)
            hidden_p, labels_p, hidden_t, labels_t, head_t = targets
            if hidden_p is not None and hidden_t is not None:
                # pass 1 of the objective, once: the step's statistics here, and this micro-batch's loss later
                student = self.accelerator.unwrap_model(model)
                head_s = self.adapter.unwrap(student).get_output_embeddings()
                _check_same_tokens(labels_p, labels_t, "teacher")
                with gathered_parameters(head_s), gathered_parameters(head_t):
                    mb.routing = routing_pass_from_hidden(
                        hidden_p, hidden_t, labels_p.to(hidden_p.device), head_s, head_t,
                        self.distill_args.loss_chunk_size or None, vocab_size=self.adapter.vocab_size)
                stat_s, stat_t = mb.routing.statistics(self.loss_config.routing_statistic)
                log_q_s.append(stat_s)
                log_q_t.append(stat_t)
            if cache == "cpu":
                mb.targets = tuple(t.to("cpu") if isinstance(t, torch.Tensor) else t for t in targets)
            elif cache == "device":
                mb.targets = targets
            del targets, hidden_p, hidden_t
        cfg = self.loss_config
        if log_q_s:
            step.thresholds = compute_thresholds(torch.cat(log_q_s), torch.cat(log_q_t), cfg.trim_fraction,
                                                 self.rank_scope)
        # the step's mean: its (kept) tokens, or its non-empty sequences; across ranks, their mean per rank, so
        # that the data-parallel gradient average gives the mean over every rank's tokens / sequences
        tokens = sum(_kept_tokens(cfg, [len(r) for r in mb.rollout.responses]) for mb in step.micro)
        seqs = sum(bool(r) for r in rollout.responses)
        counts = torch.tensor([float(tokens), float(seqs)], dtype=torch.float64, device=self.args.device)
        if self.rank_scope == "global":
            gathered = all_gather_varlen(counts)
            counts = gathered.view(-1, 2).mean(0)
        step.denominator = float(counts[0] if cfg.loss_aggregation == "token" else counts[1])
        step.prepared = True
        _sync(self.args.device)
        self._phase["scoring_s"] += time.perf_counter() - started

    # ------------------------------------------------------------------ rollout
    def rollout(self, model: torch.nn.Module, samples: list) -> RolloutResult:
        """G answers per sample from the plain view, through the rollout engine (`rollout_engine`, HF by default;
        `rollout_batch_size` sequences per `generate` call)."""
        started = time.perf_counter()
        group = self.rollout_args.num_generations
        engine = self.rollout_engine
        engine.update_weights(model)
        out = engine.generate(model, [s.plain for s in samples], group, self.rollout_args)
        prompts, responses, calls = repeat_each([s.plain for s in samples], group), out.responses, out.calls
        _sync(self.args.device)
        seconds = time.perf_counter() - started
        num_tokens = sum(len(r) for r in responses)
        self._phase["rollout_s"] += seconds
        self._record("rollout/tokens_per_s", num_tokens / max(seconds, 1e-9))
        self._record("rollout/response_length", num_tokens / len(responses))
        self._record("rollout/sequences_per_generate", len(prompts) / max(calls, 1))
        stops = set(self.adapter.stop_token_ids)
        self._record("rollout/stopped_fraction", sum(bool(r) and r[-1] in stops for r in responses) / len(responses))
        return RolloutResult(prompts=prompts, responses=responses, num_tokens=num_tokens, seconds=seconds)

    def _score(self, model: torch.nn.Module, adapter: Any, prompts: list, responses: list[list[int]]):
        batch, labels = adapter.build_scoring_batch(prompts, responses)
        batch = _to_device(batch, self.args.device)
        hidden, lm_head = adapter.forward_hidden(model, batch)
        packed, packed_labels = gather_response(hidden, labels.to(hidden.device))
        return packed, packed_labels, lm_head

    def _score_targets(self, model: torch.nn.Module, samples: list, rollout: RolloutResult) -> tuple:
        """The no-grad passes: (hidden_p, labels_p, hidden_t, labels_t, head_t), None where the loss needs none."""
        group = self.rollout_args.num_generations
        student = self.accelerator.unwrap_model(model)
        cfg = self.loss_config
        hidden_p = hidden_t = labels_p = labels_t = head_t = None
        with torch.no_grad():
            if cfg.needs_privileged_student:
                privileged = repeat_each([s.privileged for s in samples], group)
                hidden_p, labels_p, _ = self._score(student, self.adapter, privileged, rollout.responses)
            if cfg.needs_teacher:
                teacher_prompts = repeat_each([s.teacher for s in samples], group)
                hidden_t, labels_t, head_t = self._score(self.teacher, self.teacher_adapter, teacher_prompts,
                                                         rollout.responses)
        return hidden_p, labels_p, hidden_t, labels_t, head_t

    def _distill_loss(self, model: torch.nn.Module, samples: list, rollout: RolloutResult,
                      targets: Optional[tuple] = None, thresholds: Any = None,
                      denominator: Optional[float] = None, routing: Any = None) -> torch.Tensor:
        """The graded pass and the objective for one micro-batch; `targets` (from `_score_targets`, possibly
        cached) and the step's `thresholds` / `denominator` / this micro-batch's `routing` pass when the step is the
        unit."""
        from dopd.distill import dopd_loss_from_hidden

        student = self.accelerator.unwrap_model(model)
        cfg = self.loss_config
        # the two no-grad passes first: their activations are gone before the student's graph is built
        if targets is None:
            targets = self._score_targets(model, samples, rollout)
        device = self.args.device
        hidden_p, labels_p, hidden_t, labels_t, head_t = (
            t.to(device) if isinstance(t, torch.Tensor) else t for t in targets)
        del targets
        hidden_s, labels, head_s = self._score(student, self.adapter, rollout.prompts, rollout.responses)
        if labels_p is not None:
            _check_same_tokens(labels, labels_p, "privileged student")
        if labels_t is not None:
            _check_same_tokens(labels, labels_t, "teacher")
        # a zero that reaches every trained parameter through finite values: what a non-finite loss is replaced by
        self._zero_anchor = torch.nan_to_num(hidden_s, nan=0.0, posinf=0.0, neginf=0.0).sum() * 0.0
        vocab = self.adapter.vocab_size  # the ids the student can sample (teacher compatibility-checked)
        # whole heads plus the number of valid rows: slicing the student's weight here would make autograd pad the
        # slice's gradient back to [V, H] (one more [V, H] copy at the peak of the backward).
        # ZeRO-3: each lm_head is gathered once for the loss (its weight exists whole only inside DeepSpeed's hooks
        # otherwise); the student's stays gathered until training_step's backward has handed it its weight
        # gradient (autograd accumulates that gradient into the parameter, which must then be whole).
        self._head_gather.enter_context(gathered_parameters(head_s))
        with gathered_parameters(head_t):
            out = dopd_loss_from_hidden(
                hidden_s, hidden_p, hidden_t, labels, head_s, head_t, config=cfg,
                chunk_size=self.distill_args.loss_chunk_size or None, vocab_size=vocab, thresholds=thresholds,
                denominator=denominator, routing=routing,
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

    # ------------------------------------------------------------------ evaluation during training
    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict:
        """Held-out accuracy of the deployed student (plain view unless `eval_with_privilege`), by generation.

        Every rank evaluates the same samples (under ZeRO-3 all ranks must join the parameter gather anyway)."""
        from dopd.eval import evaluate_samples, write_predictions

        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        with model_for_generation(self.model_wrapped, self.accelerator) as model, self._autocast():
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

    def _count_truncated(self, samples: list) -> None:
        """Prompts over `cutoff_len` were shortened by the adapter's rule; say so, with a running count."""
        cut = sum(any(getattr(p, "truncated", False) for p in (s.plain, s.privileged, s.teacher) if p is not None)
                  for s in samples)
        self._record("prompts/truncated_fraction", cut / len(samples))
        if cut:
            self.num_truncated += cut
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


def _kept_tokens(cfg: Any, lengths: list[int]) -> int:
    """Tokens of one micro-batch that enter the loss: all response tokens, less what the pruning probe drops (it
    drops round(fraction x n) of each call's n tokens)."""
    n = sum(lengths)
    if cfg.prune_mode is not None and n:
        n -= int(round(cfg.prune_fraction * n))
    return n


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
