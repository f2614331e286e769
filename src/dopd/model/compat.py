"""Student/teacher compatibility, checked before the first step.

DOPD scores the student's sampled token ids under the teacher, so both must read token ids the same way:
- the same tokenizer vocabulary (id -> token identical over every id either tokenizer produces); a model whose
  logit width exceeds its tokenizer (padded embedding rows) is fine: the extra columns are sliced off;
- the same chat-template family and end-of-turn token (the response is appended after each model's own
  generation prompt, so the end-of-turn conventions must match);
- a VLM teacher for a VLM student, unless `teacher_text_only` (the teacher then reads the text of x+p only).

Whether the teacher can read the student's very token ids (`same_prompt_encoding`) is decided by rendering fixed
probe conversations through both adapters' own `render` (the chat template each actually uses, with its
template variables such as `enable_thinking`) and comparing the strings, plus the image processing for VLMs;
never by comparing adapter classes: two checkpoints of one family can ship different templates.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Optional

from dopd.hparams import ConfigError

from .adapters.base import ModelAdapter

logger = logging.getLogger(__name__)

_PROBE = [{"role": "user", "content": "DOPD_PROBE_USER"}]
#: rendered through both adapters to compare their templates: a system turn, a finished exchange, a last question
PROBE_CONVERSATION = [
    {"role": "system", "content": "DOPD_PROBE_SYSTEM"},
    {"role": "user", "content": "DOPD_PROBE_USER_1"},
    {"role": "assistant", "content": "DOPD_PROBE_ASSISTANT"},
    {"role": "user", "content": "DOPD_PROBE_USER_2"},
]
PROBE_DEFAULT_SYSTEM = [{"role": "user", "content": "DOPD_PROBE_USER"}]  # templates differ in default system prompts
PROBE_IMAGE = [{"role": "user", "content": "<image>DOPD_PROBE_IMAGE<image>"}]
_FAMILY_MARKERS = (
    ("chatml", "<|im_start|>user\nDOPD_PROBE_USER<|im_end|>"),
    ("llama3", "<|start_header_id|>user<|end_header_id|>"),
    ("gemma", "<start_of_turn>user"),
    ("mistral", "[INST]"),
)


def chat_template_family(adapter: ModelAdapter) -> str:
    """'chatml', 'llama3', 'gemma', 'mistral', or 'other:<hash of the rendered probe>'."""
    text = adapter.render(_PROBE)
    for name, marker in _FAMILY_MARKERS:
        if marker in text:
            return name
    return "other:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def rendered_probes(adapter: ModelAdapter) -> list[str]:
    """The probe conversations as the adapter renders prompts (its own `render`: template + template variables)."""
    probes = [PROBE_CONVERSATION, PROBE_DEFAULT_SYSTEM] + ([PROBE_IMAGE] if adapter.is_vlm else [])
    out = []
    for probe in probes:
        try:
            out.append(adapter.render([dict(m) for m in probe]))
        except Exception as err:  # noqa: BLE001 - a template that refuses a probe (e.g. no system role)
            out.append(f"<render failed: {type(err).__name__}: {err}>")
    return out


def first_render_difference(student: ModelAdapter, teacher: ModelAdapter) -> Optional[str]:
    """None when both adapters render the probe conversations identically; else where they first differ."""
    for s, t in zip(rendered_probes(student), rendered_probes(teacher)):
        if s != t:
            i = next((k for k, (a, b) in enumerate(zip(s, t)) if a != b), min(len(s), len(t)))
            return f"at character {i}: student {s[max(0, i - 20):i + 40]!r} vs teacher {t[max(0, i - 20):i + 40]!r}"
    return None


def _image_processing(adapter: ModelAdapter) -> Any:
    processor = getattr(adapter, "processor", None)
    image_processor = getattr(processor, "image_processor", None)
    return (getattr(adapter, "pixel_bounds", None), getattr(adapter, "image_factor", None),
            image_processor.to_json_string() if image_processor is not None else None)


def same_prompt_encoding(student: ModelAdapter, teacher: ModelAdapter) -> bool:
    """True when the teacher would encode every prompt view exactly as the student does (same token ids, same
    pixel values), so the student's encoded prompts can be reused for it: same vocabulary, same rendered
    templates, same grounding convention and, for VLMs, the same image processing."""
    if student is teacher:
        return True
    if student.is_vlm != teacher.is_vlm or student.grounding != teacher.grounding:
        return False
    if first_vocab_difference(student, teacher) is not None:
        return False
    if student.is_vlm and _image_processing(student) != _image_processing(teacher):
        return False
    return first_render_difference(student, teacher) is None


def _id_to_token(adapter: ModelAdapter) -> dict[int, str]:
    return {int(i): t for t, i in adapter.tokenizer.get_vocab().items()}


def first_vocab_difference(student: ModelAdapter, teacher: ModelAdapter) -> Optional[str]:
    """None when both tokenizers map every id to the same token; else a description of the first difference."""
    s, t = _id_to_token(student), _id_to_token(teacher)
    for i in sorted(set(s) | set(t)):
        if s.get(i) != t.get(i):
            return (f"token id {i} is {s.get(i)!r} for the student and {t.get(i)!r} for the teacher "
                    f"(vocabulary sizes {len(s)} and {len(t)})")
    return None


def _logit_width(model: Any) -> Optional[int]:
    if model is None:
        return None
    head = ModelAdapter.unwrap(model).get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else None


def check_compatibility(student: ModelAdapter, teacher: ModelAdapter, model_args: Any = None,
                        student_model: Any = None, teacher_model: Any = None) -> None:
    """Raise `dopd.hparams.ConfigError` (naming both models) when the teacher cannot score the student's tokens."""
    names = f"student {student.name_or_path!r} and teacher {teacher.name_or_path!r}"
    diff = first_vocab_difference(student, teacher)
    if diff is not None:
        raise ConfigError(f"{names} do not share a tokenizer vocabulary: {diff}. DOPD needs the same token ids "
                          "in both models.")
    fam_s, fam_t = chat_template_family(student), chat_template_family(teacher)
    if fam_s != fam_t:
        raise ConfigError(f"{names} use different chat-template families ({fam_s} vs {fam_t})")
    if student.end_of_turn_id != teacher.end_of_turn_id:
        raise ConfigError(f"{names} end an assistant turn with different tokens (ids {student.end_of_turn_id} and "
                          f"{teacher.end_of_turn_id}): the teacher could not score the student's end of turn")
    diff = first_render_difference(student, teacher)
    if diff is not None:
        logger.warning("%s render prompts differently (%s): each model reads the prompt in its own template",
                       names, diff)
    text_only = bool(getattr(model_args, "teacher_text_only", False))
    if student.is_vlm and not teacher.is_vlm and not text_only:
        raise ConfigError(f"{names}: the student is a vision-language model ({student.model_type}) but the teacher "
                          f"is text-only ({teacher.model_type}); use a VLM teacher or set teacher_text_only: true "
                          "(the teacher then reads the text of x+p, without images)")
    for which, model in (("student", student_model), ("teacher", teacher_model)):
        width = _logit_width(model)
        if width is not None and width < student.vocab_size:
            raise ConfigError(f"{names}: the {which}'s logits have {width} columns, fewer than the "
                              f"{student.vocab_size} tokens of the tokenizer")
