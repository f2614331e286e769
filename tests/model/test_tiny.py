"""Tiny model builder and scripts/make_tiny_models.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from dopd.model import tiny


def test_teacher_larger_than_student_and_vocab_padded(tiny_model) -> None:
    from transformers import AutoConfig

    s = AutoConfig.from_pretrained(tiny_model("qwen3_vl", "student"))
    t = AutoConfig.from_pretrained(tiny_model("qwen3_vl", "teacher"))
    assert t.text_config.hidden_size > s.text_config.hidden_size
    assert t.text_config.num_hidden_layers > s.text_config.num_hidden_layers
    assert s.text_config.vocab_size % 64 == 0 and s.text_config.vocab_size == t.text_config.vocab_size
    meta = json.loads((Path(tiny_model("qwen3_vl", "student")) / "dopd_tiny.json").read_text())
    assert meta == {"family": "qwen3_vl", "size": "student", "tokenizer": "bpe", "seed": 0}


def test_build_is_deterministic(tmp_path) -> None:
    from safetensors.torch import load_file

    a = tiny.build_tiny_model("qwen2", tmp_path / "a", seed=3)
    b = tiny.build_tiny_model("qwen2", tmp_path / "b", seed=3)
    wa, wb = load_file(f"{a}/model.safetensors"), load_file(f"{b}/model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_script_builds_a_model(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_tiny_models", Path(tiny.repo_root()) / "scripts" / "make_tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "llama"
    assert module.main(["--family", "llama", "--size", "teacher", "--out", str(out)]) == 0
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 3


def test_missing_shared_tokenizer_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tiny, "repo_root", lambda: tmp_path / "repo")
    monkeypatch.delenv("DOPD_QWEN2_TOKENIZER", raising=False)
    with pytest.raises(FileNotFoundError, match="qwen2_tokenizer"):
        tiny.build_tiny_model("qwen2", tmp_path / "m", tokenizer="qwen2")


def test_unknown_family_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown tiny family"):
        tiny.build_tiny_model("gpt9", tmp_path / "m")


def test_tiny_names_resolve_to_built_folders_and_real_names_pass_through(tmp_path, monkeypatch) -> None:
    """`tiny:<family>[:<size>[:<tokenizer>]]` is built once under $DOPD_TINY_DIR (size defaults to the role);
    any other name is returned as given, without importing the tiny-model builder."""
    import subprocess
    import sys

    from dopd.model.paths import resolve_model_path

    monkeypatch.setenv("DOPD_TINY_DIR", str(tmp_path))
    folder = resolve_model_path("tiny:qwen2", "teacher")
    assert folder == str(tmp_path / "qwen2-teacher-bpe") and (tmp_path / "qwen2-teacher-bpe" / "config.json").is_file()
    assert resolve_model_path("tiny:qwen2:teacher:bpe", "student") == folder  # built once, then reused
    code = ("import sys; from dopd.model.paths import resolve_model_path as r; "
            "assert r('Qwen/Qwen2.5-0.5B', 'student') == 'Qwen/Qwen2.5-0.5B' and r(None, 'teacher') is None; "
            "assert 'dopd.model.tiny' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
