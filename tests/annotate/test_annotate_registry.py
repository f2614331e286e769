"""Registry entries of the paper's training data: they resolve, fail offline with directions, and their column
layout annotates and checks as it is (rows in each hub dataset's own shape)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from annotate_testutils import FakeChatServer, Reply, make_image, read_jsonl

from dopd.annotate import run_annotate
from dopd.model.check_data import run_check_data_cli
from dopd.data.registry import get_dataset_attr, load_dataset_info
from dopd.hparams import ConfigError

REPO = Path(__file__).resolve().parents[2]
PAPER = {"virl39k": ("TIGER-Lab/ViRL39K", "boxes"), "dapo_math_17k": ("open-r1/DAPO-Math-17k-Processed", "hint"),
         "rar_science_20k": ("ScaleAI/RaR-Science", "hint"),
         "skywork_or1_code": ("Skywork/Skywork-OR1-RL-Data", "hint")}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_entries_resolve_and_say_how_to_annotate(name):
    info = load_dataset_info(str(REPO / "data"))
    attr = get_dataset_attr(name, info, str(REPO / "data"))
    hub_id, kind = PAPER[name]
    assert (attr.load_from, attr.path) == ("hf_hub", hub_id)
    assert attr.privilege == (["boxes_text", "crops"] if kind == "boxes" else ["hint"])
    doc = info[name]["annotate"]
    assert doc["kind"] == kind and f"dataset={name}" in doc["command"] and hub_id in doc["download"]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_offline_the_paper_entries_fail_clearly_before_any_model_loads(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        run_annotate(None, [f"dataset={name}", f"dataset_dir={REPO / 'data'}", "annotator_model=/nonexistent"])
    message = str(err.value)
    assert f"`{name}`" in message and PAPER[name][0] in message and "offline" in message
    assert "huggingface-cli download" in message and str(REPO / "data") in message  # <dataset_dir> filled in


def _copy_entry(tmp_path: Path, name: str, rows: list, **changes) -> None:
    entry = json.loads((REPO / "data" / "dataset_info.json").read_text())[name]
    entry.pop("hf_hub_url")
    entry.pop("split", None)
    entry.pop("subset", None)
    (tmp_path / f"{name}.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({name: {**entry, "file_name": f"{name}.json",
                                                                   **changes}}))


def test_virl39k_rows_annotate_into_boxes_check_data_accepts(tmp_path, capsys):
    # ViRL39K's own layout: `<image>` in the question, a list of relative image paths, a \boxed{} answer
    media = tmp_path / "ViRL39K"
    make_image(media / "images" / "q1-0.jpg".replace(".jpg", ".png"), (401, 299))
    rows = [{"qid": "q1", "question": "<image>Which colour is the left half?", "answer": "\\boxed{red}",
             "image": ["images/q1-0.png"], "category": "spatial", "PassRate_7BTrained": 0.5}]
    _copy_entry(tmp_path, "virl39k", rows)
    with FakeChatServer(lambda req: Reply('[{"bbox_2d": [0, 0, 500, 1000], "label": "left half"}]')) as server:
        summary = run_annotate(None, ["dataset=virl39k", f"dataset_dir={tmp_path}", f"media_dir={media}",
                                      "annotate_kind=boxes", "annotator_backend=openai", "annotator_model=m",
                                      f"annotator_base_url={server.base_url}", "annotator_grounding=qwen3_vl"])
    assert summary.counts["annotated"] == 1
    (row,) = read_jsonl(tmp_path / "annotated" / "virl39k_boxes.jsonl")
    assert row["qid"] == "q1" and row["PassRate_7BTrained"] == 0.5
    assert row["privileged"]["boxes"] == [{"label": "left half", "bbox": [0.0, 0.0, 200.5, 299.0], "image": 0}]
    capsys.readouterr()
    # trains as it is: no media_dir needed any more (image paths were made absolute)
    assert run_check_data_cli(None, ["dataset=virl39k_boxes", f"dataset_dir={tmp_path / 'annotated'}"]) == 0


def test_skywork_openai_rows_annotate_into_hints(tmp_path):
    rows = [{"data_source": "code", "prompt": [{"content": "Write a function that reverses a list.", "role": "user"}],
             "reward_model": {"ground_truth": "[{\"input\": [1, 2], \"output\": [2, 1]}]", "style": "rule"}}]
    _copy_entry(tmp_path, "skywork_or1_code", rows)
    with FakeChatServer(lambda req: Reply("1. Walk from both ends.\n2. Swap.")) as server:
        summary = run_annotate(None, ["dataset=skywork_or1_code", f"dataset_dir={tmp_path}", "annotator_backend=openai",
                                      "annotator_model=m", f"annotator_base_url={server.base_url}"])
        assert "Reference answer" not in server.received[0].text  # no reference: no answer to hide
    assert summary.counts["annotated"] == 1
    (row,) = read_jsonl(tmp_path / "annotated" / "skywork_or1_code_hint.jsonl")
    assert row["reward_model"]["style"] == "rule" and row["privileged"] == {"hint": "1. Walk from both ends.\n2. Swap."}
    assert run_check_data_cli(None, ["dataset=skywork_or1_code_hint", f"dataset_dir={tmp_path / 'annotated'}"]) == 0
