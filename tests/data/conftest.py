"""Fixtures for the data tests: a throw-away registry in tmp_path, images of known sizes, the shared LF data."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_testutils import Registry

REPO = Path(__file__).resolve().parents[2]
LF_DATA = REPO / ".." / "shared" / "external" / "llamafactory_data"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def lf_data_dir() -> Path:
    if not (LF_DATA / "dataset_info.json").is_file():
        pytest.skip(f"LLaMA-Factory test data not found at {LF_DATA} (clone shared/ beside the repo)")
    return LF_DATA.resolve()


@pytest.fixture
def repo_data_dir() -> Path:
    return REPO / "data"


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path)
