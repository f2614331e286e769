"""Loading adapters and models (student and teacher) from local folders or hub ids."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Optional

import torch
import transformers
from torch import nn

from dopd.hparams import ConfigError

from .adapters.base import ModelAdapter
from .finetuning import apply_finetuning, disable_dropout, enable_checkpointing
from .pretrained import hub_kwargs
from .registry import get_adapter_class

logger = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}


def resolve_dtype(name: Optional[str]) -> Any:
    """'auto' (the checkpoint's dtype) | bfloat16 | float16 | float32 -> what `from_pretrained(dtype=)` takes."""
    if name is None or str(name).lower() == "auto":
        return "auto"
    try:
        return _DTYPES[str(name).lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}; use auto, bfloat16, float16 or float32") from None


def resolve_attn_implementation(name: Optional[str]) -> str:
    """sdpa by default; flash_attention_2 only when the package is installed (else sdpa, with a warning)."""
    name = name or "sdpa"
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        logger.warning("attn_implementation=flash_attention_2 but flash_attn is not installed: using sdpa")
        return "sdpa"
    return name


def load_config(name_or_path: str, model_args: Any = None) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(name_or_path, **hub_kwargs(model_args))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the model config of {name_or_path!r}: {err}") from None


def load_adapter(name_or_path: str, model_args: Any = None) -> ModelAdapter:
    """The family adapter (tokenizer/processor, templates, batching) for a checkpoint, chosen by `model_type`."""
    config = load_config(name_or_path, model_args)
    cls = get_adapter_class(config.model_type)
    return cls.from_pretrained(name_or_path, config, model_args)


def load_model(name_or_path: str, model_args: Any = None, adapter: Optional[ModelAdapter] = None,
               role: str = "student", gradient_checkpointing: bool = False, dtype: Optional[str] = None
               ) -> nn.Module:
    """Load the transformers model for `name_or_path` with the configured dtype and attention kernel.

    `role="teacher"`: dtype `teacher_torch_dtype` (default `torch_dtype`), returned frozen (eval mode,
    `requires_grad=False` everywhere). `role="student"`: dtype `torch_dtype`; `gradient_checkpointing` enables
    non-reentrant checkpointing. Student finetuning (full / freeze / LoRA) is applied by `apply_finetuning`.
    """
    if role not in ("student", "teacher"):
        raise ValueError(f"role must be 'student' or 'teacher', got {role!r}")
    is_teacher = role == "teacher"
    if adapter is None:
        adapter = load_adapter(name_or_path, model_args)
    if dtype is None:
        dtype = getattr(model_args, "torch_dtype", "auto") if model_args is not None else "auto"
        if is_teacher and getattr(model_args, "teacher_torch_dtype", None):
            dtype = model_args.teacher_torch_dtype
    auto_cls = getattr(transformers, adapter.auto_model_class)
    kwargs: dict[str, Any] = dict(hub_kwargs(model_args))
    kwargs["dtype"] = resolve_dtype(dtype)
    kwargs["attn_implementation"] = resolve_attn_implementation(getattr(model_args, "attn_implementation", "sdpa"))
    try:
        model = auto_cls.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load model {name_or_path!r} ({adapter.auto_model_class}): {err}") from None
    if is_teacher:
        freeze_model(model)
    elif gradient_checkpointing:
        enable_checkpointing(model)
    return model


def freeze_model(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return disable_dropout(model)  # eval mode already; also if a wrapper ever puts it back in train mode


def load_student(model_args: Any, finetuning_args: Any = None, training_args: Any = None
                 ) -> tuple[nn.Module, ModelAdapter]:
    """Student model (finetuning applied: full/freeze/LoRA, gradient checkpointing) and its adapter."""
    if not getattr(model_args, "model_name_or_path", None):
        raise ConfigError("model_name_or_path is required (the student)")
    adapter = load_adapter(model_args.model_name_or_path, model_args)
    gc = bool(getattr(training_args, "gradient_checkpointing", False))
    model = load_model(model_args.model_name_or_path, model_args, adapter=adapter, gradient_checkpointing=gc)
    if finetuning_args is not None:
        model = apply_finetuning(model, adapter, finetuning_args, model_args=model_args,
                                 training_args=training_args)
    return model, adapter


def load_teacher(model_args: Any) -> tuple[nn.Module, ModelAdapter]:
    """Frozen teacher (own dtype: `teacher_torch_dtype`, default `torch_dtype`) and its adapter."""
    path = getattr(model_args, "teacher_model_name_or_path", None)
    if not path:
        raise ConfigError("teacher_model_name_or_path is required")
    adapter = load_adapter(path, model_args)
    model = load_model(path, model_args, adapter=adapter, role="teacher")
    return model, adapter
