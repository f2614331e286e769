"""The testbed's mechanism check (`--variant confirm`, issue 24): the premise variant on other seeds with the fixed
method list (presets and config keys), its own section in testbed.md, the other seeds' SFT beside the lr search.
`--quick` checks the pipeline, not the outcome, into a temp folder."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_confirm_variant_runs_into_tmp(tmp_path):
    before = (REPO / "docs" / "testbed.md").read_bytes()
    out = tmp_path / "work"
    cmd = [sys.executable, "-m", "benchmarks.privilege_illusion", "--variant", "confirm", "--quick", "--out", str(out),
           "--seeds", "0,1", "--jobs", "2"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (REPO / "docs" / "testbed.md").read_bytes() == before, "the quick run overwrote docs/"

    results = json.loads((out / "results.json").read_text())
    cfg = results["config"]
    assert cfg["variant"] == "confirm" and cfg["teacher_data"] == "mixed"
    assert cfg["methods"] == ["vanilla_opd_priv", "vanilla_opd_priv_full_rkl", "dopd", "dopd_veto", "dopd_top1",
                              "dopd_hs_teacher"]
    assert cfg["distill_lr"] == results["lr_selection"]["chosen_lr"]
    for seed in results["seeds"]:
        assert set(seed["methods"]) == set(cfg["methods"])
    # the second seed's SFT ran beside the lr search, and run_seed found it done
    assert (out / "seed1" / "student" / "dopd_sft_done.json").is_file()
    veto_log = results["seeds"][0]["methods"]["dopd_veto"]["log"]
    assert all(r.get("dopd/HS/teacher_rejected_frac", 0.0) == 0.0 for r in veto_log)
    page = (out / "report" / "testbed.md").read_text()
    assert "## Mechanism check (issue 24)" in page and "mean [95% CI over seeds]" in page
    assert "`dopd_top1`" in page and "### Diagnostics" in page

    # the per-token gradient probe (H1, H2) runs on the same work folder's SFT models
    from benchmarks.privilege_illusion.gradient_probe import main as probe

    assert probe(["--work", str(out), "--seeds", "0", "--steps", "1", "--json", str(tmp_path / "probe.json")]) == 0
    found = json.loads((tmp_path / "probe.json").read_text())["seeds"]["0"]
    assert found["counts"]["tokens"] > 0 and set(found["ht_grad_norm"]) == {"js", "rkl"}


def test_quick_confirm_variant_on_the_vlm_task(tmp_path):
    before = (REPO / "docs" / "testbed_vlm.md").read_bytes()
    out = tmp_path / "work"
    cmd = [sys.executable, "-m", "benchmarks.privilege_illusion", "--task", "vlm", "--variant", "confirm", "--quick",
           "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (REPO / "docs" / "testbed_vlm.md").read_bytes() == before, "the quick run overwrote docs/"
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["task"] == "vlm" and results["config"]["variant"] == "confirm"
    assert set(results["seeds"][0]["methods"]) == set(results["config"]["methods"])
    page = (out / "report" / "testbed_vlm.md").read_text()
    assert "## Mechanism check (issue 24)" in page and "This page's task" in page
    assert (out / "report" / "testbed_confirm_vlm_curves.png").stat().st_size > 0
