"""The privilege-illusion testbed's --quick mode: the pipeline runs end to end (data -> teacher SFT on x+p ->
student SFT on x -> every distillation method and the pruning probe -> held-out evaluation without p -> page and
curves) into a temp folder, for the text task and (`--task vlm`) the VLM task. It checks the pipeline, not the
outcome; and that the committed docs/testbed*.md / .png pages are left alone."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = ("testbed.md", "testbed_curves.png", "testbed_vlm.md", "testbed_vlm_curves.png")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def _run_quick(tmp_path, extra):
    before = [_digest(REPO / "docs" / name) for name in DOCS]
    out = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.privilege_illusion", *extra, "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [_digest(REPO / "docs" / name) for name in DOCS] == before, "the quick run overwrote docs/testbed*"
    return out


def _check_methods(seed):
    from benchmarks.privilege_illusion.pipeline import DEFAULT_METHODS

    assert set(seed["methods"]) == set(DEFAULT_METHODS)
    for name, run in seed["methods"].items():
        assert 0.0 <= run["final"]["accuracy"] <= 1.0, name
        assert [p["step"] for p in run["curve"]][0] == 0 and len(run["curve"]) >= 2, name
        assert any("dopd/student_entropy" in r for r in run["log"]), name
    dopd_log = seed["methods"]["dopd"]["log"]
    assert any(f"dopd/{r}/token_frac" in e for e in dopd_log for r in ("HT", "HS", "LH", "LL"))
    assert any("dopd/pruned_frac" in e for e in seed["methods"]["probe_top"]["log"])


def test_quick_testbed_runs_into_tmp_and_leaves_docs_alone(tmp_path):
    from benchmarks.privilege_illusion.pipeline import DEFAULT_METHODS

    out = _run_quick(tmp_path, [])
    page = out / "report" / "testbed.md"
    assert page.is_file() and (out / "report" / "testbed_curves.png").stat().st_size > 0
    text = page.read_text()
    assert "Quick mode" in text and "python -m benchmarks.privilege_illusion --quick" in text
    for row in ("student before distillation", "teacher (SFT on x+p), evaluated with p",
                "teacher (SFT on x+p), evaluated without p"):
        assert row in text, row
    for method in DEFAULT_METHODS:
        assert f"(`{method}`)" in text, method

    results = json.loads((out / "results.json").read_text())
    assert results["config"]["task"] == "text"
    _check_methods(results["seeds"][0])
    # the registry the pipeline wrote reads like data/dataset_info.json (sharegpt + privileged column)
    info = json.loads((out / "data" / "dataset_info.json").read_text())
    assert info["pi_text_train"]["columns"]["privileged"] == "privileged"
    assert info["pi_text_train"]["formatting"] == "sharegpt"


def test_quick_vlm_testbed_runs_into_tmp_and_leaves_docs_alone(tmp_path):
    """`--task vlm --quick`: tiny Qwen2-VL teacher and student, shape images, p = the labelled box (boxes_text)."""
    from benchmarks.privilege_illusion.pipeline import DEFAULT_METHODS

    out = _run_quick(tmp_path, ["--task", "vlm"])
    page = out / "report" / "testbed_vlm.md"
    assert page.is_file() and (out / "report" / "testbed_vlm_curves.png").stat().st_size > 0
    assert not (out / "report" / "testbed.md").exists()
    text = page.read_text()
    assert "Quick mode" in text and "python -m benchmarks.privilege_illusion --task vlm --quick" in text
    assert "## The task (VLM, generated on the fly)" in text and "covered-shape q. (%)" in text
    for method in DEFAULT_METHODS:
        assert f"(`{method}`)" in text, method

    results = json.loads((out / "results.json").read_text())
    assert results["config"]["task"] == "vlm" and results["config"]["family"] == "qwen2_vl"
    _check_methods(results["seeds"][0])
    info = json.loads((out / "data" / "dataset_info.json").read_text())
    assert info["pi_vlm_train"]["columns"]["images"] == "images"
    assert info["pi_vlm_train"]["privilege"] == ["boxes_text"]
    rows = json.loads((out / "data" / "pi_vlm_train.json").read_text())
    assert rows[0]["messages"][0]["content"].startswith("<image>") and rows[0]["privileged"]["boxes"]
    assert (out / "data" / rows[0]["images"][0]).is_file()
    mixed = json.loads((out / "data" / "pi_vlm_train_mixed.json").read_text())
    assert "<|box_start|>" in mixed[1]["messages"][0]["content"]  # the x+p copy carries the boxes text
