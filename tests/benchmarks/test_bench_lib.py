"""benchmarks/lib and the synthetic-model benchmark scripts: each script runs as `python -m benchmarks.<name>` from the
repo root (nothing added to the import path), the table format the pages quote, the summary statistics, and the
trainer built through `dopd.train.workflow.build_trainer`. A tiny `bench_step` run end to end is marked slow."""

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from benchmarks.lib import measure, report, trainers

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ("bench_objective", "bench_step", "bench_rollout", "bench_trl", "real_pair")


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_runs_as_module_from_repo_root(script):
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{script}", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


def test_print_table_is_markdown_with_three_decimals(capsys):
    text = report.print_table(["model", "ratio", "target"], [["qwen2", 0.49234, None], ["qwen2_vl", 2, float("nan")]],
                              title="ratios")
    assert text == ("\nratios\n"
                    "| model    | ratio | target |\n"
                    "|----------|-------|--------|\n"
                    "| qwen2    | 0.492 | -      |\n"
                    "| qwen2_vl | 2     | nan    |")
    assert capsys.readouterr().out == text + "\n"


def test_verdict_and_summaries():
    assert report.verdict(1.2, 1.3) == "met" and report.verdict(1.4, 1.3) == "NOT met"
    assert report.verdict(2.2, 2.0, lower_is_better=False) == "met" and report.verdict(None, 1.0) == "n/a"
    assert measure.median([3.0, 1.0, 2.0]) == 2.0 and measure.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert measure.mean([1.0, 2.0]) == 1.5
    assert measure.median([]) != measure.median([]) and measure.mean([]) != measure.mean([])  # NaN


def test_write_json_only_with_a_path(tmp_path):
    report.write_json(None, {"a": 1})
    path = tmp_path / "sub" / "out.json"
    report.write_json(str(path), {"a": 1, "spec": Namespace(x=1)})
    assert json.loads(path.read_text())["a"] == 1


def test_run_child_returns_the_last_json_line():
    res = measure.run_child("benchmarks.bench_objective", ["--_case", "chunked:8", "--vocab", "64", "--hidden", "16",
                                                           "--chunk-size", "4", "--repeats", "1", "--threads", "1"])
    assert res["path"] == "chunked" and res["tokens"] == 8 and res["peak_extra_bytes"] >= 0, res
    assert "error" in measure.run_child("benchmarks.no_such_script", [])


def test_make_dopd_trainer_goes_through_build_trainer(monkeypatch):
    import dopd.train.workflow as workflow

    calls = []
    monkeypatch.setattr(workflow, "build_trainer", lambda cfg, samples, **kw: calls.append((cfg, samples, kw)) or "T")
    assert trainers.make_dopd_trainer("cfg", "student", "teacher", ("s1", "s2")) == "T"
    assert calls == [("cfg", ["s1", "s2"], {"student": "student", "teacher": "teacher"})]


def test_row_done_appends_each_row_as_it_finishes(tmp_path, capsys):
    out = tmp_path / "sub" / "trl.json"
    report.row_done(None, "  a: 1 s/step", {"a": 1})  # no --out: printed only
    report.row_done(str(out), "  b: 2 s/step", {"b": 2, "spec": Namespace(x=1)})
    report.row_done(str(out), "  c: 3 s/step", {"c": 3})
    assert capsys.readouterr().out.splitlines() == ["  a: 1 s/step", "  b: 2 s/step", "  c: 3 s/step"]
    rows = [json.loads(line) for line in (tmp_path / "sub" / "trl.json.rows.jsonl").read_text().splitlines()]
    assert [sorted(r) for r in rows] == [["b", "spec"], ["c"]]
    assert not out.exists()  # the summary file is written only at the end


@pytest.mark.slow
def test_bench_step_tiny_run_writes_tables(tmp_path):
    out = tmp_path / "step.json"
    cmd = [sys.executable, "-m", "benchmarks.bench_step", "--families", "text", "--hidden", "64", "--layers", "1",
           "--teacher-hidden", "64", "--teacher-layers", "1", "--threads", "1", "--prompt-words", "8",
           "--hint-words", "4", "--batch", "1", "--num-generations", "2", "--max-new-tokens", "4", "--steps", "1",
           "--warmup", "0", "--workdir", str(tmp_path / "w"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["results"]] == ["dopd", "vanilla_opd", "sft"]
    assert "| model | stage       | seqs | resp len |" in proc.stdout
    assert "dopd/vanilla_opd step_s, rollout pooled" in result["ratios"]["qwen2"]
    rows = [json.loads(line) for line in Path(str(out) + ".rows.jsonl").read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["dopd", "vanilla_opd", "sft"]  # each row saved as it finished
