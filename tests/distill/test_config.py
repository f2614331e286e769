"""One vocabulary: the objective's config takes the user's key names, and `routing_scope` is resolved there, once."""

import dataclasses

import pytest

from dopd.distill import DOPDLossConfig, get_preset
from dopd.hparams import ConfigError, DistillArguments

# DistillArguments keys only the trainer reads (the objective never sees them)
TRAINER_ONLY = {"loss_chunk_size", "teacher_sees_privileged", "max_nonfinite_steps"}
# a value other than the default for every key the objective reads
NOT_DEFAULT = {
    "distill_top_k": 7, "beta_l": 0.4, "beta_w": 0.2, "trim_fraction": 0.1, "distill_temperature": 0.9,
    "loss_aggregation": "token", "topk_support": "target", "topk_renormalize": False, "prune_mode": "random",
    "prune_fraction": 0.3, "prune_seed": 5, "routing_scope": "micro_batch", "routing_across_ranks": False,
    "routing_statistic": "top1", "teacher_veto": True, "teacher_veto_prob": 0.2,
    "routing_table": {"HT": [["teacher", "js", 1.0]], "HS": [], "LH": [], "LL": []},
}


def test_every_distill_key_is_the_loss_config_field_of_the_same_name():
    keys = {f.name for f in dataclasses.fields(DistillArguments)}
    loss_fields = {f.name for f in dataclasses.fields(DOPDLossConfig) if f.init} - {"preset"}
    assert keys - TRAINER_ONLY == loss_fields
    assert set(NOT_DEFAULT) == loss_fields
    for name, value in NOT_DEFAULT.items():
        assert getattr(DistillArguments(), name) != value, name
    cfg = DOPDLossConfig.from_args(DistillArguments(**NOT_DEFAULT), "opsd")
    for name, value in NOT_DEFAULT.items():
        if name != "routing_table":
            assert getattr(cfg, name) == value, name
    assert cfg.preset == "opsd"
    assert cfg.table == cfg.routing_table and cfg.table["HT"][0].divergence == "js"  # the override is in force


def test_the_table_in_force_is_the_presets_unless_routing_table_is_given():
    cfg = DOPDLossConfig.from_args(DistillArguments(), "uniform_dual")
    assert cfg.routing_table is None and cfg.table == get_preset("uniform_dual").table
    measured = cfg.replace(routing_table=get_preset("opsd").table, loss_aggregation="token")
    assert measured.table == get_preset("opsd").table and measured.loss_aggregation == "token"
    assert measured.preset == "uniform_dual"


@pytest.mark.parametrize("scope,across,expected", [
    ("step", True, ("step", "global")),  # the defaults of DistillArguments: the paper's batch, over every rank
    ("step", False, ("step", "local")),
    ("micro_batch", True, ("micro_batch", "global")),
    ("micro_batch", False, ("micro_batch", "local")),
    ("local", True, ("micro_batch", "local")),  # the old names: one micro-batch, this rank / every rank
    ("global", False, ("micro_batch", "global")),
])
def test_routing_scope_is_resolved_in_the_loss_config(scope, across, expected):
    cfg = DOPDLossConfig.from_args(DistillArguments(routing_scope=scope, routing_across_ranks=across), "dopd")
    assert (cfg.routing_unit, cfg.rank_scope) == expected
    assert (cfg.routing_scope, cfg.routing_across_ranks) == (scope, across)
    # a replaced config resolves its own scope again
    assert cfg.replace(routing_scope="global").rank_scope == "global"


def test_defaults():
    # from the user's config: the optimizer step across ranks; the objective called alone: its own tokens, this rank
    # (what the config's `local` default meant before the keys were unified)
    user = DOPDLossConfig.from_args(DistillArguments(), "dopd")
    assert (user.routing_unit, user.rank_scope) == ("step", "global")
    alone = DOPDLossConfig()
    assert (alone.routing_unit, alone.rank_scope) == ("micro_batch", "local")
    assert dataclasses.replace(user, routing_scope="micro_batch", routing_across_ranks=False) == alone


def test_bad_scope_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="routing_scope"):
        DOPDLossConfig(routing_scope="epoch")
    with pytest.raises(ConfigError, match="routing_scope"):
        DOPDLossConfig.from_args(DistillArguments(routing_scope="epoch"), "dopd")


def test_the_objective_imports_without_transformers():
    """distill/config.py imports `dopd.hparams` (ConfigError) at module level; the training arguments, which import
    transformers, stay a function-local import there, so the pure-tensor objective does not pull transformers in."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = "import sys, dopd.distill, dopd.hparams; print(sorted(m for m in sys.modules if m.startswith('transformers')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
