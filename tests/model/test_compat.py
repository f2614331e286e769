"""check_compatibility: same token ids, same chat-template family, VLM teacher for a VLM student."""

from __future__ import annotations

import pytest
from model_helpers import load

from dopd.hparams import ConfigError, ModelArguments
from dopd.model import check_compatibility


def test_same_family_student_teacher_pass(tiny_model) -> None:
    s, s_model = load(tiny_model("qwen2_vl", "student"))
    t, t_model = load(tiny_model("qwen2_vl", "teacher"), "teacher")
    # logits padded beyond the tokenizer (640 columns for 614 tokens) are fine
    assert s_model.get_output_embeddings().weight.shape[0] > s.vocab_size
    check_compatibility(s, t, ModelArguments(), student_model=s_model, teacher_model=t_model)


def test_text_teacher_for_text_student_of_other_arch_passes(tiny_model) -> None:
    s, _ = load(tiny_model("qwen3", "student"))
    t, _ = load(tiny_model("llama", "teacher"), "teacher")
    check_compatibility(s, t, ModelArguments())


def test_different_vocabulary_is_refused(tiny_model) -> None:
    s, _ = load(tiny_model("qwen2", "student", "bpe"))
    s_path, t_path = tiny_model("qwen2", "student", "bpe"), tiny_model("qwen2_vl", "student", "qwen2")
    t, _ = load(t_path, "teacher")
    with pytest.raises(ConfigError) as err:
        check_compatibility(s, t, ModelArguments(teacher_text_only=True))
    msg = str(err.value)
    assert s_path in msg and t_path in msg and "token id" in msg


def test_text_teacher_for_vlm_student_needs_teacher_text_only(tiny_model) -> None:
    s_path, t_path = tiny_model("qwen2_vl", "student"), tiny_model("qwen2", "teacher")
    s, _ = load(s_path)
    t, _ = load(t_path, "teacher")
    with pytest.raises(ConfigError) as err:
        check_compatibility(s, t, ModelArguments())
    assert s_path in str(err.value) and t_path in str(err.value) and "teacher_text_only" in str(err.value)
    check_compatibility(s, t, ModelArguments(teacher_text_only=True))


def test_different_chat_template_family_is_refused(tiny_model) -> None:
    import copy

    s, _ = load(tiny_model("qwen2", "student"))
    t, _ = load(tiny_model("qwen2", "teacher"), "teacher")
    t = copy.copy(t)
    t.tokenizer = copy.deepcopy(t.tokenizer)
    t.tokenizer.chat_template = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
                                 "{{ m['content'] }}{% endfor %}")
    with pytest.raises(ConfigError, match="chat-template"):
        check_compatibility(s, t, ModelArguments())
