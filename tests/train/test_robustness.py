"""Nothing lost on a crash: SIGTERM / Ctrl-C save a checkpoint and exit 143 / 130; non-finite losses skip the update
and stop the run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from dopd.model.paths import resolve_model_path
from dopd.train.workflow import run_train

from .test_train_e2e import REPO, make_config, trainable_state


def test_nonfinite_losses_skip_updates_and_stop(tmp_path, monkeypatch):
    import dopd.distill

    real = dopd.distill.dopd_loss_from_hidden

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(dopd.distill, "dopd_loss_from_hidden", poisoned)
    cfg = make_config(tmp_path, max_steps=6, max_nonfinite_steps=2, save_steps=100)
    result = run_train(cfg)
    assert result.stopped_early == "non-finite loss"
    assert result.global_step == 2
    logged = [r for r in result.log_history if "nonfinite_loss" in r]
    assert [r["nonfinite_loss"] for r in logged] == [1.0, 1.0]
    before = trainable_state(resolve_model_path("tiny:qwen2:student", "student"))
    after = trainable_state(cfg.training.output_dir)
    assert all(torch.equal(before[k], after[k]) for k in before), "a non-finite step updated the weights"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_and_exits_with_128_plus_the_signal(tmp_path, sig):
    """`dopd-cli train ... && dopd-cli eval ...` must stop after an interrupted run: the checkpoint is saved, and the
    exit code is the one a process killed by the signal gets (143 SIGTERM, 130 SIGINT), not 0. The run uses no
    DeepSpeed config, so DeepSpeed's accelerator warning stays out of its output."""
    out = tmp_path / "out"
    config = {
        "model_name_or_path": "tiny:qwen2:student", "teacher_model_name_or_path": "tiny:qwen2:teacher",
        "dataset": "llm_demo", "dataset_dir": str(REPO / "data"), "num_generations": 2, "max_new_tokens": 8,
        "output_dir": str(out), "per_device_train_batch_size": 1, "max_steps": 10000, "save_steps": 100000,
        "logging_steps": 1, "report_to": "none", "use_cpu": True, "disable_tqdm": True,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    resolve_model_path("tiny:qwen2:student", "student"), resolve_model_path("tiny:qwen2:teacher", "teacher")
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    env.pop("DOPD_VERBOSE", None)
    proc = subprocess.Popen([sys.executable, "-m", "dopd", "train", str(path)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = out / "trainer_log.jsonl"
    deadline = time.monotonic() + 300
    while not (log.is_file() and log.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, output[-3000:]
    assert "stopped by a signal" in output
    assert "Setting accelerator to CPU" not in output
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints, output[-3000:]
    step = int(checkpoints[-1].name.split("-")[1])
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    assert state["global_step"] == step >= 2
