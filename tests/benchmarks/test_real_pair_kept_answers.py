"""The real pair keeps a copy of each run's held-out answers under the name its report reads (a run of 2026-12-05
wrote `dopd_veto-lr3e-06-step-8.jsonl` while the page looked for `...-step8.jsonl` and showed "–")."""

import json

from benchmarks import real_pair, real_pair_report


def test_kept_answers_are_found_by_the_report(tmp_path):
    run_dir, kept = tmp_path / "run", tmp_path / "kept"
    (run_dir / "eval_predictions").mkdir(parents=True)
    answers = [{"predictions": ["```python\nprint(3)\n```"]}, {"predictions": ["3"]}]
    (run_dir / "eval_predictions" / "step-8.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    real_pair.keep_predictions(str(run_dir), "dopd_veto", 3e-6, kept)
    run = {"curve": [{"step": 8}], "config": {"lr": 3e-6}}
    assert real_pair_report.python_answers("dopd_veto", run, kept) == (1, 2)
