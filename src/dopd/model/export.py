"""`dopd-cli export CONFIG.yaml`: merge a LoRA adapter into its base model and save model + processor."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional, Sequence

from torch import nn

from dopd.hparams import ConfigError, parse_config

from .adapters.base import ModelAdapter
from .loader import load_adapter, load_model
from .paths import resolve_model_path

logger = logging.getLogger(__name__)


def save_model_and_processor(model: nn.Module, adapter: ModelAdapter, out_dir: str) -> str:
    """`save_pretrained` the model, the tokenizer and (VLMs) the processor, so `from_pretrained(out_dir)` works.

    A VLM processor saves under transformers' own class name and puts the base checkpoint's preprocessor,
    video-preprocessor, chat-template and processor files back (`dopd.model.adapters.qwen_vl.processors`), so stock
    `AutoProcessor` / `AutoImageProcessor` / `AutoTokenizer` load the folder like the base model."""
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    if adapter.processor is not None:
        adapter.processor.save_pretrained(out_dir)  # the tokenizer too
    else:
        adapter.tokenizer.save_pretrained(out_dir)
    gen = getattr(adapter, "generation_config", None)
    if gen is not None and not os.path.isfile(os.path.join(out_dir, "generation_config.json")):
        gen.save_pretrained(out_dir)
    return out_dir


def base_from_adapter(adapter_dir: Optional[str]) -> str:
    """The base model a LoRA adapter was trained on: `base_model_name_or_path` of its `adapter_config.json` (peft
    writes it on save), for an export config that leaves `model_name_or_path` out."""
    if not adapter_dir:
        raise ConfigError("`dopd-cli export` needs model_name_or_path (the base model) or adapter_name_or_path "
                          "(a LoRA folder whose adapter_config.json names its base)")
    config_file = os.path.join(adapter_dir, "adapter_config.json")
    if not os.path.isfile(config_file):
        raise ConfigError(f"adapter_name_or_path={adapter_dir}: no adapter_config.json there; give "
                          "model_name_or_path, or the folder a LoRA run saved (its output_dir or a checkpoint-N)")
    with open(config_file, encoding="utf-8") as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{config_file}: no base_model_name_or_path; give model_name_or_path (the base model)")
    logger.info("model_name_or_path not given: the base from %s is %s", config_file, base)
    return base


def export_model(model_args: Any, export_dir: Optional[str] = None) -> str:
    """Load `model_name_or_path` (+ `adapter_name_or_path` merged in, if given) and save it to `export_dir`.

    `model_name_or_path` takes `tiny:` names as training does; left out, it is read from the adapter's
    `adapter_config.json`."""
    out_dir = export_dir or getattr(model_args, "export_dir", None)
    if not out_dir:
        raise ConfigError("export_dir is required for `dopd-cli export`")
    lora = getattr(model_args, "adapter_name_or_path", None)
    base = getattr(model_args, "model_name_or_path", None) or base_from_adapter(lora)
    base = resolve_model_path(base, "student")  # `tiny:<family>...` as in training; anything else unchanged
    adapter = load_adapter(base, model_args)
    model = load_model(base, model_args, adapter=adapter)
    if lora:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, lora).merge_and_unload()
        logger.info("merged LoRA adapter %s into %s", lora, base)
    else:
        logger.warning("no adapter_name_or_path: exporting the base model unchanged")
    model.eval()
    return save_model_and_processor(model, adapter, out_dir)


def run_export_cli(config_path: Optional[str], overrides: Sequence[str]) -> int:
    cfg = parse_config(config_path, list(overrides), with_training=False)
    out = export_model(cfg.model)
    print(f"exported to {out}")
    return 0
