"""Real pretrained weights (issue 11): render, eval, two DOPD steps in bf16, save, reload with stock transformers.

Not in the default run (marker `real`) and skipped unless DOPD_REAL_MODEL names a real chat checkpoint folder:

    bash ../shared/tools/fetch_real_qwen.sh 0.5b       # -> ~/.cache/dopd-real/qwen2.5-coder-0.5b-instruct
    DOPD_REAL_MODEL=~/.cache/dopd-real/qwen2.5-coder-0.5b-instruct \
    DOPD_REAL_TEACHER=~/.cache/dopd-real/qwen2.5-coder-1.5b-instruct \
        python -m pytest -m real tests/test_real.py

DOPD_REAL_TEACHER is optional (default: the student's folder). A few minutes on 2 idle CPU cores (bf16 on a CPU
without bf16 instructions; on a loaded machine much longer).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

STUDENT = os.path.expanduser(os.environ.get("DOPD_REAL_MODEL", ""))
TEACHER = os.path.expanduser(os.environ.get("DOPD_REAL_TEACHER", "")) or STUDENT
REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not STUDENT, reason="set DOPD_REAL_MODEL to a real checkpoint folder (see the docstring)"),
]


def _cfg(tmp_path: Path, with_training: bool = True, **overrides):
    from dopd.hparams import parse_config

    keys = {
        "model_name_or_path": STUDENT, "teacher_model_name_or_path": TEACHER, "torch_dtype": "bfloat16",
        "dataset": "llm_demo", "eval_dataset": "llm_demo", "dataset_dir": str(REPO / "data"), "max_samples": 4,
        "cutoff_len": 512, "output_dir": str(tmp_path / "out"), "report_to": "none", "use_cpu": True,
        "disable_tqdm": True, "seed": 0,
    }
    keys.update(overrides)
    return parse_config(None, [f"{k}={v}" for k, v in keys.items()], with_training=with_training)


def test_real_render_and_eval(tmp_path):
    from dopd.eval.workflow import evaluate_samples
    from dopd.data import load_dataset_samples
    from dopd.model import load_adapter, load_model
    from dopd.train.render import format_rendered, render_samples

    cfg = _cfg(tmp_path, with_training=False, eval_max_new_tokens=160)
    rendered, header = render_samples(cfg, num_samples=2)
    text = format_rendered(rendered, header)
    assert "<|im_end|>" in header["stop tokens"] and header["end of turn"] == "<|im_end|>"
    for sample in rendered:
        plain, privileged, teacher = sample.views
        assert plain.text.startswith("<|im_start|>system\n") and plain.text.endswith("<|im_start|>assistant\n")
        assert privileged.num_tokens > plain.num_tokens and "[Privileged hint]" in privileged.text
        assert teacher.num_tokens == privileged.num_tokens  # same tokenizer and template: the very same ids
    assert "sample 2/2" in text

    adapter = load_adapter(STUDENT, cfg.model)
    model = load_model(STUDENT, cfg.model, adapter=adapter)
    samples = load_dataset_samples(cfg.data, ["llm_demo"])[:4]
    result = evaluate_samples(model, adapter, samples, cfg.data, cfg.evaluation, cfg.rollout)
    predictions = [r["predictions"][0] for r in result.records]
    print(json.dumps(predictions, indent=1))
    assert all(len(p.split()) >= 3 and "\ufffd" not in p for p in predictions), predictions  # words, no garbage
    assert result.metrics["llm_demo/accuracy"] >= 0.25, (result.metrics, predictions)


def test_real_two_dopd_steps_save_reload(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dopd.train.workflow import run_train

    cfg = _cfg(tmp_path, stage="dopd", finetuning_type="freeze", freeze_trainable_layers=2, bf16=True,
               num_generations=2, max_new_tokens=16, per_device_train_batch_size=1, max_steps=2, logging_steps=1,
               save_steps=100, learning_rate=5e-6, lr_scheduler_type="constant", plot_loss=False)
    result = run_train(cfg)
    assert result.global_step == 2
    steps = [r for r in result.log_history if "loss" in r]
    assert len(steps) == 2 and all(math.isfinite(r["loss"]) for r in steps)
    assert all(r["rollout/response_length"] > 0 for r in steps)

    out = cfg.training.output_dir
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)  # stock transformers, no dopd code
    original = AutoModelForCausalLM.from_pretrained(STUDENT, dtype=torch.bfloat16)
    n = model.config.num_hidden_layers
    trained = dict(model.named_parameters())
    base = dict(original.named_parameters())
    moved = [k for k in trained if not torch.equal(trained[k], base[k])]
    assert moved and all(f"layers.{n - 2}." in k or f"layers.{n - 1}." in k for k in moved), moved[:5]
    messages = [{"role": "user", "content": "What is 6 times 7? Answer with the number."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    answer = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(answer[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    print(text)
    assert "42" in text, text
