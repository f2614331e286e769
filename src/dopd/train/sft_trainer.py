"""SFTTrainer (`stage: sft`): supervised fine-tuning on the samples' reference responses, e.g. to make a testbed's
teachers. No rollout, no teacher: each micro-batch is one teacher-forced pass of the student and its cross-entropy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dopd.train.base_trainer import BaseTrainer
from dopd.train.dataset import EncodedSample
from dopd.train.scoring import score_responses


class SFTTrainer(BaseTrainer):
    def compute_loss(
        self, model: torch.nn.Module, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        samples = inputs["samples"]
        self._start_micro_batch(samples)
        return self._guard_finite(self._sft_loss(model, samples))

    def _sft_loss(self, model: torch.nn.Module, samples: list[EncodedSample]) -> torch.Tensor:
        """The token mean of the cross-entropy of the reference responses, on the plain view x (or x+p with
        `sft_view: privileged`)."""
        use_privileged = getattr(self.args, "sft_view", "plain") == "privileged"
        prompts = [s.privileged if use_privileged else s.plain for s in samples]
        missing = [s.uid for s in samples if not s.response]
        if missing:
            raise ValueError(f"stage sft needs a reference response; samples without one: {missing[:5]}")
        responses = [self.adapter.encode_response(s.response) for s in samples]
        student = self.accelerator.unwrap_model(model)
        hidden, labels, lm_head = score_responses(student, self.adapter, prompts, responses, self.args.device)
        self._anchor_zero(hidden)
        logits = lm_head(hidden)[..., : self.adapter.vocab_size].float()
        per_token = F.cross_entropy(logits.flatten(0, 1), labels.flatten().clamp_min(0), reduction="none")
        mask = labels.ne(-100).flatten().float()
        loss = (per_token * mask).sum() / mask.sum().clamp_min(1.0)
        self.metrics.record("sft/response_length", float(mask.sum()) / len(samples))
        return loss
