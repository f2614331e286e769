"""The testbed's premise variant (`--variant premise`): teacher SFT on x and x+p, the distillation lr chosen on a
validation split, its own section in testbed.md (kept when the default page is regenerated). `--quick` checks the
pipeline, not the outcome, into a temp folder."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = ("testbed.md", "testbed_curves.png", "testbed_premise_curves.png")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def test_premise_section_replaces_itself_and_survives_the_default_page(tmp_path):
    from benchmarks.privilege_illusion.report import PREMISE_END, PREMISE_START, keep_premise_section

    md = tmp_path / "testbed.md"
    md.write_text(f"# old page\n\n{PREMISE_START}\nsection v1\n{PREMISE_END}\n")
    page = keep_premise_section(md, "# new default page\n")
    assert page.startswith("# new default page") and "section v1" in page and page.count(PREMISE_START) == 1
    md.write_text("# no section\n")
    assert keep_premise_section(md, "# new\n") == "# new\n"


def test_quick_premise_variant_runs_into_tmp(tmp_path):
    before = [_digest(REPO / "docs" / name) for name in DOCS]
    out = tmp_path / "work"
    cmd = [sys.executable, "-m", "benchmarks.privilege_illusion", "--variant", "premise", "--quick", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [_digest(REPO / "docs" / name) for name in DOCS] == before, "the quick run overwrote docs/"

    results = json.loads((out / "results.json").read_text())
    cfg = results["config"]
    assert cfg["variant"] == "premise" and cfg["teacher_data"] == "mixed"
    sel = results["lr_selection"]
    assert [r["lr"] for r in sel["rows"]] == [0.0, *cfg["lr_grid"]] and sel["chosen_lr"] in cfg["lr_grid"]
    assert cfg["distill_lr"] == sel["chosen_lr"]  # every method ran at the chosen lr
    assert sel["split"] == "pi_text_val" and (out / "data" / "pi_text_val.json").is_file()
    # the teacher's SFT read the mixed set (x and x+p) with the plain view
    teacher_args = json.loads((out / "seed0" / "teacher" / "dopd_sft_done.json").read_text())
    assert teacher_args["view"] == "plain"
    # the student reads p first (x+p alone, privileged view), then the mixed set
    priv_args = json.loads((out / "seed0" / "student_priv" / "dopd_sft_done.json").read_text())
    student_args = json.loads((out / "seed0" / "student" / "dopd_sft_done.json").read_text())
    assert (priv_args["view"], priv_args["steps"]) == ("privileged", cfg["student_priv_steps"])
    assert (student_args["view"], student_args["steps"]) == ("plain", cfg["student_steps"])
    dopd_log = results["seeds"][0]["methods"]["dopd"]["log"]
    assert any("dopd/HS/rejected_raised_frac" in r or "dopd/all/teacher_rejected_frac" in r for r in dopd_log)

    page = (out / "report" / "testbed.md").read_text()
    assert "## Premise variant" in page and "### Premises and the basic result" in page
    assert "Student's privileged view at least as good as its plain one" in page
    assert "### Learning rate (validation split)" in page and "### Diagnostics" in page
    assert "teacher (SFT on x and x+p), evaluated without p" in page
    assert "the student first reads p (1 steps on x+p alone" in page
    assert (out / "report" / "testbed_premise_curves.png").stat().st_size > 0


def test_sft_probe_scores_both_views_on_validation(tmp_path):
    from benchmarks.privilege_illusion.sft_probe import main

    results = tmp_path / "probe.jsonl"
    for role, extra in (("teacher", []), ("student", ["--priv-steps", "1"])):
        assert main(["--role", role, "--steps", "2", "--quick", "--out", str(tmp_path / "work"),
                     "--results", str(results), *extra]) == 0
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["role"], r["priv_steps"], r["steps"]) for r in rows] == [("teacher", 0, 2), ("student", 1, 2)]
    for row in rows:
        assert row["split"] == "pi_text_val"
        assert all(0.0 <= row[view]["accuracy"] <= 1.0 for view in ("x", "x+p"))
    priv = json.loads((tmp_path / "work" / "student_1_2" / "student_priv" / "dopd_sft_done.json").read_text())
    assert priv == {"steps": 1, "lr": 0.003, "view": "privileged"}


def test_sft_probe_table_names_each_budget():
    from benchmarks.privilege_illusion.report import sft_probe_table

    views = {"x": {"accuracy": 0.11}, "x+p": {"accuracy": 0.52, "accuracy_hidden": 0.25}}
    rows = [{"role": "teacher", "priv_steps": 0, "steps": 900, **views},
            {"role": "student", "priv_steps": 300, "steps": 100, **views},
            {"role": "student", "priv_steps": 300, "steps": 0, **views}]
    table = sft_probe_table(rows)
    assert [r[1] for r in table[1:]] == ["900 steps on x and x+p", "300 steps on x+p then 100 steps on x and x+p",
                                         "300 steps on x+p"]
    assert table[2][2:] == ["52", "11", "25"]


def test_lr_choice_at_the_grid_edge_is_named():
    from benchmarks.privilege_illusion.report import grid_edge_note

    rows = [{"lr": 0.0}, {"lr": 2e-5}, {"lr": 5e-5}, {"lr": 2e-4}]
    assert "largest of the grid" in grid_edge_note({"rows": rows, "chosen_lr": 2e-4})
    assert "smallest of the grid" in grid_edge_note({"rows": rows, "chosen_lr": 2e-5})
    assert grid_edge_note({"rows": rows, "chosen_lr": 5e-5}) == ""


def test_basic_result_reached_in_the_mean_only_is_said_so():
    from benchmarks.privilege_illusion.report import premise_checks

    def seed(start, final):
        ref = {k: {"accuracy": a} for k, a in (("student_before", start), ("student_before_with_p", 0.6),
                                                ("teacher_with_p", 0.9), ("teacher_without_p", 0.75))}
        return {"reference": ref, "methods": {"vanilla_opd": {"final": {"accuracy": final}}}}

    def basic(seeds):
        lines = premise_checks({"config": {"methods": ["vanilla_opd"]}, "seeds": seeds})
        return next(line for line in lines if "basic result" in line)

    assert "reached in the mean only: +3.3" in basic([seed(0.1, 0.3), seed(0.4, 0.35), seed(0.1, 0.05)])
    assert "reached in every seed" in basic([seed(0.1, 0.2), seed(0.2, 0.3)])
    assert "NOT reached" in basic([seed(0.3, 0.2), seed(0.2, 0.25)])
