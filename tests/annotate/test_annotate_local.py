"""The local backend end to end with a tiny random-init Qwen2-VL: the answers mean nothing, the files must be valid."""

from __future__ import annotations

import json
from pathlib import Path

from annotate_testutils import SHAREGPT, read_jsonl, vqa_rows, write_registry

from dopd.annotate import run_annotate
from dopd.model.check_data import run_check_data_cli


def test_local_vlm_annotator_writes_a_dataset_check_data_accepts(tmp_path, tiny_model, capsys):
    model = tiny_model("qwen2_vl")
    rows = vqa_rows(tmp_path, 3)
    rows[2]["privileged"] = {"boxes": [{"label": "given", "bbox": [1, 2, 30, 40]}]}  # an existing p is kept
    entry = {**SHAREGPT, "columns": {**SHAREGPT["columns"], "privileged": "privileged"}}
    write_registry(tmp_path, {"vqa": (rows, entry)})
    common = ["dataset=vqa", f"dataset_dir={tmp_path}", "annotator_backend=local", f"annotator_model={model}",
              "annotator_max_new_tokens=12", "annotator_concurrency=2", "annotator_temperature=1.0"]

    hints = run_annotate(None, common + ["annotate_kind=hint"])
    boxes = run_annotate(None, common + ["annotate_kind=boxes"])  # random text: (almost surely) no box parses

    out = tmp_path / "annotated"
    assert hints.as_dict()["samples"] == 3 and not hints.error
    assert hints.counts["annotated"] + hints.counts["empty"] + hints.counts["leaked"] == 3
    assert boxes.counts["annotated"] + boxes.counts["unparseable"] + boxes.counts["no_valid_box"] == 3
    rejects = read_jsonl(out / "vqa_boxes.rejects.jsonl") if (out / "vqa_boxes.rejects.jsonl").exists() else []
    assert all(r["reason"] in ("unparseable", "no_valid_box") and "answer" in r for r in rejects)
    hint_rows = read_jsonl(out / "vqa_hint.jsonl")
    assert hint_rows, "a sampled tiny model writes some text"
    for row in hint_rows:
        assert isinstance(row["privileged"]["hint"], str) and row["privileged"]["hint"].strip()
        if row["source_uid"] == "vqa:2":
            assert row["privileged"]["boxes"] == [{"label": "given", "bbox": [1.0, 2.0, 30.0, 40.0], "image": 0}]
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"vqa_hint", "vqa_boxes"}
    assert info["vqa_hint"]["privilege"] == ["hint"]
    capsys.readouterr()
    assert run_check_data_cli(None, ["dataset=vqa_hint", f"dataset_dir={out}", f"model_name_or_path={model}"]) == 0
    report = capsys.readouterr().out
    assert f"{len(hint_rows)} ok, 0 invalid" in report and f"{len(hint_rows)} with privilege" in report


def test_local_backend_accepts_tiny_names(tmp_path, tiny_model):
    """`tiny:` names resolve in the model layer (dopd.model.paths), so annotate takes them as train and eval do."""
    folder = tiny_model("qwen2_vl")  # the folder `tiny:qwen2_vl:student` resolves to ($DOPD_TINY_DIR is shared)
    write_registry(tmp_path, {"vqa": (vqa_rows(tmp_path, 1), SHAREGPT)})
    result = run_annotate(None, ["dataset=vqa", f"dataset_dir={tmp_path}", "annotator_backend=local",
                                 "annotator_model=tiny:qwen2_vl:student", "annotator_max_new_tokens=4",
                                 "annotate_kind=hint"])
    assert result.as_dict()["samples"] == 1 and not result.error
    assert (tmp_path / "annotated" / "dataset_info.json").is_file()
    assert (Path(folder) / "dopd_tiny.json").is_file()
