"""Canonical samples -> encoded prompt views, lazily, one sample at a time.

Images are loaded and the views rendered in `__getitem__` (not up front) so a large dataset costs no memory
before training and a DataLoader with workers can overlap it with the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from torch.utils.data import Dataset

from dopd.data import build_views, text_only_view
from dopd.model.compat import same_prompt_encoding


@dataclass
class EncodedSample:
    """What one training example carries into a step: the deployed view x and the privileged view x+p."""

    uid: str
    plain: Any  # EncodedPrompt for the student (x)
    privileged: Any  # EncodedPrompt for the student (x+p)
    teacher: Any  # EncodedPrompt for the teacher (x+p, or x when the teacher does not see p)
    has_privilege: bool
    response: Optional[str]


class PromptViewDataset(Dataset):
    def __init__(
        self,
        samples: Sequence[Any],
        student_adapter: Any,
        data_args: Any,
        teacher_adapter: Optional[Any] = None,
        teacher_sees_privileged: bool = True,
    ) -> None:
        self.samples = list(samples)
        self.student_adapter = student_adapter
        self.teacher_adapter = teacher_adapter
        self.data_args = data_args
        self.teacher_sees_privileged = teacher_sees_privileged
        # reuse the student's encoded prompts for the teacher only when it would encode them identically
        # (rendered templates compared, not adapter classes: one family's checkpoints can differ in template)
        self.teacher_reads_student_ids = False
        if teacher_adapter is not None:
            self.teacher_reads_student_ids = same_prompt_encoding(student_adapter, teacher_adapter)

    def __len__(self) -> int:
        return len(self.samples)

    def views(self, index: int) -> tuple[Any, Any, Optional[Any]]:
        """The prompt views (messages + PIL images) that `__getitem__` encodes: student x, student x+p, and the
        teacher's own view when it renders one (None when it reads the student's token ids or there is no
        teacher). `dopd-cli render --save-images` writes these images, so they are exactly what each model gets."""
        sample = self.samples[index]
        plain_view, priv_view = build_views(sample, self.student_adapter, self.data_args)
        teacher_view = None
        if self.teacher_adapter is not None and not self.teacher_reads_student_ids:
            teacher_view = priv_view if self.teacher_sees_privileged else plain_view
            if self.teacher_sees_privileged and self.teacher_adapter.grounding != self.student_adapter.grounding:
                # boxes are written in the reader's own convention: render x+p again for the teacher
                _, teacher_view = build_views(sample, self.teacher_adapter, self.data_args)
            if not getattr(self.teacher_adapter, "is_vlm", False):
                teacher_view = text_only_view(teacher_view)
        return plain_view, priv_view, teacher_view

    def __getitem__(self, index: int) -> EncodedSample:
        sample = self.samples[index]
        plain_view, priv_view, teacher_view = self.views(index)
        cutoff = self.data_args.cutoff_len
        plain = self.student_adapter.encode_prompt(plain_view, cutoff)
        privileged = self.student_adapter.encode_prompt(priv_view, cutoff) if priv_view.has_privilege else plain
        teacher = None
        if self.teacher_adapter is not None:
            if self.teacher_reads_student_ids:
                # same vocabulary, rendered templates and image processing: the very same token ids
                teacher = (privileged if self.teacher_sees_privileged else plain)
            else:
                teacher = self.teacher_adapter.encode_prompt(teacher_view, cutoff)
        return EncodedSample(
            uid=sample.uid, plain=plain, privileged=privileged, teacher=teacher,
            has_privilege=bool(priv_view.has_privilege), response=sample.response,
        )


def collate_encoded_samples(features: list[EncodedSample]) -> dict[str, list[EncodedSample]]:
    """Keep samples as objects: the step builds its own padded batches after the rollout."""
    return {"samples": features}
