"""The console: one compact line per logged step (not the record's dict), the full record in trainer_log.jsonl, and
no wandb text when report_to has no wandb."""

import json
import os
import re
from pathlib import Path

import pytest
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from dopd.hparams import parse_config
from dopd.train.callbacks import (CompactPrinterCallback, CompactProgressCallback, format_log_line, mean_gap,
                                  use_compact_console)
from dopd.train.workflow import run_train

REPO = Path(__file__).resolve().parents[2]
STEP_LINE = re.compile(
    r"^step (\d+)/(\d+) \| loss \S+ \| HT [\d.]+ HS [\d.]+ LH [\d.]+ LL [\d.]+ \| gap \S+ \| rollout [\d.]+ tok/s"
    r" \| \S+ s/step \| ETA \d+:\d\d:\d\d$")


def tiny_config(tmp_path, **overrides):
    settings = {
        "model_name_or_path": "tiny:qwen2:student", "teacher_model_name_or_path": "tiny:qwen2:teacher",
        "dataset": "llm_demo", "dataset_dir": str(REPO / "data"), "max_samples": 4, "num_generations": 2,
        "max_new_tokens": 8, "per_device_train_batch_size": 2, "max_steps": 2, "logging_steps": 1,
        "save_steps": 100, "learning_rate": 1e-3, "report_to": "none", "use_cpu": True, "seed": 0,
        "plot_loss": False, "disable_tqdm": True, "output_dir": str(tmp_path / "out"),
    }
    settings.update(overrides)
    return parse_config(None, [f"{key}={value}" for key, value in settings.items()])


def test_two_steps_print_one_compact_line_each(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = tiny_config(tmp_path, eval_strategy="steps", eval_steps=2, eval_dataset="llm_demo", eval_max_new_tokens=4)
    run_train(cfg)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert len(steps) == 2, out
    for n, line in enumerate(steps, start=1):
        match = STEP_LINE.match(line)
        assert match and match.groups() == (str(n), "2"), line
    evals = [line for line in lines if line.startswith("eval ")]
    assert len(evals) == 1 and re.match(r"^eval step 2/2 \| llm_demo acc [\d.]+ \| \S+ s$", evals[0]), out
    assert any(line.startswith("done: step 2/2 in ") for line in lines), out
    for text in (out, err):
        assert "{'" not in text and "'loss'" not in text, text  # no record dict dumped
        assert "wandb" not in text.lower(), text

    # the full records are still in trainer_log.jsonl
    with open(os.path.join(cfg.training.output_dir, "trainer_log.jsonl"), encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    train = [r for r in records if "loss" in r]
    assert len(train) == 2 and all(len(r) > 30 for r in train)
    assert all("dopd/HT/mean_gap" in r and "time/optimizer_s" in r and "grad_norm" in r for r in train)
    assert any("eval/llm_demo/accuracy" in r for r in records)


def test_tqdm_bar_stays_and_lines_go_above_it(tmp_path, capsys):
    cfg = tiny_config(tmp_path, max_steps=1, disable_tqdm=False)
    run_train(cfg)
    out, err = capsys.readouterr()
    assert "1/1 [" in err  # the tqdm bar
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(steps) == 1 and STEP_LINE.match(steps[0]), out
    assert "{'" not in out + err


def test_console_callbacks_replace_the_printers_in_place():
    class FakeHandler:
        callbacks = [object(), PrinterCallback(), ProgressCallback(max_str_len=7), object()]

    class FakeTrainer:
        callback_handler = FakeHandler()

    trainer = FakeTrainer()
    use_compact_console(trainer)
    kinds = [type(cb) for cb in trainer.callback_handler.callbacks]
    assert kinds[1] is CompactPrinterCallback and kinds[2] is CompactProgressCallback
    assert trainer.callback_handler.callbacks[2].max_str_len == 7
    # subclasses: code removing the Trainer's printers by class (benchmarks' quiet) still removes these
    assert isinstance(trainer.callback_handler.callbacks[1], PrinterCallback)
    assert isinstance(trainer.callback_handler.callbacks[2], ProgressCallback)


def test_line_formats():
    logs = {"loss": 0.5, "grad_norm": 1.0, "dopd/HT/token_frac": 0.25, "dopd/HT/mean_gap": 1.0,
            "dopd/LL/token_frac": 0.75, "dopd/LL/mean_gap": 0.2, "rollout/tokens_per_s": 123.45}
    assert mean_gap(logs) == pytest.approx(0.4)
    assert format_log_line(logs, 3, 10, 2.0, 3725.0) == (
        "step 3/10 | loss 0.5 | HT 0.25 LL 0.75 | gap 0.4 | rollout 123.5 tok/s | 2 s/step | ETA 1:02:05")
    assert format_log_line({"loss": 1.25}, 1, 2) == "step 1/2 | loss 1.25"  # sft: no regimes, no rollout
    assert format_log_line({"eval/a/accuracy": 0.5, "eval/b/accuracy": 0.25, "eval/average/accuracy": 0.375,
                            "eval/a/num_prompts": 4.0, "eval/seconds": 1.5}, 4, 10) == (
        "eval step 4/10 | a acc 0.500 | b acc 0.250 | average acc 0.375 | 1.5 s")
    assert format_log_line({"train_runtime": 75.2, "train_loss": 0.25, "epoch": 1.0}, 10, 10) == (
        "done: step 10/10 in 0:01:15 | mean loss 0.25")
