"""benchmarks/real_pair.py: the task generator, the interval, and `--quick` (tiny models, every stage through
`run_train` / `evaluate_samples`, into a temp dir). Checks the pipeline, not the outcome; the committed page and
results file are left alone."""

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEEP = (REPO / "docs" / "real_pair.md", REPO / "docs" / "real_pair_curves.png",
        REPO / "results" / "real_pair.jsonl")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def test_problems_hint_the_first_step_never_the_answer():
    from benchmarks.real_pair import make_problem

    rng = random.Random(0)
    kinds = set()
    for _ in range(400):
        prob = make_problem(rng)
        kinds.add(prob["kind"])
        assert prob["answer"] >= 0
        step_result = int(prob["hint"].split("=")[-1].split()[0])  # "... = 126 coins."
        assert step_result != prob["answer"]  # the hint works out the first step, never the answer
    assert kinds == {0, 1, 2, 3}


def test_splits_are_disjoint(tmp_path):
    from benchmarks.real_pair import RealPairConfig, write_task

    cfg = RealPairConfig(out_dir=str(tmp_path), num_train=300, num_eval=200, num_val=20)
    summary = write_task(tmp_path / "data", cfg)
    assert (summary["num_rp_train"], summary["num_rp_eval"], summary["num_rp_val"]) == (300, 200, 20)
    questions = {name: {r["messages"][0]["content"] for r in json.loads((tmp_path / "data" / f"{name}.json").read_text())}
                 for name in ("rp_train", "rp_eval", "rp_val")}
    assert not (questions["rp_train"] & questions["rp_eval"]) and not (questions["rp_val"] & questions["rp_eval"])
    assert not (questions["rp_train"] & questions["rp_val"])
    info = json.loads((tmp_path / "data" / "dataset_info.json").read_text())
    assert info["rp_eval"]["eval"] == {"extractor": "number", "metric": "numeric"}


def test_wilson_interval():
    from benchmarks.real_pair_report import wilson

    lo, hi = wilson(100, 200)
    assert lo == pytest.approx(0.4314, abs=1e-3) and hi == pytest.approx(0.5686, abs=1e-3)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_report_lists_what_was_not_run(tmp_path):
    from benchmarks.real_pair_report import write_page

    text = Path(write_page([], tmp_path)["markdown"]).read_text()
    for stage in ("template", "reference", "vanilla_opd", "vanilla_opd_priv", "dopd"):
        assert f"| {stage} | **not run yet** | `python -m benchmarks.real_pair --method {stage}` |" in text


def test_quick_runs_every_stage_into_tmp(tmp_path):
    before = [_digest(p) for p in KEEP]
    out = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.real_pair", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [_digest(p) for p in KEEP] == before, "the quick run touched the committed page or results"

    records = [json.loads(line) for line in (out / "real_pair.jsonl").read_text().splitlines()]
    assert all(r["quick"] for r in records)
    parts = {(r["stage"], r["part"]) for r in records}
    for key in ("teacher/x", "teacher/x+p[block]", "teacher/x+p[hint_line]", "student/x", "chosen"):
        assert ("template", key) in parts, key
    for key in ("student/x", "student/x+p", "teacher/x", "teacher/x+p"):
        assert ("reference", key) in parts, key
    runs = {r["stage"]: r for r in records if r["part"] == "method"}
    assert set(runs) == {"vanilla_opd", "vanilla_opd_priv", "dopd", "dopd_veto", "vanilla_opd_priv_full_rkl"}
    stages = {"dopd": "dopd", "dopd_veto": "dopd", "vanilla_opd_priv_full_rkl": "vanilla_opd_full_rkl"}
    for name, run in runs.items():
        assert [p["step"] for p in run["curve"]] == [1, 2], name  # held-out accuracy during training
        assert run["config_keys"]["stage"] == stages.get(name, "vanilla_opd")
        assert run["mean_step_s"] > 0
        # the held-out answers behind each curve point are kept (the trained weights are not)
        assert run["predictions"] == [f"runs/{name}-lr1e-05/eval_predictions/step-{s}.jsonl" for s in (1, 2)]
        answers = (out / run["predictions"][-1]).read_text().splitlines()
        assert len(answers) == run["curve"][-1]["n"] and "prediction" in json.loads(answers[0])
        assert not list((out / "runs" / f"{name}-lr1e-05").glob("*.safetensors"))
    assert runs["vanilla_opd"]["config_keys"]["teacher_sees_privileged"] is False
    assert runs["vanilla_opd_priv"]["config_keys"]["teacher_sees_privileged"] is True
    # diagnostics: logged wherever both privileged policies are scored, absent for the teacher-without-p baseline
    has_diag = {name: any("dopd/all/teacher_rejected_frac" in r for r in run["log"]) for name, run in runs.items()}
    assert has_diag == {"vanilla_opd": False, "vanilla_opd_priv": True, "dopd": True, "dopd_veto": True,
                        "vanilla_opd_priv_full_rkl": True}
    assert runs["dopd_veto"]["config_keys"]["teacher_veto"] is True
    assert all(r.get("dopd/HS/teacher_rejected_frac", 0.0) == 0.0 for r in runs["dopd_veto"]["log"])
    assert any("dopd/HS/first3_frac" in r for r in runs["dopd_veto"]["log"])  # the first answer tokens' regimes
    # vanilla OPD's sampled-token gradient follows its target (the teacher) on every token, by construction
    priv_log = [r for r in runs["vanilla_opd_priv"]["log"] if "dopd/all/grad_agrees_teacher_frac" in r]
    assert priv_log and all(r["dopd/all/grad_agrees_teacher_frac"] == 1.0 for r in priv_log)

    page = (out / "report" / "real_pair.md").read_text()
    assert "Quick mode" in page and "## Diagnostics" in page
    assert "not run yet" not in page
    for name in runs:
        assert f"(`{name}`), lr 1e-05, step 2" in page
    assert (out / "report" / "real_pair_curves.png").stat().st_size > 0


def test_mechanism_section_counts_python_answers_and_first_token_regimes(tmp_path):
    from benchmarks.real_pair_report import mechanism_section

    answers = ["Let's use Python.\n```python\nprint(3)\n```", "The answer is 3.", "```python\nx = 1\n```"]
    (tmp_path / "dopd_veto-lr3e-06-step8.jsonl").write_text(
        "\n".join(json.dumps({"predictions": [a]}) for a in answers) + "\n")
    log = [{"step": 1, "dopd/HT/first3_frac": 0.5, "dopd/HS/first3_frac": 0.0, "dopd/LH/first3_frac": 0.5,
            "dopd/LL/first3_frac": 0.0},
           {"step": 2, "dopd/HT/first3_frac": 0.25, "dopd/HS/first3_frac": 0.0, "dopd/LH/first3_frac": 0.75,
            "dopd/LL/first3_frac": 0.0}]
    run = {"config": {"lr": 3e-6}, "curve": [{"step": 8, "accuracy": 2 / 3, "n": 3}], "log": log}
    other = {"config": {"lr": 1e-5}, "curve": [{"step": 8, "accuracy": 0.0, "n": 3}], "log": []}
    lines = mechanism_section([("dopd_veto", run), ("dopd", other)], tmp_path)
    row = next(line for line in lines if "`dopd_veto`" in line)
    assert "| 2 of 3 | 38% | 0% | 62% | 0% |" in row
    assert not any("`dopd`" in line for line in lines)  # only the runs at 3e-6


def _with_stand_in_checkpoints(cfg, tmp_path):
    """Student and teacher folders holding only config.json: all `model_paths` looks for without real weights."""
    from dataclasses import replace

    for name in ("small", "large"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    return replace(cfg, student=str(tmp_path / "small"), teacher=str(tmp_path / "large"))


def test_reference_skips_only_evaluations_recorded_for_the_same_measurement(tmp_path):
    from dataclasses import replace

    from benchmarks.real_pair import RealPairConfig, recorded_evaluations, run_reference

    cfg = _with_stand_in_checkpoints(RealPairConfig(out_dir=str(tmp_path)), tmp_path)
    same = {"stage": "reference", "template": "block", "config": cfg.to_json(), "part": "student/x", "accuracy": 0.67}
    other_n = {**same, "part": "student/x+p", "config": replace(cfg, num_eval=50).to_json()}
    other_template = {**same, "part": "teacher/x", "template": "hint_line"}
    done = recorded_evaluations(replace(cfg, eval_batch=100), "reference", [same, other_n, other_template], "block")
    assert set(done) == {"student/x"}  # the eval batch size does not change a greedy measurement

    measured = []
    import benchmarks.real_pair as rp

    def fake_evaluate(cfg, path, dataset, template, with_p, dtype):
        measured.append((path.endswith("large"), with_p))
        return {"accuracy": 0.5, "seconds": 1.0}

    original, rp.evaluate = rp.evaluate, fake_evaluate
    try:
        run_reference(cfg, "T", lambda body: None, done)
    finally:
        rp.evaluate = original
    assert measured == [(False, True), (True, True), (True, False)]  # student/x was not measured again


def test_template_stage_takes_recorded_validation_runs_and_chooses_from_all(tmp_path):
    from dataclasses import replace

    import benchmarks.real_pair as rp

    cfg = _with_stand_in_checkpoints(rp.RealPairConfig(out_dir=str(tmp_path)), tmp_path)
    block = {"stage": "template", "template": "block", "config": cfg.to_json(), "part": "teacher/x+p[block]",
             "split": "rp_val", "accuracy": 0.85, "correct": 17, "n": 20}
    other_val = {**block, "part": "teacher/x", "config": replace(cfg, num_val=40).to_json()}
    done = rp.recorded_evaluations(cfg, "template", [block, other_val])
    assert set(done) == {"teacher/x+p[block]"}  # another validation size is another measurement

    measured, emitted = [], []

    def fake_evaluate(cfg, path, dataset, template, with_p, dtype):
        measured.append((path.endswith("large"), template, with_p))
        return {"accuracy": 0.9 if template == rp.HINT_TEMPLATES["hint_line"] and with_p else 0.5, "seconds": 1.0}

    original, rp.evaluate = rp.evaluate, fake_evaluate
    try:
        rp.run_template(cfg, emitted.append, done)
    finally:
        rp.evaluate = original
    assert (True, rp.HINT_TEMPLATES["block"], True) not in measured  # the recorded teacher run is not repeated
    assert (True, rp.HINT_TEMPLATES["hint_line"], True) in measured and len(measured) == 5
    chosen = [e for e in emitted if e.get("part") == "chosen"]
    assert chosen == [{"part": "chosen", "chosen": "hint_line", "rule": chosen[0]["rule"]}]  # 0.9 beats the recorded 0.85


def test_a_run_stopped_before_its_last_step_is_not_recorded_as_a_result(tmp_path, monkeypatch):
    """SIGTERM ends training gracefully and `run_train` returns; such a run must not count as the method's result."""
    from types import SimpleNamespace

    import dopd.train.workflow as workflow
    from benchmarks.real_pair import RealPairConfig, run_method

    cfg = _with_stand_in_checkpoints(RealPairConfig(out_dir=str(tmp_path), steps=8), tmp_path)
    for steps_run, part in ((2, "stopped"), (8, "method")):
        log = [{"step": s, "loss": 0.1, "time/rollout_s": 1.0} for s in range(1, steps_run + 1)]
        monkeypatch.setattr(workflow, "run_train", lambda config: SimpleNamespace(log_history=log, plots=[]))
        out = run_method(cfg, "dopd", "T")
        assert (out["part"], out["steps_done"]) == (part, steps_run)


def test_page_states_the_methods_own_evaluation_interval():
    from benchmarks.real_pair_report import eval_every_text

    method = {"stage": "dopd", "curve": [{"step": 8}], "config": {"eval_every": 8}}
    reference = {"stage": "reference", "config": {"eval_every": 4}}
    assert eval_every_text([method, reference], reference["config"]) == "8"
    assert eval_every_text([reference], reference["config"]) == "4"
