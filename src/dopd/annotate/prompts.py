"""What the annotator is asked: labelled boxes in its own grounding convention, or an answer-free step-wise hint.

A request is a chat (`messages` with `<image>` placeholders, like every prompt in this repo) plus the image paths
in placeholder order; each backend turns it into its own input (the adapter's chat template, or OpenAI content
parts with data URLs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from dopd.data.sample import IMAGE_PLACEHOLDER, CanonicalSample

BOX_FORMATS = {
    "qwen2_vl": ("one per line, as <|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>, "
                 "with coordinates from 0 to 1000 of the image width and height"),
    "qwen2_5_vl": ('as a JSON list [{"bbox_2d": [x1, y1, x2, y2], "label": "..."}], with coordinates in pixels of '
                   "the image"),
    "qwen3_vl": ('as a JSON list [{"bbox_2d": [x1, y1, x2, y2], "label": "..."}], with coordinates from 0 to 1000 '
                 "of the image width and height"),
}
MULTI_IMAGE = {
    "qwen2_vl": "There are several images: write a line `Image N:` before the boxes of image N.",
    "qwen2_5_vl": 'There are several images: add "image": N (1 for the first image) to each object.',
    "qwen3_vl": 'There are several images: add "image": N (1 for the first image) to each object.',
}


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]  # {"role", "content"}, `<image>` placeholders in the text
    images: list[str] = field(default_factory=list)  # absolute paths, in placeholder order


def question_text(sample: CanonicalSample) -> str:
    """The sample's last user turn (the question, with its `<image>` placeholders)."""
    users = [m["content"] for m in sample.messages if m["role"] == "user"]
    return users[-1] if users else ""


def _with_images(sample: CanonicalSample, text: str) -> str:
    """Images that earlier turns hold come first, so every image of the sample is in the request, in order."""
    missing = len(sample.images) - text.count(IMAGE_PLACEHOLDER)
    return IMAGE_PLACEHOLDER * max(0, missing) + text


def boxes_request(sample: CanonicalSample, grounding: str) -> ChatRequest:
    question = question_text(sample).replace(IMAGE_PLACEHOLDER, "").strip()
    lines = [
        "Do not answer the question below. Locate the objects in the image that the question is about (the ones a "
        f"solver has to look at) and give each a short label and a bounding box, {BOX_FORMATS[grounding]}.",
    ]
    if len(sample.images) > 1:
        lines.append(MULTI_IMAGE[grounding])
    lines.append(f"Question: {question}")
    content = IMAGE_PLACEHOLDER * len(sample.images) + "\n".join(lines)
    return ChatRequest([{"role": "user", "content": content}], list(sample.images))


HINT_INSTRUCTION = (
    "Write a hint for the problem below: the key ideas or steps that lead to the solution, as a few short numbered "
    "steps. The hint must NOT state the final answer, any value equal to it, or a complete solution, and must not use "
    "\\boxed{}. Output only the hint."
)


def hint_request(sample: CanonicalSample, previous_leak: Optional[str] = None) -> ChatRequest:
    question = question_text(sample)
    text = f"{HINT_INSTRUCTION}\n\nProblem:\n{question}"
    if sample.response:
        text += f"\n\nReference answer (for you only, never reveal it):\n{sample.response.strip()}"
    if previous_leak:
        text += (f"\n\nA previous hint was rejected: {previous_leak}. Write a new hint that does not reveal the "
                 "answer.")
    return ChatRequest([{"role": "user", "content": _with_images(sample, text)}], list(sample.images))
