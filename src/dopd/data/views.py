"""A canonical sample -> the two prompt views: x (what the deployed model sees) and x+p (privileged).

Tokenisation, the chat template and `cutoff_len` are the model adapter's job (`encode_prompt`), not this module's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

from PIL import Image

from dopd.hparams import DataArguments

from .grounding import get_convention
from .privilege import PROCESSORS, PrivilegeContext, processor_names
from .sample import IMAGE_PLACEHOLDER, CanonicalSample
from .vision import DefaultVision, VisionSpec


@dataclass
class PromptView:
    messages: list[dict[str, str]]  # {"role", "content"}, `<image>` placeholders in the text
    images: list[Image.Image] = field(default_factory=list)  # in placeholder order
    has_privilege: bool = False


def build_views(
    sample: CanonicalSample, vision: Optional[VisionSpec] = None, data_args: Optional[Any] = None
) -> tuple[PromptView, PromptView]:
    """(plain, privileged). The plain view carries no trace of p. The privileged one applies the sample's
    processors (or `data_args.privilege`) in order; when none applies it equals the plain view with
    `has_privilege=False`. Images are loaded here, through `vision.load_image` (resized as the model sees them)."""
    if vision is None:
        vision = DefaultVision()
    if data_args is None:
        data_args = DataArguments()

    loaded: dict[str, Image.Image] = {}
    for path in sample.images:
        if path not in loaded:
            loaded[path] = vision.load_image(path)
    images = [loaded[p] for p in sample.images]
    plain = PromptView(messages=copy.deepcopy(sample.messages), images=list(images))

    names = processor_names(sample, data_args)
    if not names or (sample.privileged.is_empty() and "reference" not in names):
        return plain, PromptView(copy.deepcopy(plain.messages), list(plain.images))

    ctx = PrivilegeContext(sample, vision, data_args, get_convention(vision.grounding), images=list(images))
    applied = False
    for name in names:
        applied = PROCESSORS[name](ctx) or applied
    if not applied:
        return plain, PromptView(copy.deepcopy(plain.messages), list(plain.images))

    messages = copy.deepcopy(sample.messages)
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last_user]["content"] = messages[last_user]["content"] + "".join(ctx.blocks)
    return plain, PromptView(messages=messages, images=ctx.images, has_privilege=True)


def text_only_view(view: PromptView) -> PromptView:
    """The same view with image placeholders and images removed: what a text-only model reads of an image sample
    (the text-only teacher of a VLM student in training, and any text model in `dopd-cli eval` and the probe)."""
    stripped = copy.copy(view)
    stripped.messages = [{**m, "content": m["content"].replace(IMAGE_PLACEHOLDER, "").strip()} for m in view.messages]
    stripped.images = []
    return stripped
