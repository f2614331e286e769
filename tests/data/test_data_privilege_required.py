"""check-data and train refuse data that would let a DOPD run train without privileged information p.

Each case exited 0 before (issue 26, section 3): a blank hint, a misspelled per-row `privileged` key, a registry entry
whose `columns.privileged` names a column no row has, an empty dataset, and a method that scores a privileged policy
on data without any p.
"""

from __future__ import annotations

import pytest

from dopd.data import load_and_validate
from dopd.hparams import ConfigError
from dopd.model.check_data import run_check_data_cli
from dopd.hparams import parse_config_dict

HINT_ENTRY = {"columns": {"prompt": "instruction", "response": "output", "privileged": "privileged"},
              "privilege": ["hint"]}


def _rows(n: int, hint: object = "Add the tens first.") -> list[dict]:
    rows = [{"instruction": f"What is {i} + 40?", "output": f"{i + 40}"} for i in range(n)]
    for row in rows:
        row["privileged"] = hint  # null: a sample without p
    return rows


def _check(registry, name: str, *overrides: str) -> int:
    return run_check_data_cli(None, [f"dataset={name}", f"dataset_dir={registry.root}", *overrides])


@pytest.mark.parametrize("blank,field", [("", "privileged"), ("   ", "privileged"),
                                         ({"hint": " \n"}, "privileged.hint")])
def test_blank_hint_is_an_error_naming_file_sample_and_field(registry, capsys, blank, field):
    rows = _rows(3)
    rows[1]["privileged"] = blank
    path = registry.add("d", rows, HINT_ENTRY, file_name="d.jsonl")
    assert _check(registry, "d") == 1
    out = capsys.readouterr().out
    assert f"{path}: sample 1: field `{field}`: empty hint" in out
    assert "check-data: FAILED for d" in out


def test_misspelled_privileged_key_is_an_error_with_a_suggestion(registry, capsys):
    rows = _rows(3)
    rows[2]["privilegd"] = rows[2].pop("privileged")
    path = registry.add("d", rows, HINT_ENTRY, file_name="d.jsonl")
    assert _check(registry, "d") == 1
    out = capsys.readouterr().out
    assert f"{path}: sample 2: field `privilegd`: unknown key; did you mean `privileged`" in out
    # extra columns that resemble no known column stay allowed (datasets carry ids, pass rates, ...)
    rows[2]["privileged"] = rows[2].pop("privilegd")
    for row in rows:
        row["qid"], row["PassRate_7BTrained"] = "q", 0.5
    registry.add("d", rows, HINT_ENTRY, file_name="d.jsonl")
    assert _check(registry, "d") == 0


def test_privileged_column_that_no_row_has_is_an_error_for_a_method_that_needs_p(registry, tmp_path, capsys):
    entry = {**HINT_ENTRY, "columns": {**HINT_ENTRY["columns"], "privileged": "hints"}}
    path = registry.add("d", _rows(3), entry, file_name="d.jsonl")
    problem = f"columns.privileged is `hints`, but no row of {path} has that key (keys: instruction, output, privileged)"
    assert _check(registry, "d") == 1
    out = capsys.readouterr().out
    assert f"error: dataset `d`: its registry entry's {problem}" in out and "check-data: FAILED for d" in out
    assert _check(registry, "d", "stage=sft") == 0  # a method without p: a warning
    assert f"warning: dataset `d`: its registry entry's {problem}" in capsys.readouterr().out
    assert _check(registry, "d", "privilege=reference") == 0  # the processors read no column
    with pytest.raises(ConfigError, match="scores the privileged student.*columns.privileged is `hints`"):
        load_and_validate(registry.args("d"), require_privilege="stage `dopd` scores the privileged student")
    assert len(load_and_validate(registry.args("d"))) == 3


def test_empty_dataset_is_an_error_in_check_data_and_train_data_loading(registry, capsys):
    path = registry.add("d", [], HINT_ENTRY, file_name="d.jsonl")
    assert _check(registry, "d") == 1
    out = capsys.readouterr().out
    assert f"{path}" in out and "no samples" in out and "check-data: FAILED for d" in out
    with pytest.raises(ConfigError, match="no samples"):
        load_and_validate(registry.args("d"))


def test_rows_without_p_beside_rows_with_p_are_counted_and_warned(registry, capsys):
    rows = _rows(4)
    del rows[1]["privileged"]
    rows[3]["privileged"] = None
    registry.add("d", rows, HINT_ENTRY, file_name="d.jsonl")
    assert _check(registry, "d") == 0
    out = capsys.readouterr().out
    assert "warning: 2 of 4 samples have no privileged information" in out and "d:1, d:3" in out


@pytest.mark.parametrize("overrides,needs", [
    ([], True), (["stage=vanilla_opd"], True), (["stage=opsd"], True), (["stage=uniform_teacher"], True),
    (["stage=vanilla_opd", "teacher_sees_privileged=false"], False), (["stage=sft"], False),
    (["stage=sft", "sft_view=privileged"], True),
])
def test_privileged_method_on_data_without_p_is_refused(registry, capsys, overrides, needs):
    registry.add("d", _rows(3, hint=None), HINT_ENTRY, file_name="d.jsonl")
    assert _check(registry, "d", *overrides) == (1 if needs else 0)
    out = capsys.readouterr().out
    assert ("no sample of d has privileged information" in out) == needs
    # the reference answer is p for the `reference` processor (OPSD): no privileged column needed
    assert _check(registry, "d", *overrides, "privilege=reference") == 0


def test_privilege_required_follows_the_routing_table(tmp_path):
    from dopd.model.check_data import privilege_required

    def cfg(**keys):
        return parse_config_dict({"output_dir": str(tmp_path), **keys})

    assert "privileged student" in privilege_required(cfg(stage="dopd"))
    assert "teacher" in privilege_required(cfg(stage="uniform_teacher"))
    assert privilege_required(cfg(stage="vanilla_opd", teacher_sees_privileged=False)) is None
    assert privilege_required(cfg(stage="sft")) is None
    assert "sft_view" in privilege_required(cfg(stage="sft", sft_view="privileged"))


def test_train_refuses_data_without_p_before_any_model_loads(registry, tmp_path, monkeypatch):
    import dopd.train.workflow as workflow
    from dopd.train.workflow import run_train

    def no_models(*args, **kwargs):
        raise AssertionError("a model was about to load")

    monkeypatch.setattr(workflow, "build_trainer", no_models)
    registry.add("d", _rows(3, hint=None), HINT_ENTRY, file_name="d.jsonl")
    cfg = parse_config_dict({"dataset": "d", "dataset_dir": str(registry.root), "output_dir": str(tmp_path / "out"),
                             "model_name_or_path": "tiny:qwen2:student",
                             "teacher_model_name_or_path": "tiny:qwen2:teacher", "use_cpu": True})
    with pytest.raises(ConfigError, match="no sample of d has privileged information"):
        run_train(cfg)
