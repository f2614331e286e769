"""One trainer per stage: `build_trainer` gives `SFTTrainer` for `sft` (no rollout, no teacher) and `DOPDTrainer` for a
distillation method; the non-finite loss guard owns its skip flag; `StepTimer` is the one clock of a step's phases."""

import torch
from transformers import TrainerControl, TrainerState

from dopd.data import load_and_validate
from dopd.train.callbacks import NonFiniteLossCallback
from dopd.train.metrics import StepMetrics, StepTimer
from dopd.train.sft_trainer import SFTTrainer
from dopd.train.trainer import DOPDTrainer
from dopd.train.workflow import build_trainer

from .test_train_e2e import make_config


def test_each_stage_gets_its_own_trainer(tmp_path):
    sft_cfg = make_config(tmp_path, stage="sft", max_steps=1, save_steps=10)
    sft = build_trainer(sft_cfg, load_and_validate(sft_cfg.data, sft_cfg.data.dataset))
    assert type(sft) is SFTTrainer
    assert not hasattr(sft, "rollout_engine") and not hasattr(sft, "teacher") and sft.timer.phases == ()
    sft.train()
    step = [r for r in sft.state.log_history if "loss" in r][0]
    assert "sft/response_length" in step and "time/update_s" in step and "time/optimizer_s" in step
    assert not any(key.startswith(("rollout/", "dopd/", "time/rollout", "time/scoring")) for key in step)

    cfg = make_config(tmp_path / "dopd", max_steps=1, save_steps=10)
    dopd = build_trainer(cfg, load_and_validate(cfg.data, cfg.data.dataset))
    assert type(dopd) is DOPDTrainer and dopd.teacher is not None and dopd.timer.phases == ("rollout", "scoring")


def test_the_nonfinite_guard_owns_its_flag():
    model = torch.nn.Linear(2, 2)
    state, control = TrainerState(), TrainerControl()
    guard = NonFiniteLossCallback(limit=2)

    def optimizer_step():
        model.weight.grad = torch.ones(2, 2)
        guard.on_pre_optimizer_step(None, state, control, model=model)
        return model.weight.grad is None

    assert not optimizer_step() and guard.in_a_row == 0  # nothing requested: the update goes ahead
    guard.skip_update()
    assert optimizer_step() and guard.in_a_row == 1 and not control.should_training_stop
    assert not optimizer_step() and guard.in_a_row == 0  # the request covers one step only
    guard.skip_update()
    guard.cancel_skip()
    assert not optimizer_step()
    guard.skip_update()
    optimizer_step()
    guard.skip_update()
    assert optimizer_step() and guard.in_a_row == 2
    assert control.should_training_stop and guard.stopped_for_nonfinite


def test_the_step_timer_splits_a_step_into_its_phases():
    metrics = StepMetrics()
    timer = StepTimer(metrics, torch.device("cpu"), ("rollout", "scoring"))
    for _ in range(2):  # two micro-batches of one optimizer step
        with timer.phase("step"):
            with timer.phase("rollout") as lap:
                pass
            with timer.phase("scoring"):
                pass
    timer.end_step()
    timer.on_pre_optimizer_step(None, None, None)
    timer.on_optimizer_step(None, None, None)
    logged = metrics.drain()
    assert list(logged) == ["time/rollout_s", "time/scoring_s", "time/update_s", "time/optimizer_s"]
    assert lap.seconds >= 0 and all(value >= 0 for value in logged.values())
    assert not metrics
