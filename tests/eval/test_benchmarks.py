"""Benchmark entries: the shipped registry matches the table, fixtures in each benchmark's own format load through the
registry (text: directly; VLM: after `prepare_benchmark`) and score; hub entries fail clearly offline."""

import json
import os
from pathlib import Path

import pytest

from dopd.data import DefaultVision, build_views, load_dataset_samples
from dopd.eval.benchmarks import BENCHMARKS, prepare_benchmark, registry_entries
from dopd.eval.prepare import main as prepare_main
from dopd.eval.spec import resolve_specs
from dopd.eval.workflow import score_record
from dopd.hparams import ConfigError, DataArguments
from dopd.hparams.eval_args import EvalArguments

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]


def _records(samples, predictions):
    return [{"uid": s.uid, "dataset": s.dataset, "reference": s.response, "predictions": [p]}
            for s, p in zip(samples, predictions)]


def _score(data_args, samples, predictions):
    specs = resolve_specs(data_args, [s.dataset for s in samples], EvalArguments())
    return [score_record(r, specs[r["dataset"]])["correct"][0] for r in _records(samples, predictions)]


def test_shipped_registry_has_every_benchmark_entry():
    info = json.loads((REPO / "data" / "dataset_info.json").read_text(encoding="utf-8"))
    for name, entry in registry_entries().items():
        assert info.get(name) == entry, f"data/dataset_info.json entry `{name}` differs from dopd.eval.benchmarks"


def test_fixture_registry_matches_the_real_entries():
    info = json.loads((FIXTURES / "dataset_info.json").read_text(encoding="utf-8"))
    for name, entry in info.items():
        assert entry == BENCHMARKS[name].registry_entry(file_name=entry["file_name"])


def test_text_benchmarks_load_and_score():
    data_args = DataArguments(dataset_dir=str(FIXTURES))
    math = load_dataset_samples(data_args, ["math500"])
    assert [s.response for s in math][0] == r"\frac{3}{4}"
    assert _score(data_args, math, [
        r"1/2 + 1/4 = \boxed{\dfrac{3}{4}}",
        r"so \boxed{(3, \frac{\pi}{2})}",
        r"\boxed{12000}",
    ]) == [True, True, True]
    assert _score(data_args, math, ["3/4 without a box", r"\boxed{(3, \pi)}", r"\boxed{1200}"]) == [False] * 3

    aime = load_dataset_samples(data_args, ["aime25_i"])
    assert _score(data_args, aime, [r"\boxed{70}", r"\boxed{024}"]) == [True, True]

    gsm = load_dataset_samples(data_args, ["gsm8k"])
    assert _score(data_args, gsm, ["He has 72 pens.", r"The price was \boxed{\$1500}"]) == [True, True]


VLM_CASES = {
    # name: (fixture file, predictions, expected correctness)
    "mmstar": ("mmstar.json", ["Answer: B", "The answer is (C)."], [True, False]),
    "mathvision": ("mathvision.json", [r"\boxed{1}", r"\boxed{B}"], [True, True]),
    "dynamath": ("dynamath.json", [r"\boxed{12.50}", r"\boxed{(B) no}"], [True, True]),
    "realworldqa": ("realworldqa.json", ["A", "1"], [True, True]),
    "mmmu": ("mmmu.json", ["Answer: A", "Answer: 6"], [True, False]),
    "mmmu_pro_vision": ("mmmu_pro_vision.json", ["Answer: (A)"], [True]),
}


def _vlm_registry(tmp_path: Path, names):
    info = {name: BENCHMARKS[name].registry_entry() for name in names}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return DataArguments(dataset_dir=str(tmp_path))


def _rows(file_name):
    rows = json.loads((FIXTURES / file_name).read_text(encoding="utf-8"))
    for row in rows:
        for key, value in row.items():
            if isinstance(value, str) and value.startswith("images/"):
                row[key] = str(FIXTURES / value)
    return rows


@pytest.mark.parametrize("name", sorted(VLM_CASES))
def test_vlm_benchmarks_prepare_load_and_score(tmp_path, name):
    file_name, predictions, expected = VLM_CASES[name]
    path = prepare_benchmark(name, str(tmp_path), rows=_rows(file_name))
    assert os.path.isfile(path)
    data_args = _vlm_registry(tmp_path, [name])
    samples = load_dataset_samples(data_args, [name])
    assert len(samples) == len(predictions)
    for sample in samples:
        assert sample.images and all(os.path.isfile(p) for p in sample.images)
        plain, _ = build_views(sample, DefaultVision(), data_args)
        assert sum(m["content"].count("<image>") for m in plain.messages) == len(plain.images)
    assert _score(data_args, samples, predictions) == expected


def test_mmmu_image_references_become_placeholders_in_order(tmp_path):
    prepare_benchmark("mmmu", str(tmp_path), rows=_rows("mmmu.json"))
    rows = json.loads((tmp_path / "benchmarks" / "mmmu.json").read_text())
    first = rows[0]
    assert "<image 1>" not in first["instruction"] and first["instruction"].count("<image>") == 4
    assert "(A) <image>" in first["instruction"] and "(C) Neither" in first["instruction"]
    assert len(first["images"]) == 4  # question refs 1, 2 then option refs 1, 2


def test_logicvista_from_its_github_layout(tmp_path):
    source = tmp_path / "LogicVista" / "data"
    (source / "images").mkdir(parents=True)
    data = json.loads((FIXTURES / "logicvista_dataset.json").read_text())
    (source / "dataset.json").write_text(json.dumps(data))
    for image in ("red.png", "blue.png"):
        (source / "images" / image).write_bytes((FIXTURES / "images" / image).read_bytes())
    assert prepare_main(["logicvista", "--dataset_dir", str(tmp_path), "--source", str(source)]) == 0
    data_args = _vlm_registry(tmp_path, ["logicvista"])
    samples = load_dataset_samples(data_args, ["logicvista"])
    assert [s.response for s in samples] == ["A, C", "3"]
    assert _score(data_args, samples, ["Answer: C and A", "Answer: 3"]) == [True, True]
    assert _score(data_args, samples, ["Answer: A", "Answer: 2"]) == [False, False]


def test_hub_entries_fail_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data_args = DataArguments(dataset_dir=str(REPO / "data"))
    with pytest.raises(ConfigError, match="offline"):
        load_dataset_samples(data_args, ["math500"])


def test_unprepared_vlm_entry_names_the_prepare_command(tmp_path):
    from dopd.eval.workflow import _load_eval_samples

    data_args = _vlm_registry(tmp_path, ["mmstar"])
    with pytest.raises(ConfigError, match="python -m dopd.eval.prepare mmstar"):
        _load_eval_samples(data_args, ["mmstar"])
