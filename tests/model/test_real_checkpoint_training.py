"""What a bf16 checkpoint trains like (issue 11, items 7 and 8): trainable weights in fp32 without DeepSpeed, and no
dropout anywhere in the student or the teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dopd.hparams import FinetuningArguments, ModelArguments
from dopd.model import apply_finetuning, load_adapter, load_model
from dopd.model.loader import load_teacher

REPO = Path(__file__).resolve().parents[2]


def _student(path: str, dtype: str = "float32"):
    args = ModelArguments(torch_dtype=dtype)
    adapter = load_adapter(path, args)
    return adapter, load_model(path, args, adapter=adapter), args


def _logits(adapter, model):
    from dopd.data.views import PromptView

    prompt = adapter.encode_prompt(PromptView(messages=[{"role": "user", "content": "What is 3 + 4?"}]))
    batch, _ = adapter.build_scoring_batch([prompt], [[5, 6, 7, 8]])
    return adapter.forward_logits(model, batch).detach()


@pytest.mark.parametrize("ftype", ["lora", "full"])
def test_dropout_is_off_in_training_mode(tiny_model, ftype) -> None:
    path = tiny_model("qwen2", "student")
    adapter, model, args = _student(path)
    model.config.attention_dropout = 0.3  # checkpoints may ship attention dropout
    for module in model.modules():
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.3
    model = apply_finetuning(model, adapter, FinetuningArguments(finetuning_type=ftype, lora_dropout=0.1), args)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter: LoRA's dropout now changes the output
    model.train()
    torch.manual_seed(0)
    first, second = _logits(adapter, model), _logits(adapter, model)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    model.eval()
    torch.testing.assert_close(_logits(adapter, model), first, rtol=1e-5, atol=1e-5)  # train mode == the sampler


def test_teacher_has_no_dropout(tiny_model) -> None:
    teacher, _ = load_teacher(ModelArguments(teacher_model_name_or_path=tiny_model("qwen2", "teacher")))
    assert all(m.p == 0 for m in teacher.modules() if isinstance(m, torch.nn.Dropout))
    assert all(getattr(m, "attention_dropout", 0.0) == 0.0 for m in teacher.modules())


@pytest.mark.parametrize("ftype", ["full", "freeze"])
def test_bf16_trainable_params_are_fp32_without_deepspeed(tiny_model, ftype) -> None:
    adapter, model, args = _student(tiny_model("qwen2", "student"), "bfloat16")
    model = apply_finetuning(model, adapter, FinetuningArguments(finetuning_type=ftype, freeze_trainable_layers=1),
                             args)
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    assert model.dopd_compute_dtype == torch.bfloat16


@pytest.mark.parametrize("ftype", ["full", "freeze"])
def test_pure_bf16_trains_the_weights_in_bf16(tiny_model, ftype) -> None:
    """`pure_bf16` (LLaMA-Factory's flag): no fp32 master copy and no autocast, so weights, gradients and AdamW
    states take 8 bytes per parameter instead of 16. (LoRA adapters are fp32 either way: peft creates them so.)"""
    adapter, model, args = _student(tiny_model("qwen2", "student"), "bfloat16")
    model = apply_finetuning(model, adapter, FinetuningArguments(finetuning_type=ftype, pure_bf16=True), args)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.bfloat16 for p in trainable)
    assert getattr(model, "dopd_compute_dtype", None) is None


def test_bf16_small_lr_updates_are_not_rounded_away(tmp_path) -> None:
    """One DOPD step at the paper's lr 5e-6 on a bf16 checkpoint must move the weights (bf16 weights of size ~1e-2
    cannot represent a 5e-6 change: without an fp32 copy the step is lost)."""
    from dopd.model.paths import resolve_model_path
    from dopd.train.workflow import run_train
    from tests.train.test_train_e2e import make_config, trainable_state

    cfg = make_config(tmp_path, torch_dtype="bfloat16", learning_rate=5e-6, max_steps=1, save_steps=10,
                      lr_scheduler_type="constant", bf16=True)
    run_train(cfg)
    before = trainable_state(resolve_model_path("tiny:qwen2:student", "student"))
    after = trainable_state(cfg.training.output_dir)
    key = next(k for k in after if "layers.0.mlp.down_proj" in k)
    start = before[key].to(torch.bfloat16).float()  # the weights as loaded (the tiny checkpoint is saved in fp32)
    moved = (after[key].float() - start).abs() > 0
    # AdamW moves every weight by ~lr; in bf16 only those below ~1e-3 in size can represent that
    assert moved.float().mean() > 0.9, f"only {moved.float().mean():.1%} of the weights moved: updates rounded away"
    assert after[key].dtype == torch.float32  # the trained weights, not a bf16 rounding of them


def test_pure_bf16_run_saves_bf16_weights(tmp_path) -> None:
    """A training step under `pure_bf16` runs end to end and what it saves is the bf16 weights it trained."""
    from dopd.train.workflow import run_train
    from tests.train.test_train_e2e import make_config, trainable_state

    cfg = make_config(tmp_path, pure_bf16=True, max_steps=1, save_steps=10, lr_scheduler_type="constant")
    assert cfg.model.torch_dtype == "bfloat16"
    run_train(cfg)
    after = trainable_state(cfg.training.output_dir)
    assert after and all(t.dtype == torch.bfloat16 for t in after.values())
