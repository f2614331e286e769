"""Shared fixtures: tiny random-init models, built once per test session and cached on disk.

The cache folder is `$DOPD_TINY_DIR` when set (reuse across sessions), else a session temp dir; the env var is
set for the whole session so `tiny:<family>` model names in configs (dopd.model.paths) resolve to the same
folders (`<family>-<size>-<tokenizer>`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.environ.get("DOPD_TINY_DIR"):
        os.environ["DOPD_TINY_DIR"] = str(tmp_path_factory.mktemp("tiny_models"))
    path = Path(os.environ["DOPD_TINY_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_dir: Path) -> Callable[..., str]:
    """`tiny_model(family, size="student", tokenizer="bpe") -> folder`, built on first request only."""
    from dopd.model.tiny import build_tiny_model

    def get(family: str, size: str = "student", tokenizer: str = "bpe") -> str:
        out = tiny_dir / f"{family}-{size}-{tokenizer}"
        if not (out / "config.json").is_file():
            build_tiny_model(family, out, size=size, tokenizer=tokenizer)
        return str(out)

    return get


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that runs a pipeline in-process (the testbed sets 1 thread) must not change the thread count of the
    tests after it: bit-exact checks and timings depend on it."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)
