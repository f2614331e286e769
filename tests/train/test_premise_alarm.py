"""The premise alarm (issue 23): one warning line after premise_check_steps when the logged diagnostics break DOPD's
premise, none when they hold; `premise_values` against a hand computation on constructed records."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from dopd.distill.presets import get_preset
from dopd.train.premise_alarm import PremiseAlarmCallback, premise_values

REPO = Path(__file__).resolve().parents[2]
TABLE = get_preset("dopd").table  # HT, LH -> teacher; HS, LL -> privileged student


def record(n, fracs, rejected, gains, loss=0.1):
    """A training log record as the trainer writes it: `dopd/num_tokens`, per regime token_frac and diagnostics."""
    out = {"loss": loss, "dopd/num_tokens": float(n)}
    for regime, frac, rej, gain in zip(("HT", "HS", "LH", "LL"), fracs, rejected, gains):
        out[f"dopd/{regime}/token_frac"] = frac
        out[f"dopd/{regime}/teacher_rejected_frac"] = rej
        out[f"dopd/{regime}/priv_logp_gain"] = gain
    out["dopd/all/priv_logp_gain"] = sum(f * g for f, g in zip(fracs, gains))
    out["dopd/all/teacher_rejected_frac"] = sum(f * r for f, r in zip(fracs, rejected))
    return out


def test_premise_values_by_hand():
    a = record(100, (0.5, 0.2, 0.2, 0.1), (0.0, 0.5, 0.0, 1.0), (0.2, -0.1, 0.0, 0.3))
    b = record(300, (0.25, 0.25, 0.25, 0.25), (0.2, 0.0, 0.4, 0.0), (0.1, 0.1, 0.1, -0.2))
    values = premise_values([a, b], TABLE)
    # HT tokens: 50 + 75 of 400; its gain (50 * 0.2 + 75 * 0.1) / 125
    assert values["tokens"]["HT"]["share"] == pytest.approx(125 / 400)
    assert values["tokens"]["HT"]["priv_logp_gain"] == pytest.approx((50 * 0.2 + 75 * 0.1) / 125)
    # rejected tokens: HT 0 + 15, HS 10 + 0, LH 0 + 30, LL 10 + 0 -> to the teacher (HT, LH) 45 of 65
    assert values["rejected_to_teacher"] == pytest.approx(45 / 65)
    assert values["rejected_to_self"] == pytest.approx(20 / 65)
    all_gain = (100 * a["dopd/all/priv_logp_gain"] + 300 * b["dopd/all/priv_logp_gain"]) / 400
    assert values["tokens"]["all"]["priv_logp_gain"] == pytest.approx(all_gain)
    assert values["tokens"]["all"]["teacher_rejected_frac"] == pytest.approx(65 / 400)


def _feed(callback, records):
    logs_out = []
    for step, rec in enumerate(records, start=1):
        logs = dict(rec)
        state = SimpleNamespace(global_step=step, is_world_process_zero=True)
        callback.on_log(None, state, None, logs=logs)
        logs_out.append(logs)
    return logs_out


HOLDS = record(200, (0.4, 0.1, 0.4, 0.1), (0.3, 0.1, 0.1, 0.1), (0.5, 0.2, 0.3, 0.1))
NO_GAIN = record(200, (0.4, 0.1, 0.4, 0.1), (0.3, 0.1, 0.1, 0.1), (-0.5, 0.2, -0.3, 0.1))
TO_SELF = record(200, (0.3, 0.4, 0.2, 0.1), (0.0, 0.9, 0.1, 0.5), (0.5, 0.2, 0.3, 0.1))


@pytest.mark.parametrize("bad, phrase", [(NO_GAIN, "priv_logp_gain"), (TO_SELF, "routed to a self target")])
def test_alarm_fires_once_when_a_premise_fails(caplog, bad, phrase):
    callback = PremiseAlarmCallback(TABLE, check_steps=3)
    with caplog.at_level(logging.WARNING, logger="dopd.train.premise_alarm"):
        logs = _feed(callback, [bad] * 8)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and len(warnings[0].getMessage().splitlines()) == 1
    message = warnings[0].getMessage()
    assert phrase in message and "docs/before_you_train.md" in message and "after 3 steps" in message
    assert logs[2]["premise/alarm"] == 1.0 and "premise/priv_logp_gain" in logs[2]
    assert all("premise/alarm" not in logs[i] for i in (0, 1, 3, 7))


def test_alarm_silent_when_premises_hold(caplog):
    callback = PremiseAlarmCallback(TABLE, check_steps=3)
    with caplog.at_level(logging.WARNING, logger="dopd.train.premise_alarm"):
        logs = _feed(callback, [HOLDS] * 5)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert logs[2]["premise/alarm"] == 0.0 and logs[2]["premise/rejected_to_teacher"] > 0.5


def test_alarm_reads_only_the_first_steps(caplog):
    """Premises broken only after the checked steps: no alarm (it decides once)."""
    callback = PremiseAlarmCallback(TABLE, check_steps=2)
    with caplog.at_level(logging.WARNING, logger="dopd.train.premise_alarm"):
        _feed(callback, [HOLDS, HOLDS, NO_GAIN, NO_GAIN, NO_GAIN])
    assert not caplog.records


def test_alarm_after_a_resume_past_the_checked_steps_stays_silent(caplog):
    """The run before the resume decided (its trainer_log holds premise/*); the resumed one must not decide again
    on a single logging window."""
    callback = PremiseAlarmCallback(TABLE, check_steps=3)
    callback.on_train_begin(None, SimpleNamespace(global_step=20, is_world_process_zero=True), None)
    with caplog.at_level(logging.WARNING, logger="dopd.train.premise_alarm"):
        for step in (21, 22, 23):
            logs = dict(NO_GAIN)
            callback.on_log(None, SimpleNamespace(global_step=step, is_world_process_zero=True), None, logs=logs)
            assert "premise/alarm" not in logs
    assert not caplog.records


def test_alarm_log_values_are_strict_json_when_one_is_unmeasured():
    """No priv_logp_gain logged (a method without it): the key is left out, never a NaN in trainer_log.jsonl."""
    no_gain = {k: v for k, v in TO_SELF.items() if not k.endswith("priv_logp_gain")}
    logs = _feed(PremiseAlarmCallback(TABLE, check_steps=1), [no_gain])[0]
    assert logs["premise/alarm"] == 1.0 and "premise/priv_logp_gain" not in logs
    json.dumps(logs, allow_nan=False)


def _tiny(tmp_path, **overrides):
    from dopd.hparams import parse_config

    settings = {
        "model_name_or_path": "tiny:qwen2:student", "teacher_model_name_or_path": "tiny:qwen2:teacher",
        "dataset": "llm_demo", "dataset_dir": str(REPO / "data"), "max_samples": 4, "num_generations": 2,
        "max_new_tokens": 6, "per_device_train_batch_size": 2, "max_steps": 2, "logging_steps": 1,
        "save_steps": 100, "learning_rate": 1e-3, "report_to": "none", "use_cpu": True, "seed": 0,
        "plot_loss": False, "disable_tqdm": True, "output_dir": str(tmp_path / "out"),
    }
    settings.update(overrides)
    return parse_config(None, [f"{key}={value}" for key, value in settings.items()])


@pytest.mark.parametrize("overrides, expected", [
    ({}, True), ({"premise_alarm": False}, False), ({"stage": "vanilla_opd"}, False),
])
def test_build_trainer_registers_the_alarm_for_runs_that_score_both_policies(tmp_path, overrides, expected):
    from dopd.data import load_and_validate
    from dopd.train.workflow import build_trainer

    cfg = _tiny(tmp_path, **overrides)
    trainer = build_trainer(cfg, load_and_validate(cfg.data, "llm_demo"))
    alarms = [c for c in trainer.callback_handler.callbacks if isinstance(c, PremiseAlarmCallback)]
    assert len(alarms) == int(expected)


def test_premise_values_reach_trainer_log(tmp_path):
    from dopd.train.workflow import run_train

    cfg = _tiny(tmp_path, premise_check_steps=1)
    run_train(cfg)
    with open(os.path.join(cfg.training.output_dir, "trainer_log.jsonl"), encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    train = [r for r in records if "loss" in r]
    assert "premise/priv_logp_gain" in train[0] and "premise/alarm" in train[0]
    assert "premise/alarm" not in train[1]
