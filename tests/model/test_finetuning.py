"""full / freeze / LoRA on tiny models; LoRA save, reload and merged export."""

from __future__ import annotations

import os

import pytest
import torch
from model_helpers import model_args, views

from dopd.hparams import ConfigError, FinetuningArguments
from dopd.model import apply_finetuning, load_adapter, load_model
from dopd.model.export import run_export_cli


def _fresh(path: str, **kw):
    adapter = load_adapter(path, model_args())
    return adapter, load_model(path, model_args(), adapter=adapter, **kw)


def _scoring_batch(adapter):
    plain, _ = views(adapter)
    prompt = adapter.encode_prompt(plain)
    return adapter.build_scoring_batch([prompt], [[5, 6, 7, adapter.stop_token_ids[0]]])


def _perturb_lora(model) -> None:
    """LoRA B starts at zero (adapter == base); give it values so the test can tell them apart."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


@pytest.mark.parametrize("family", ["qwen2", "qwen2_vl"])
def test_lora_disabled_equals_base_and_only_adapters_train(family: str, tiny_model) -> None:
    path = tiny_model(family)
    adapter, base = _fresh(path)
    batch, labels = _scoring_batch(adapter)
    with torch.no_grad():
        base_logits = adapter.forward_logits(base, batch)
    ft = FinetuningArguments(finetuning_type="lora", lora_rank=4)
    model = apply_finetuning(base, adapter, ft, model_args())
    _perturb_lora(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable)  # the language model's linear layers only
    with torch.no_grad(), model.disable_adapter():
        assert torch.equal(adapter.forward_logits(model, batch), base_logits)
    logits = adapter.forward_logits(model, batch)
    assert not torch.allclose(logits, base_logits)
    mask = labels != -100
    logits[mask].float().log_softmax(-1).gather(-1, labels[mask][:, None]).sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and with_grad <= set(trainable)
    # forward_hidden goes through the LoRA layers too
    hidden, head = adapter.forward_hidden(model, batch)
    torch.testing.assert_close(head(hidden), logits, rtol=1e-5, atol=1e-5)


def test_lora_save_reload_and_merged_export(tiny_model, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    path = tiny_model("qwen2_vl")
    adapter, base = _fresh(path)
    model = apply_finetuning(base, adapter, FinetuningArguments(finetuning_type="lora", lora_rank=4), model_args())
    _perturb_lora(model)
    model.eval()
    batch, _ = _scoring_batch(adapter)
    with torch.no_grad():
        ref = adapter.forward_logits(model, batch)
    lora_dir = str(tmp_path / "lora")
    model.save_pretrained(lora_dir)
    assert os.path.isfile(os.path.join(lora_dir, "adapter_config.json"))

    # resume through adapter_name_or_path
    adapter2, base2 = _fresh(path)
    resumed = apply_finetuning(base2, adapter2, FinetuningArguments(finetuning_type="lora"),
                               model_args(adapter_name_or_path=lora_dir))
    assert isinstance(resumed, PeftModel) and any(p.requires_grad for p in resumed.parameters())
    resumed.eval()
    with torch.no_grad():
        torch.testing.assert_close(adapter2.forward_logits(resumed, batch), ref)

    # dopd-cli export: merge and save model + processor
    out = str(tmp_path / "merged")
    code = run_export_cli(None, [f"model_name_or_path={path}", f"adapter_name_or_path={lora_dir}",
                                 f"export_dir={out}", "torch_dtype=float32"])
    assert code == 0
    merged = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    merged_adapter = load_adapter(out, model_args())
    with torch.no_grad():
        torch.testing.assert_close(merged_adapter.forward_logits(merged, batch), ref, rtol=1e-4, atol=1e-5)
    plain, _ = views(merged_adapter)
    assert merged_adapter.encode_prompt(plain).input_ids == adapter.encode_prompt(plain).input_ids


def test_export_requires_export_dir(tiny_model) -> None:
    with pytest.raises(ConfigError, match="export_dir"):
        run_export_cli(None, [f"model_name_or_path={tiny_model('qwen2')}"])


def test_full_finetuning_freezes_vision_by_default(tiny_model) -> None:
    adapter, model = _fresh(tiny_model("qwen2_vl"))
    apply_finetuning(model, adapter, FinetuningArguments(finetuning_type="full"))
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    assert not any(v for n, v in grads.items() if n.startswith("model.visual."))
    assert all(v for n, v in grads.items() if not n.startswith("model.visual."))
    apply_finetuning(model, adapter, FinetuningArguments(finetuning_type="full", freeze_multi_modal_projector=False))
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(v for n, v in grads.items() if n.startswith("model.visual.merger."))
    assert not any(v for n, v in grads.items() if n.startswith("model.visual.blocks."))


def test_freeze_trains_only_last_layers(tiny_model) -> None:
    adapter, model = _fresh(tiny_model("qwen3_vl", "teacher"))  # 3 layers
    apply_finetuning(model, adapter, FinetuningArguments(finetuning_type="freeze", freeze_trainable_layers=1))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.language_model.layers.2.") for n in trainable)
    with pytest.raises(ConfigError, match="freeze_trainable_layers"):
        apply_finetuning(model, adapter, FinetuningArguments(finetuning_type="freeze", freeze_trainable_layers=9))


def test_gradient_checkpointing_trains_and_generates(tiny_model) -> None:
    class Args:
        gradient_checkpointing = True
        gradient_checkpointing_kwargs = None

    adapter, model = _fresh(tiny_model("qwen2_vl"), gradient_checkpointing=True)
    model = apply_finetuning(model, adapter, FinetuningArguments(finetuning_type="lora"), model_args(),
                             training_args=Args())
    assert model.training
    batch, labels = _scoring_batch(adapter)
    hidden, head = adapter.forward_hidden(model, batch)
    head(hidden).sum().backward()
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
    plain, _ = views(adapter)
    out = adapter.generate(model, adapter.collate_prompts([adapter.encode_prompt(plain)]), max_new_tokens=3)
    assert len(out[0]) >= 1 and model.training  # training mode restored after the rollout


def test_lora_target_list_is_checked(tiny_model) -> None:
    adapter, model = _fresh(tiny_model("qwen2"))
    with pytest.raises(ConfigError, match="lora_target"):
        apply_finetuning(model, adapter, FinetuningArguments(finetuning_type="lora", lora_target="qkv_nope"))
    model = apply_finetuning(model, adapter, FinetuningArguments(finetuning_type="lora", lora_target="q_proj,v_proj"))
    names = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"q_proj", "v_proj"}
