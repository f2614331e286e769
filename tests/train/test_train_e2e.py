"""End to end: a few DOPD steps on tiny text and VLM models, through the same workflow `dopd-cli train` runs."""

import json
import os
from pathlib import Path

import pytest
import torch

from dopd.hparams import ConfigError, parse_config
from dopd.model.paths import resolve_model_path
from dopd.train.workflow import run_train

REPO = Path(__file__).resolve().parents[2]
REGIMES = ("HT", "HS", "LH", "LL")


def make_config(tmp_path, family="qwen2", dataset="llm_demo", **overrides):
    base = {
        "model_name_or_path": f"tiny:{family}:student",
        "teacher_model_name_or_path": f"tiny:{family}:teacher",
        "dataset": dataset,
        "dataset_dir": str(REPO / "data"),
        "max_samples": 8,
        "cutoff_len": 1024,
        "num_generations": 2,
        "max_new_tokens": 8,
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 2,
        "max_steps": 3,
        "logging_steps": 1,
        "save_steps": 2,
        "learning_rate": 1e-3,
        "report_to": "none",
        "use_cpu": True,
        "seed": 0,
        "image_max_pixels": 12544,
        "image_min_pixels": 3136,
        "disable_tqdm": True,
    }
    base.update(overrides)
    return parse_config(None, [f"{k}={v}" for k, v in base.items()])


def read_log(output_dir):
    with open(os.path.join(output_dir, "trainer_log.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def trainable_state(path):
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


@pytest.mark.parametrize("family,dataset", [("qwen2", "llm_demo"), ("qwen2_vl", "vlm_demo")])
def test_dopd_steps_train_log_and_save(tmp_path, family, dataset):
    cfg = make_config(tmp_path, family=family, dataset=dataset)
    result = run_train(cfg)
    assert result.global_step == 3

    log = read_log(cfg.training.output_dir)
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 3
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    seen = {regime: sum(r.get(f"dopd/{regime}/token_frac", 0.0) for r in steps) for regime in REGIMES}
    assert all(seen[regime] > 0 for regime in REGIMES), seen
    for key in ("time/rollout_s", "time/scoring_s", "time/update_s", "rollout/tokens_per_s", "dopd/student_entropy"):
        assert key in steps[0], key

    before = trainable_state(resolve_model_path(f"tiny:{family}:student", "student"))
    after = trainable_state(cfg.training.output_dir)
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert changed, "no weight changed after 3 DOPD steps"
    assert (Path(cfg.training.output_dir) / "checkpoint-2").is_dir()
    assert any(p.endswith("training_loss.png") for p in result.plots)


def test_resume_continues_from_saved_step(tmp_path):
    cfg = make_config(tmp_path, max_steps=2, save_steps=2)
    run_train(cfg)
    checkpoint = Path(cfg.training.output_dir) / "checkpoint-2"
    assert checkpoint.is_dir()
    resumed = run_train(make_config(tmp_path, max_steps=3, resume_from_checkpoint=str(checkpoint)))
    assert resumed.global_step == 3
    steps = [r["step"] for r in read_log(cfg.training.output_dir) if "loss" in r]
    assert steps == [1, 2, 3]  # the resumed run logged only step 3


def test_lora_run_saves_adapter_that_reloads(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = make_config(tmp_path, finetuning_type="lora", lora_rank=4, max_steps=1, save_steps=10)
    run_train(cfg)
    out = Path(cfg.training.output_dir)
    assert (out / "adapter_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny:qwen2:student", "student"))
    reloaded = PeftModel.from_pretrained(base, str(out))
    assert any("lora_" in name for name, _ in reloaded.named_parameters())


@pytest.mark.parametrize("stage", ["vanilla_opd", "opsd", "uniform_dual", "sft"])
def test_each_stage_runs_one_step(tmp_path, stage):
    cfg = make_config(tmp_path, stage=stage, max_steps=1, save_steps=10)
    result = run_train(cfg)
    assert result.global_step == 1
    steps = [r for r in read_log(cfg.training.output_dir) if "loss" in r]
    assert steps and torch.isfinite(torch.tensor(steps[0]["loss"]))


def test_bad_data_fails_before_any_model_loads(tmp_path, monkeypatch):
    import dopd.model

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was validated")

    monkeypatch.setattr(dopd.model, "load_adapter", refuse)
    monkeypatch.setattr(dopd.model, "load_model", refuse)
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(json.dumps({
        "broken": {"file_name": "broken.json", "formatting": "sharegpt",
                   "columns": {"messages": "messages", "images": "images"},
                   "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                            "assistant_tag": "assistant"}}
    }))
    (data / "broken.json").write_text(json.dumps([{
        "messages": [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "A cat."}],
        "images": ["missing.png"],
    }]))
    with pytest.raises(ConfigError, match="missing.png"):
        run_train(make_config(tmp_path, dataset="broken", dataset_dir=str(data)))


def test_unknown_key_fails_before_anything(tmp_path):
    with pytest.raises(ConfigError, match="num_generation.*num_generations"):
        parse_config(None, ["num_generation=2"])


def test_evaluation_during_training_is_logged(tmp_path):
    cfg = make_config(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=1, eval_dataset="llm_demo",
                      eval_max_new_tokens=4, save_steps=10)
    run_train(cfg)
    evals = [r for r in read_log(cfg.training.output_dir) if "eval/llm_demo/accuracy" in r]
    assert [r["step"] for r in evals] == [1, 2]
    assert all(0.0 <= r["eval/llm_demo/accuracy"] <= 1.0 for r in evals)
    # each evaluation's answers are kept beside the numbers, one file per step, one line per prompt
    for r in evals:
        path = Path(cfg.training.output_dir, "eval_predictions", f"step-{r['step']}.jsonl")
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == r["eval/llm_demo/num_prompts"]
        assert sum(int(row["correct"][0]) for row in rows) / len(rows) == pytest.approx(r["eval/llm_demo/accuracy"])
        assert all(isinstance(row["prediction"], str) for row in rows)


def test_eval_strategy_without_eval_dataset_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="eval_dataset"):
        run_train(make_config(tmp_path, eval_strategy="steps", eval_steps=1))


@pytest.mark.parametrize("report_to", ["tensorboard", "wandb"])
def test_report_to_works_offline(tmp_path, monkeypatch, report_to):
    if report_to == "wandb":  # only there: transformers prints "Running in WANDB offline mode" whenever it is set
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_DIR", str(tmp_path))
        monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_config(tmp_path, max_steps=1, save_steps=10, report_to=report_to)
    run_train(cfg)
    if report_to == "tensorboard":
        assert list(tmp_path.rglob("events.out.tfevents.*"))
    else:
        assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


def test_over_long_prompts_are_counted_in_a_warning(tmp_path, caplog):
    import logging

    cfg = make_config(tmp_path, max_steps=1, save_steps=10, cutoff_len=24)
    with caplog.at_level(logging.WARNING, logger="dopd.train.trainer"):
        result = run_train(cfg)
    steps = [r for r in result.log_history if "prompts/truncated_fraction" in r]
    assert steps and steps[0]["prompts/truncated_fraction"] > 0
    assert any("exceeded cutoff_len=24" in r.message for r in caplog.records)


def test_vlm_student_with_text_only_teacher(tmp_path, monkeypatch):
    """teacher_text_only: the teacher scores the text of x+p (image placeholders and images removed)."""
    from dopd.train.trainer import DOPDTrainer

    seen = []
    original = DOPDTrainer._score

    def spy(self, model, adapter, prompts, responses):
        if model is self.teacher:
            seen.append([(p.mm_inputs, adapter.tokenizer.decode(p.input_ids)) for p in prompts])
        return original(self, model, adapter, prompts, responses)

    monkeypatch.setattr(DOPDTrainer, "_score", spy)
    cfg = make_config(tmp_path, family="qwen2_vl", dataset="vlm_demo", teacher_model_name_or_path="tiny:qwen2:teacher",
                      teacher_text_only=True, max_steps=1, save_steps=10)
    result = run_train(cfg)
    assert result.global_step == 1 and seen
    for mm, text in seen[0]:
        assert not mm and "<|image_pad|>" not in text and "<|vision_start|>" not in text
        assert "[Privileged regions]" in text  # the teacher still reads p (boxes as text)


def test_multi_process_without_deepspeed_is_refused(tmp_path, monkeypatch):
    cfg = make_config(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    with pytest.raises(ConfigError, match="DeepSpeed config"):
        run_train(cfg)
