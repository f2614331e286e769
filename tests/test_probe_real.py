"""`dopd-cli probe` with the real 0.5B as student and teacher (issue 23): cases whose answer is known.

A p that gives the answer away must make `p_helps_student` hold; a p of unrelated text must not. Not in the default
run (marker `real`); skipped unless DOPD_REAL_MODEL names a real chat checkpoint folder (see tests/test_real.py):

    DOPD_REAL_MODEL=~/.cache/dopd-real/qwen2.5-coder-0.5b-instruct python -m pytest -m real tests/test_probe_real.py

Each test took 8-10 minutes on 2 idle CPU cores (float32; 12 problems, 4 greedy evaluations, one rollout each;
2026-12-05: 507 s and 601 s).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

STUDENT = os.path.expanduser(os.environ.get("DOPD_REAL_MODEL", ""))
REPO = Path(__file__).resolve().parents[1]
N = 12

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not STUDENT, reason="set DOPD_REAL_MODEL to a real checkpoint folder (see tests/test_real.py)"),
]


def _dataset(tmp_path: Path, hint) -> Path:
    """The demo's word problems with p = hint(answer), as a registry folder."""
    rows = []
    with open(REPO / "data" / "llm_demo.jsonl", encoding="utf-8") as fh:
        for line in list(fh)[:N]:
            row = json.loads(line)
            answer = re.search(r"Answer:\s*(\S+)", row["output"]).group(1)
            rows.append({"instruction": row["instruction"], "output": row["output"], "privileged": hint(answer)})
    folder = tmp_path / "data"
    folder.mkdir()
    with open(folder / "probe.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    info = {"probe": {"file_name": "probe.jsonl", "privilege": ["hint"],
                      "columns": {"prompt": "instruction", "response": "output", "privileged": "privileged"}}}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def _probe(tmp_path: Path, hint, *extra: str) -> dict:
    from dopd.cli import main

    folder = _dataset(tmp_path, hint)
    out = tmp_path / "probe"
    args = [f"model_name_or_path={STUDENT}", f"teacher_model_name_or_path={STUDENT}", "torch_dtype=float32",
            "stage=dopd", "dataset=probe", f"dataset_dir={folder}", f"probe_max_samples={N}", "num_generations=1",
            "max_new_tokens=48", "eval_max_new_tokens=160", "eval_extractor=number", "eval_metric=numeric",
            "cutoff_len=512", "learning_rate=1e-5", "per_device_train_batch_size=2", "use_cpu=true",
            "report_to=none", "disable_tqdm=true", f"output_dir={tmp_path / 'run'}", f"probe_output_dir={out}",
            *extra]
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", *args])
    assert exit_info.value.code == 0
    with open(out / "probe_report.json", encoding="utf-8") as fh:
        return json.load(fh)


def _check(report: dict, name: str) -> dict:
    return next(c for c in report["verdict"] if c["check"] == name)


def test_real_probe_answer_in_p_helps_the_student(tmp_path):
    report = _probe(tmp_path, lambda answer: f"The final answer is {answer}.", "probe_lr_grid=1e-5")
    print(json.dumps({k: report[k] for k in ("accuracy", "lr", "seconds")}, indent=1))
    check = _check(report, "p_helps_student")
    assert check["holds"] is True, check["detail"]
    assert _check(report, "p_helps_teacher")["holds"] is True  # the teacher is the same model
    assert report["tokens"]["all"]["priv_logp_gain"] is not None
    assert len(report["lr"]["grid"]) == 1


def test_real_probe_unrelated_p_does_not_help_the_student(tmp_path):
    report = _probe(tmp_path, lambda answer: "The Eiffel Tower is in Paris, and its iron is painted brown.",
                    "probe_lr_grid=")
    print(json.dumps({k: report[k] for k in ("accuracy", "seconds")}, indent=1))
    check = _check(report, "p_helps_student")
    assert check["holds"] is False, check["detail"]
