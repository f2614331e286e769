"""Bad input: each kind of problem names the file, the sample index and the field."""

from __future__ import annotations

import logging

import pytest
from data_testutils import SHAREGPT, make_image, vqa_row

from dopd.data import load_and_validate, load_datasets, validate_dataset
from dopd.hparams import ConfigError


def report_for(registry, rows, entry=SHAREGPT, file_name=None):
    path = registry.add("d", rows, entry, file_name=file_name)
    (loaded,) = load_datasets(registry.args("d"))
    return validate_dataset(loaded), str(path)


@pytest.fixture
def img(tmp_path):
    make_image(tmp_path / "img.png", (200, 100))
    return "img.png"


@pytest.mark.parametrize("bad_row, field, reason, kind", [
    (lambda img: {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},
     "messages[0]", "expected a user turn, got assistant", "roles"),
    (lambda img: {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]},
     "messages[1]", "expected a assistant turn, got user", "roles"),
    (lambda img: {"messages": [{"role": "robot", "content": "q"}]}, "messages[0].role", "unknown role 'robot'",
     "roles"),
    (lambda img: {"messages": "q"}, "messages", "expected a list of turns", "format"),
    (lambda img: {"images": [img]}, "messages", "missing", "format"),
    (lambda img: {**vqa_row([img]), "images": [img, img]},
     "images", "1 `<image>` placeholder(s) in the prompt but 2 image(s)", "placeholders"),
    (lambda img: vqa_row(["nope.png"]), "images[0]", "file not found", "image"),
    (lambda img: vqa_row(["broken.png"]), "images[0]", "cannot open", "image"),
    (lambda img: vqa_row([img], {"boxes": [{"label": "x", "bbox": [150, 50, 201, 60]}]}),
     "privileged.boxes[0].bbox", "[150.0, 50.0, 201.0, 60.0] lies outside image 0 (200x100 pixels)", "box"),
    (lambda img: vqa_row([img], {"boxes": [{"label": "x", "bbox": [10, 10, 5, 20]}]}),
     "privileged.boxes[0].bbox", "is empty", "box"),
    (lambda img: vqa_row([img], {"boxes": [{"label": "x", "bbox": [1, 1, 5, 5], "image": 1}]}),
     "privileged.boxes[0].image", "refers to image 1 but the sample has 1 image(s)", "box"),
    (lambda img: vqa_row([img], {"crops": [[0, 0, 300, 50]]}), "privileged.crops[0]", "lies outside image 0",
     "box"),
    (lambda img: vqa_row([img], {"crops": [{"bbox": [0, 0, 5, 5], "image": 3}]}), "privileged.crops[0]",
     "refers to image 3", "box"),
    (lambda img: vqa_row([img], {"boxes": [{"label": "x", "bbox": [1, 2, 3]}]}), "privileged.boxes[0].bbox",
     "expected [x1, y1, x2, y2] (4 numbers)", "privileged"),
    (lambda img: vqa_row([img], {"boxes": [{"bbox": [1, 2, 3, 4]}]}), "privileged.boxes[0].label",
     "non-empty text label", "privileged"),
    (lambda img: vqa_row([img], {"hints": "typo"}), "privileged", "unknown key(s) hints", "privileged"),
    (lambda img: vqa_row([img], 42), "privileged", "expected a string (hint) or an object, got int", "privileged"),
    (lambda img: vqa_row([img], {"hint": "see <image>"}), "privileged.hint", "contains `<image>`", "privileged"),
])
def test_each_bad_input_names_file_index_field(registry, img, tmp_path, bad_row, field, reason, kind):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    report, path = report_for(registry, [vqa_row([img]), bad_row(img)])
    assert report.num_samples == 2 and report.num_invalid == 1
    issue = report.issues[0]
    assert (issue.index, issue.field, issue.kind) == (1, field, kind)
    assert reason in issue.reason
    assert str(issue).startswith(f"{path}: sample 1: field `{field}`: ")
    summary = report.summary()
    assert "2 samples, 1 ok, 1 invalid (50.0%)" in summary and "d:1" in summary and kind in summary


def test_alpaca_field_names_and_bad_jsonl_line(registry):
    rows = ['{"instruction": "q", "output": "a"}', '{"instruction": "q", "output": ', '{"instruction": 3}',
            '{"instruction": "q", "history": [["only one"]]}']
    report, path = report_for(registry, rows, entry={"columns": {"history": "history"}}, file_name="d.jsonl")
    got = [(i.index, i.field) for i in report.issues]
    assert got == [(1, "<line>"), (2, "instruction"), (3, "history[0]")]
    assert "line 2 is not valid JSON" in report.issues[0].reason
    assert str(report.issues[1]) == f"{path}: sample 2: field `instruction`: expected text, got int"


def test_missing_and_unparsable_files(registry):
    registry.add("d", None)
    with pytest.raises(ConfigError, match=r"dataset `d`: file not found: .*d\.json"):
        load_datasets(registry.args("d"))
    path = registry.add("d", "[{broken")
    with pytest.raises(ConfigError, match=rf"{path}: not valid JSON: .*line 1 column 3"):
        load_datasets(registry.args("d"))
    registry.add("d", '{"not": "a list"}')
    with pytest.raises(ConfigError, match="expected a JSON list"):
        load_datasets(registry.args("d"))


def test_load_and_validate_refuses_or_drops(registry, img, caplog):
    rows = [vqa_row([img]), vqa_row(["missing.png"]), vqa_row([img]), vqa_row([img])]
    registry.add("d", rows, SHAREGPT)
    with pytest.raises(ConfigError, match=r"(?s)max_invalid_fraction=0.0.*1 invalid \(25.0%\).*d:1.*missing\.png"):
        load_and_validate(registry.args("d"))
    with caplog.at_level(logging.WARNING, logger="dopd.data.validate"):
        kept = load_and_validate(registry.args("d", max_invalid_fraction=0.25))
    assert [s.index for s in kept] == [0, 2, 3]
    assert "dropping 1 invalid sample(s)" in caplog.text
    with pytest.raises(ConfigError):
        load_and_validate(registry.args("d", max_invalid_fraction=0.2))


def test_demo_data_is_valid(repo_data_dir):
    from dopd.hparams import DataArguments

    args = DataArguments(dataset="vlm_demo,vlm_demo_draw,llm_demo,llm_demo_opsd", dataset_dir=str(repo_data_dir))
    samples = load_and_validate(args)
    assert len(samples) == 26 * 2 + 28 * 2
