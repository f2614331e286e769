"""`dopd-cli check-data`: summaries and exit codes; the demo data and its generator."""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from data_testutils import SHAREGPT, make_image, vqa_row

from dopd.cli import main
from dopd.model.check_data import run_check_data_cli
from dopd.hparams import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write_config(tmp_path, **keys) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in keys.items()))
    return str(path)


@pytest.fixture
def bad_dataset(registry, tmp_path):
    make_image(tmp_path / "img.png", (200, 100))
    rows = [vqa_row(["img.png"], "Look at the left half.")] * 3 + [
        vqa_row(["img.png"], {"boxes": [{"label": "x", "bbox": [0, 0, 300, 10]}]})]
    registry.add("bad", rows, SHAREGPT)
    registry.add("good", rows[:2], SHAREGPT)
    return registry


def test_check_data_exit_codes_and_summary(bad_dataset, tmp_path, capsys):
    cfg = write_config(tmp_path, dataset="good,bad", dataset_dir=tmp_path, learning_rate=1e-5)
    assert run_check_data_cli(cfg, []) == 1
    out = capsys.readouterr().out
    assert "good (" in out and "2 samples, 2 ok, 0 invalid (0.0%)" in out
    assert "4 samples, 3 ok, 1 invalid (25.0%)" in out
    assert re.search(r"box: 1 issue\(s\) in 1 sample\(s\): bad:3", out)
    assert "bad.json: sample 3: field `privileged.boxes[0].bbox`: [0.0, 0.0, 300.0, 10.0] lies outside" in out
    assert "check-data: FAILED for bad" in out
    assert run_check_data_cli(cfg, ["max_invalid_fraction=0.25"]) == 0
    assert "check-data: OK (2 dataset(s)" in capsys.readouterr().out
    assert run_check_data_cli(cfg, ["dataset=good"]) == 0


def test_check_data_missing_file_fails_and_config_errors_raise(registry, tmp_path, capsys):
    registry.add("gone", None)
    cfg = write_config(tmp_path, dataset="gone", dataset_dir=tmp_path)
    assert run_check_data_cli(cfg, []) == 1
    assert "gone: cannot load: dataset `gone`: file not found" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"unknown key `datset` \(did you mean: dataset"):
        run_check_data_cli(cfg, ["datset=gone"])
    with pytest.raises(ConfigError, match="not in"):
        run_check_data_cli(cfg, ["dataset=nothing_here"])
    with pytest.raises(ConfigError, match="no dataset given"):
        run_check_data_cli(None, [f"dataset_dir={tmp_path}"])


def test_cli_dispatch_exit_codes(bad_dataset, tmp_path, capsys):
    cfg = write_config(tmp_path, dataset="bad", dataset_dir=tmp_path)
    for argv, code in (([cfg], 1), ([cfg, "max_invalid_fraction=0.5"], 0), ([cfg, "unknown_key=1"], 2)):
        with pytest.raises(SystemExit) as exc:
            main(["check-data", *argv])
        assert exc.value.code == code, argv
    assert "unknown key `unknown_key`" in capsys.readouterr().err


def test_check_data_with_a_model_reports_prompt_lengths(repo_data_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("dopd.model.loader")
    pytest.importorskip("dopd.model.paths")
    if not os.environ.get("DOPD_TINY_DIR"):  # tests/conftest.py shares one tiny-model cache per session
        monkeypatch.setenv("DOPD_TINY_DIR", str(tmp_path / "tiny"))
    code = run_check_data_cli(None, [f"dataset_dir={repo_data_dir}", "dataset=vlm_demo",
                                     "model_name_or_path=tiny:qwen2_vl:student", "max_samples=4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4 with privilege, 0 truncated" in out
    x, xp = (re.search(rf"{re.escape(v)}: min (\d+), mean [\d.]+, max (\d+) tokens", out) for v in ("x  ", "x+p"))
    assert x and xp and int(xp.group(1)) > int(x.group(2)) > 0  # p adds tokens to every prompt


def test_demo_data_content(repo_data_dir):
    vlm = json.loads((repo_data_dir / "vlm_demo.json").read_text())
    assert len(vlm) >= 24
    assert all(s["privileged"]["boxes"] and s["privileged"]["crops"] for s in vlm)
    assert all(re.search(r"Answer: \S", s["messages"][-1]["content"]) for s in vlm)
    media = list((repo_data_dir / "vlm_demo").iterdir())
    assert sum(p.stat().st_size for p in media) < 1_000_000 and {p.suffix for p in media} == {".png", ".jpg"}
    llm = [json.loads(line) for line in (repo_data_dir / "llm_demo.jsonl").read_text().splitlines()]
    assert len(llm) >= 24
    for row in llm:
        answer = re.search(r"Answer: (.+)$", row["output"]).group(1)
        assert not re.search(rf"(?<![\w-]){re.escape(answer)}(?!\w)", row["privileged"]), row


def test_demo_data_generator_is_deterministic(repo_data_dir, tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_demo_data.py"), str(tmp_path)], check=True,
                   capture_output=True)
    for name in ("vlm_demo.json", "llm_demo.jsonl"):
        assert filecmp.cmp(tmp_path / name, repo_data_dir / name, shallow=False), name
    cmp = filecmp.dircmp(tmp_path / "vlm_demo", repo_data_dir / "vlm_demo")
    assert not cmp.left_only and not cmp.right_only
    assert filecmp.cmpfiles(tmp_path / "vlm_demo", repo_data_dir / "vlm_demo", cmp.common, shallow=False)[1] == []
