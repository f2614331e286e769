"""Student/teacher compatibility, checked before the first step.

DOPD scores the student's sampled token ids under the teacher, so both must read token ids the same way:
- the same tokenizer vocabulary (id -> token identical over every id either tokenizer produces); a model whose
  logit width exceeds its tokenizer (padded embedding rows) is fine: the extra columns are sliced off;
- the same chat-template family (the response is appended after each model's own generation prompt, so the
  end-of-turn conventions must match);
- a VLM teacher for a VLM student, unless `teacher_text_only` (the teacher then reads the text of x+p only).
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

from .adapters.base import ModelAdapter

_PROBE = [{"role": "user", "content": "DOPD_PROBE_USER"}]
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
    from dopd.hparams import ConfigError

    names = f"student {student.name_or_path!r} and teacher {teacher.name_or_path!r}"
    diff = first_vocab_difference(student, teacher)
    if diff is not None:
        raise ConfigError(f"{names} do not share a tokenizer vocabulary: {diff}. DOPD needs the same token ids "
                          "in both models.")
    fam_s, fam_t = chat_template_family(student), chat_template_family(teacher)
    if fam_s != fam_t:
        raise ConfigError(f"{names} use different chat-template families ({fam_s} vs {fam_t})")
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
