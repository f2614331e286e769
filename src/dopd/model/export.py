"""`dopd-cli export CONFIG.yaml`: merge a LoRA adapter into its base model and save model + processor."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence

from torch import nn

from .adapters.base import ModelAdapter

logger = logging.getLogger(__name__)


def save_model_and_processor(model: nn.Module, adapter: ModelAdapter, out_dir: str) -> str:
    """`save_pretrained` the model, the tokenizer and (VLMs) the processor, so `from_pretrained(out_dir)` works.

    A VLM processor saves under transformers' own class name and puts the base checkpoint's preprocessor,
    video-preprocessor, chat-template and processor files back (`dopd.model.processors`), so stock
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


def export_model(model_args: Any, export_dir: Optional[str] = None) -> str:
    """Load `model_name_or_path` (+ `adapter_name_or_path` merged in, if given) and save it to `export_dir`."""
    from dopd.hparams import ConfigError

    from .loader import load_adapter, load_model

    out_dir = export_dir or getattr(model_args, "export_dir", None)
    if not out_dir:
        raise ConfigError("export_dir is required for `dopd-cli export`")
    if not getattr(model_args, "model_name_or_path", None):
        raise ConfigError("model_name_or_path is required for `dopd-cli export` (the base model)")
    adapter = load_adapter(model_args.model_name_or_path, model_args)
    model = load_model(model_args.model_name_or_path, model_args, adapter=adapter)
    lora = getattr(model_args, "adapter_name_or_path", None)
    if lora:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, lora).merge_and_unload()
        logger.info("merged LoRA adapter %s into %s", lora, model_args.model_name_or_path)
    else:
        logger.warning("no adapter_name_or_path: exporting the base model unchanged")
    model.eval()
    return save_model_and_processor(model, adapter, out_dir)


def run_export_cli(config_path: Optional[str], overrides: Sequence[str]) -> int:
    from dopd.hparams import parse_config

    cfg = parse_config(config_path, list(overrides), with_training=False)
    out = export_model(cfg.model)
    print(f"exported to {out}")
    return 0
