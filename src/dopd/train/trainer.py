"""DOPDTrainer: transformers' Trainer whose loss is one on-policy distillation step (every stage but `sft`, whose
trainer is `dopd.train.sft_trainer.SFTTrainer`; what both share is `dopd.train.base_trainer.BaseTrainer`).

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
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from dopd import distill  # its entry points are looked up at call time: a test stands in for them on `dopd.distill`
from dopd.distill import DOPDLossConfig, RoutingPass, Thresholds
from dopd.distill.routing import all_gather_varlen, compute_thresholds
from dopd.hparams import DistillArguments
from dopd.model.adapters.base import ModelAdapter
from dopd.train.base_trainer import BaseTrainer
from dopd.train.dataset import EncodedSample
from dopd.train.distributed import gathered_parameters, prepare_teacher
from dopd.train.rollout import RolloutResult, build_rollout_engine, repeat_each
from dopd.train.scoring import (
    Scorable, ScoredPass, ScoringTargets, check_same_tokens, score_responses, score_targets,
)


@dataclass
class _MicroBatch:
    samples: list[EncodedSample]
    rollout: Optional[RolloutResult] = None
    targets: Optional[ScoringTargets] = None  # cached no-grad passes (see _score_targets), or None: recomputed
    routing: Optional[RoutingPass] = None  # pass 1 of its tokens, computed once for the step's statistics


@dataclass
class _Step:
    """The micro-batches of one optimizer step on this rank, and what was computed over all of them."""

    micro: list[_MicroBatch] = field(default_factory=list)
    prepared: bool = False
    thresholds: Optional[Thresholds] = None  # the routing thresholds over the step (None: no routing statistics)
    denominator: Optional[float] = None  # tokens (aggregation token) or sequences (sequence) of the step's mean

    def index_of(self, samples: list) -> Optional[int]:
        for i, mb in enumerate(self.micro):  # the Trainer hands the very sample objects back (no copies)
            if len(mb.samples) == len(samples) and all(a is b for a, b in zip(mb.samples, samples)):
                return i
        return None


class DOPDTrainer(BaseTrainer):
    timed_phases = ("rollout", "scoring")

    def __init__(
        self,
        *args: Any,
        adapter: ModelAdapter,
        teacher: Optional[torch.nn.Module] = None,
        teacher_adapter: Optional[ModelAdapter] = None,
        loss_config: Optional[DOPDLossConfig] = None,
        distill_args: Optional[DistillArguments] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, adapter=adapter, distill_args=distill_args, **kwargs)
        self.teacher = teacher
        self.teacher_adapter = teacher_adapter or adapter
        self.loss_config = loss_config
        # resolved once, by the loss config (`routing_scope`, `routing_across_ranks`)
        self.routing_unit, self.rank_scope = ((loss_config.routing_unit, loss_config.rank_scope)
                                              if loss_config is not None else ("micro_batch", "local"))
        self._step: Optional[_Step] = None
        self._head_gather = contextlib.ExitStack()
        self.rollout_engine = build_rollout_engine(getattr(self.rollout_args, "rollout_engine", "hf") or "hf",
                                                   adapter, self.accelerator, self.args.device) \
            if self.rollout_args else None
        if self.routing_unit == "step":
            # each micro-batch's loss is its share of the step's mean: the Trainer must not divide it again
            self.loss_is_scaled_for_ga = True
        if self.teacher is not None:
            self.teacher = prepare_teacher(self.teacher, self.accelerator, self.args.device)

    # ------------------------------------------------------------------ the step
    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        """The Trainer fetches the micro-batches of each optimizer step here, before the first one runs: remember
        them, so the first micro-batch can roll out, score and route the whole step."""
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self.set_step([b["samples"] for b in batch_samples if "samples" in b])
        return batch_samples, num_items

    def set_step(self, micro_batches: Optional[list[list[EncodedSample]]]) -> None:
        """The micro-batches (lists of samples) of the optimizer step about to run, or None. The first
        `compute_loss` of one of them rolls out, scores and routes them all; `get_batch_samples` calls this in the
        Trainer's loop, code that calls `compute_loss` itself (the probe) calls it first."""
        self._step = _Step([_MicroBatch(list(samples)) for samples in micro_batches]) if micro_batches else None

    def training_step(self, model: torch.nn.Module, inputs: dict, num_items_in_batch: Any = None) -> torch.Tensor:
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            self.release_heads()

    def release_heads(self) -> None:
        """After a micro-batch's backward: under ZeRO-3 the student's lm_head, gathered whole for its loss, is
        partitioned again (`training_step` does this; code that calls `compute_loss` and `backward` itself must)."""
        self._head_gather.close()

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        samples = inputs["samples"]
        self._start_micro_batch(samples)
        if self.routing_unit == "step":
            loss = self._step_loss(model, samples)
        else:  # micro_batch scope: this micro-batch is rolled out, scored and routed on its own
            rollout = self.rollout(model, samples)
            with self.timer.phase("scoring"):
                loss = self._distill_loss(model, samples, rollout)
        return self._guard_finite(loss)

    # ------------------------------------------------------------------ the step as the unit
    def _step_loss(self, model: torch.nn.Module, samples: list[EncodedSample]) -> torch.Tensor:
        step = self._step
        index = step.index_of(samples) if step is not None else None
        if index is None:  # called outside the Trainer's loop (no get_batch_samples): a step of one micro-batch
            step = self._step = _Step([_MicroBatch(list(samples))])
            index = 0
        if not step.prepared:
            self._prepare_step(model, step)
        mb = step.micro[index]
        with self.timer.phase("scoring"):
            targets = mb.targets if mb.targets is not None else self._score_targets(model, mb.samples, mb.rollout)
            mb.targets = None  # used once: free the cache as the step goes
            loss = self._distill_loss(model, mb.samples, mb.rollout, targets=targets, thresholds=step.thresholds,
                                      denominator=step.denominator, routing=mb.routing)
            mb.routing = None
        return loss

    def _prepare_step(self, model: torch.nn.Module, step: _Step) -> None:
        """Roll out every micro-batch of the step at once, score the no-grad passes, compute the step's routing
        statistics (across ranks when `rank_scope` is global) and the denominator of its mean."""
        rollout = self.rollout(model, [s for mb in step.micro for s in mb.samples])
        with self.timer.phase("scoring"):
            group = self.rollout_args.num_generations
            log_q_s: list[torch.Tensor] = []
            log_q_t: list[torch.Tensor] = []
            cache = getattr(self.rollout_args, "step_score_cache", "device")
            offset = 0
            for mb in step.micro:
                rows = slice(offset, offset + len(mb.samples) * group)
                offset = rows.stop
                mb.rollout = RolloutResult(prompts=rollout.prompts[rows], responses=rollout.responses[rows],
                                           num_tokens=sum(len(r) for r in rollout.responses[rows]),
                                           seconds=rollout.seconds)
                targets = self._score_targets(model, mb.samples, mb.rollout)
                if targets.hidden_p is not None and targets.hidden_t is not None:
                    # pass 1 of the objective, once: the step's statistics here, and this micro-batch's loss later
                    mb.routing = self._routing_pass(model, targets)
                    stat_s, stat_t = mb.routing.statistics(self.loss_config.routing_statistic)
                    log_q_s.append(stat_s)
                    log_q_t.append(stat_t)
                if cache == "cpu":
                    mb.targets = targets.to("cpu")
                elif cache == "device":
                    mb.targets = targets
                del targets
            if log_q_s:
                step.thresholds = compute_thresholds(torch.cat(log_q_s), torch.cat(log_q_t), self.loss_config.trim_fraction,
                                                     self.rank_scope)
            step.denominator = self._step_denominator(step, rollout)
            step.prepared = True

    def _routing_pass(self, model: torch.nn.Module, targets: ScoringTargets) -> RoutingPass:
        """Pass 1 of the objective on one micro-batch's no-grad passes (log q of the sampled tokens)."""
        student = self.accelerator.unwrap_model(model)
        head_s = self.adapter.unwrap(student).get_output_embeddings()
        check_same_tokens(targets.labels_p, targets.labels_t, "teacher")
        with gathered_parameters(head_s), gathered_parameters(targets.head_t):
            return distill.routing_pass_from_hidden(
                targets.hidden_p, targets.hidden_t, targets.labels_p.to(targets.hidden_p.device), head_s,
                targets.head_t, self.distill_args.loss_chunk_size or None, vocab_size=self.adapter.vocab_size)

    def _step_denominator(self, step: _Step, rollout: RolloutResult) -> float:
        """The step's mean: its (kept) tokens, or its non-empty sequences; across ranks, their mean per rank, so
        that the data-parallel gradient average gives the mean over every rank's tokens / sequences."""
        cfg = self.loss_config
        tokens = sum(_kept_tokens(cfg, [len(r) for r in mb.rollout.responses]) for mb in step.micro)
        seqs = sum(bool(r) for r in rollout.responses)
        counts = torch.tensor([float(tokens), float(seqs)], dtype=torch.float64, device=self.args.device)
        if self.rank_scope == "global":
            gathered = all_gather_varlen(counts)
            counts = gathered.view(-1, 2).mean(0)
        return float(counts[0] if cfg.loss_aggregation == "token" else counts[1])

    # ------------------------------------------------------------------ rollout
    def rollout(self, model: torch.nn.Module, samples: list[EncodedSample]) -> RolloutResult:
        """G answers per sample from the plain view, through the rollout engine (`rollout_engine`, HF by default;
        `rollout_batch_size` sequences per `generate` call)."""
        group = self.rollout_args.num_generations
        with self.timer.phase("rollout") as lap:
            self.rollout_engine.update_weights(model)
            out = self.rollout_engine.generate(model, [s.plain for s in samples], group, self.rollout_args)
        prompts, responses, calls = repeat_each([s.plain for s in samples], group), out.responses, out.calls
        num_tokens = sum(len(r) for r in responses)
        record = self.metrics.record
        record("rollout/tokens_per_s", num_tokens / max(lap.seconds, 1e-9))
        record("rollout/response_length", num_tokens / len(responses))
        record("rollout/sequences_per_generate", len(prompts) / max(calls, 1))
        stops = set(self.adapter.stop_token_ids)
        record("rollout/stopped_fraction", sum(bool(r) and r[-1] in stops for r in responses) / len(responses))
        return RolloutResult(prompts=prompts, responses=responses, num_tokens=num_tokens, seconds=lap.seconds)

    # ------------------------------------------------------------------ scoring and the objective
    def _score(self, model: torch.nn.Module, adapter: ModelAdapter, prompts: list,
               responses: list[list[int]]) -> ScoredPass:
        """Every teacher-forced forward of the trainer goes through here (`dopd.train.scoring.score_responses`)."""
        return score_responses(model, adapter, prompts, responses, self.args.device)

    def _score_targets(self, model: torch.nn.Module, samples: list[EncodedSample],
                       rollout: RolloutResult) -> ScoringTargets:
        """The no-grad passes of `samples`' answers (`dopd.train.scoring.score_targets`)."""
        student = Scorable(self.accelerator.unwrap_model(model), self.adapter)
        teacher = Scorable(self.teacher, self.teacher_adapter) if self.teacher is not None else None
        return score_targets(self._score, self.loss_config, samples, rollout.responses,
                             self.rollout_args.num_generations, student, teacher)

    def _distill_loss(self, model: torch.nn.Module, samples: list[EncodedSample], rollout: RolloutResult,
                      targets: Optional[ScoringTargets] = None, thresholds: Optional[Thresholds] = None,
                      denominator: Optional[float] = None, routing: Optional[RoutingPass] = None) -> torch.Tensor:
        """The graded pass and the objective for one micro-batch; `targets` (from `_score_targets`, possibly
        cached) and the step's `thresholds` / `denominator` / this micro-batch's `routing` pass when the step is the
        unit."""
        student = self.accelerator.unwrap_model(model)
        # the two no-grad passes first: their activations are gone before the student's graph is built
        if targets is None:
            targets = self._score_targets(model, samples, rollout)
        hidden_p, labels_p, hidden_t, labels_t, head_t = ScoringTargets(*targets).to(self.args.device)
        del targets
        hidden_s, labels, head_s = self._score(student, self.adapter, rollout.prompts, rollout.responses)
        if labels_p is not None:
            check_same_tokens(labels, labels_p, "privileged student")
        if labels_t is not None:
            check_same_tokens(labels, labels_t, "teacher")
        self._anchor_zero(hidden_s)
        # whole heads plus the number of valid rows: slicing the student's weight here would make autograd pad the
        # slice's gradient back to [V, H] (one more [V, H] copy at the peak of the backward).
        # ZeRO-3: each lm_head is gathered once for the loss (its weight exists whole only inside DeepSpeed's hooks
        # otherwise); the student's stays gathered until training_step's backward has handed it its weight
        # gradient (autograd accumulates that gradient into the parameter, which must then be whole).
        self._head_gather.enter_context(gathered_parameters(head_s))
        with gathered_parameters(head_t):
            out = distill.dopd_loss_from_hidden(
                hidden_s, hidden_p, hidden_t, labels, head_s, head_t, config=self.loss_config,
                chunk_size=self.distill_args.loss_chunk_size or None, vocab_size=self.adapter.vocab_size,
                thresholds=thresholds, denominator=denominator, routing=routing,
            )
        for key, value in out.metrics.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.metrics.record(f"dopd/{key}", value)
        return out.loss


def _kept_tokens(cfg: DOPDLossConfig, lengths: list[int]) -> int:
    """Tokens of one micro-batch that enter the loss: all response tokens, less what the pruning probe drops (it
    drops round(fraction x n) of each call's n tokens)."""
    n = sum(lengths)
    if cfg.prune_mode is not None and n:
        n -= int(round(cfg.prune_fraction * n))
    return n
