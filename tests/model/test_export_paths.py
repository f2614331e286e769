"""`dopd-cli export` as the docs show it (issue 26, item 2): `tiny:` base names, the base read from the adapter's
adapter_config.json when `model_name_or_path` is left out, and the shipped example config."""

from __future__ import annotations

import json
import os

import pytest
import torch
from model_helpers import model_args

from dopd.hparams import ConfigError, FinetuningArguments
from dopd.model import apply_finetuning, load_adapter, load_model
from dopd.model.export import run_export_cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "configs", "demo", "export_lora.yaml")


def _saved_lora(path: str, out: str) -> torch.Tensor:
    """Save a LoRA adapter with non-zero B on `path`; return its logits on a fixed batch."""
    adapter = load_adapter(path, model_args())
    model = apply_finetuning(load_model(path, model_args(), adapter=adapter), adapter,
                             FinetuningArguments(finetuning_type="lora", lora_rank=4), model_args())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    model.save_pretrained(out)
    return _logits(model.eval())


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([[3, 5, 7, 11, 13]])).logits


def _exported_logits(out: str) -> torch.Tensor:
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    is_vlm = "vision_config" in json.load(open(os.path.join(out, "config.json")))
    cls = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    return _logits(cls.from_pretrained(out, dtype=torch.float32).eval())


def test_export_takes_tiny_names(tiny_model, tmp_path) -> None:
    base = tiny_model("qwen2")  # built where `tiny:qwen2:student` resolves ($DOPD_TINY_DIR)
    out = str(tmp_path / "exported")
    assert run_export_cli(None, ["model_name_or_path=tiny:qwen2:student", f"export_dir={out}",
                                 "torch_dtype=float32"]) == 0
    torch.testing.assert_close(_exported_logits(out), _exported_logits(base))


def test_export_reads_the_base_from_the_adapter(tiny_model, tmp_path) -> None:
    base = tiny_model("qwen2")
    lora = str(tmp_path / "lora")
    ref = _saved_lora(base, lora)
    assert json.load(open(os.path.join(lora, "adapter_config.json")))["base_model_name_or_path"] == base
    out = str(tmp_path / "merged")
    assert run_export_cli(None, [f"adapter_name_or_path={lora}", f"export_dir={out}", "torch_dtype=float32"]) == 0
    torch.testing.assert_close(_exported_logits(out), ref, rtol=1e-4, atol=1e-5)


def test_export_without_base_or_adapter_says_what_is_missing(tmp_path) -> None:
    with pytest.raises(ConfigError, match="model_name_or_path.*adapter_name_or_path"):
        run_export_cli(None, [f"export_dir={tmp_path / 'x'}"])
    with pytest.raises(ConfigError, match="adapter_config.json"):
        run_export_cli(None, [f"adapter_name_or_path={tmp_path}", f"export_dir={tmp_path / 'x'}"])


def test_shipped_example_config_exports(tiny_model, tmp_path) -> None:
    """configs/demo/export_lora.yaml as shipped (its `tiny:qwen2_vl:student` base), with the adapter and output
    folders pointed at this test's tmp dir."""
    base = tiny_model("qwen2_vl")
    lora = str(tmp_path / "lora")
    ref = _saved_lora(base, lora)
    out = str(tmp_path / "merged")
    assert run_export_cli(EXAMPLE, [f"adapter_name_or_path={lora}", f"export_dir={out}"]) == 0
    torch.testing.assert_close(_exported_logits(out), ref, rtol=1e-4, atol=1e-5)
