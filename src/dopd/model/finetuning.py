"""Which student parameters train: full | freeze (last N LM layers) | lora (peft), plus gradient checkpointing."""

from __future__ import annotations

import logging
from typing import Any, Optional

from torch import nn

from dopd.hparams import ConfigError

from .adapters.base import ModelAdapter

logger = logging.getLogger(__name__)


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _freeze_vision(model: nn.Module, adapter: ModelAdapter, finetuning_args: Any) -> None:
    """VLMs: vision tower / projector trainability from freeze_vision_tower / freeze_multi_modal_projector."""
    if not adapter.is_vlm:
        return
    freeze_tower = bool(getattr(finetuning_args, "freeze_vision_tower", True))
    freeze_proj = bool(getattr(finetuning_args, "freeze_multi_modal_projector", True))
    for name, param in model.named_parameters():
        if _under(name, adapter.projector_module_names):
            param.requires_grad_(not freeze_proj)
        elif _under(name, adapter.vision_module_names):
            param.requires_grad_(not freeze_tower)


def _apply_freeze(model: nn.Module, adapter: ModelAdapter, finetuning_args: Any) -> None:
    """Train only the last N (N > 0) or first |N| (N < 0) language-model blocks; VLM vision parts per flags."""
    n = int(getattr(finetuning_args, "freeze_trainable_layers", 2))
    layers = adapter.decoder_layers(model)
    if n == 0 or abs(n) > len(layers):
        raise ConfigError(f"freeze_trainable_layers={n}: the model has {len(layers)} language-model layers; "
                          f"use 1..{len(layers)} (last N) or -1..-{len(layers)} (first N)")
    chosen = list(layers)[-n:] if n > 0 else list(layers)[:-n]
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in chosen:
        for p in layer.parameters():
            p.requires_grad_(True)
    if adapter.is_vlm:
        freeze_tower = bool(getattr(finetuning_args, "freeze_vision_tower", True))
        freeze_proj = bool(getattr(finetuning_args, "freeze_multi_modal_projector", True))
        for name, param in model.named_parameters():
            if _under(name, adapter.projector_module_names):
                if not freeze_proj:
                    param.requires_grad_(True)
            elif _under(name, adapter.vision_module_names) and not freeze_tower:
                param.requires_grad_(True)


def lora_target_modules(model: nn.Module, adapter: ModelAdapter, lora_target: str) -> str:
    """peft `target_modules` regex: `all` = every linear layer in the LM blocks, or a comma list of leaf names;
    always restricted to the language model (vision towers reuse names such as `qkv`, `gate_proj`)."""
    spec = (lora_target or "all").strip()
    if spec.lower() == "all":
        leaves = adapter.default_lora_targets(model)
    else:
        leaves = [x.strip() for x in spec.split(",") if x.strip()]
        known = set(adapter.default_lora_targets(model))
        unknown = [x for x in leaves if x not in known]
        if unknown:
            raise ConfigError(f"lora_target: {', '.join(unknown)} not found among the language model's linear "
                              f"layers ({', '.join(sorted(known))})")
    return adapter.lora_target_regex(model, leaves)


def _apply_lora(model: nn.Module, adapter: ModelAdapter, finetuning_args: Any, model_args: Any,
                gradient_checkpointing: bool) -> nn.Module:
    from peft import LoraConfig, PeftModel, get_peft_model

    adapter_path: Optional[str] = getattr(model_args, "adapter_name_or_path", None) if model_args else None
    if gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    if adapter_path:
        logger.info("resuming LoRA adapter from %s", adapter_path)
        return PeftModel.from_pretrained(model, adapter_path, is_trainable=True)
    rank = int(finetuning_args.lora_rank)
    alpha = finetuning_args.lora_alpha if finetuning_args.lora_alpha is not None else 2 * rank
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=float(finetuning_args.lora_dropout),
        target_modules=lora_target_modules(model, adapter, finetuning_args.lora_target),
        task_type="CAUSAL_LM", bias="none",
    )
    return get_peft_model(model, config)


def apply_finetuning(model: nn.Module, adapter: ModelAdapter, finetuning_args: Any, model_args: Any = None,
                     training_args: Any = None) -> nn.Module:
    """Set `requires_grad` per `finetuning_type` (and wrap with peft for LoRA); enable gradient checkpointing
    when `training_args.gradient_checkpointing`. Returns the model to train (a PeftModel for LoRA)."""
    ftype = str(getattr(finetuning_args, "finetuning_type", "full")).lower()
    gc = bool(getattr(training_args, "gradient_checkpointing", False)) if training_args is not None else False
    already = is_checkpointing(model)
    gc = gc or already
    if gc and not already:
        gc_kwargs = getattr(training_args, "gradient_checkpointing_kwargs", None) or {"use_reentrant": False}
        enable_checkpointing(model, gc_kwargs)
    if ftype == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        _freeze_vision(model, adapter, finetuning_args)
    elif ftype == "freeze":
        _apply_freeze(model, adapter, finetuning_args)
    elif ftype == "lora":
        model = _apply_lora(model, adapter, finetuning_args, model_args, gc)
    else:
        raise ConfigError(f"finetuning_type must be full, freeze or lora, got {ftype!r}")
    if bool(getattr(finetuning_args, "disable_dropout", True)):
        disable_dropout(model)
    if not bool(getattr(finetuning_args, "pure_bf16", False)):
        upcast_trainable_params(model, training_args)
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("finetuning_type=%s: %d / %d parameters trainable (%.2f%%)", ftype, trainable, total,
                100.0 * trainable / max(total, 1))
    return model


def is_checkpointing(model: nn.Module) -> bool:
    """Activation (gradient) checkpointing on? (transformers 5.x renamed the attribute; both are read.)"""
    for attr in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), attr) or attr in getattr(model, "__dict__", {}):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return bool(getattr(model, attr, False))
    return False


def enable_checkpointing(model: nn.Module, kwargs: Optional[dict] = None) -> None:
    """Non-reentrant activation checkpointing (works with frozen inputs, LoRA and ZeRO-3); cache off in training."""
    kwargs = kwargs or {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    return (sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(p.numel() for p in model.parameters()))


def disable_dropout(model: nn.Module) -> nn.Module:
    """Every dropout off (TRL's `disable_dropout_in_model`, plus the attention-probability dropout transformers keeps
    as a float on attention modules and in the config): the student's three scorings and its rollout then all
    see the same deterministic policy (LoRA dropout 0.1 moved log-probs by up to 0.97)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
        config = getattr(module, "config", None)
        for cfg in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None)):
            for attr in ("attention_dropout", "hidden_dropout", "dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop"):
                if isinstance(getattr(cfg, attr, None), float) and getattr(cfg, attr) > 0:
                    setattr(cfg, attr, 0.0)
    return model


def _uses_deepspeed(training_args: Any) -> bool:
    return bool(getattr(training_args, "deepspeed", None)) if training_args is not None else False


def upcast_trainable_params(model: nn.Module, training_args: Any = None) -> Optional[Any]:
    """Trainable parameters loaded in bf16/fp16 are kept in float32 (LLaMA-Factory's `upcast_trainable_params`):
    without DeepSpeed nothing else holds an fp32 master copy, and AdamW updates of lr x ~1 on bf16 weights of size
    ~1e-2 round away below lr ~1e-4. Frozen parameters (the rest of a freeze-tuned model, the vision tower, LoRA's
    base weights) stay in their dtype; the trainer runs the student under autocast to that dtype
    (`model.dopd_compute_dtype`). Cost: 2 more bytes per trainable parameter than bf16 weights (4 instead of 2;
    gradients 4 instead of 2). DeepSpeed keeps its own fp32 master weights: nothing is changed under it. `pure_bf16`
    skips this (LLaMA-Factory's flag of that name): weights, gradients and AdamW states stay in bf16.
    Returns the half dtype the trainable parameters had, or None when nothing was cast."""
    import torch

    if _uses_deepspeed(training_args):
        return None
    half = [p for p in model.parameters() if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)]
    if not half:
        return None
    dtype = half[0].dtype
    for p in half:
        p.data = p.data.float()
    model.dopd_compute_dtype = dtype
    n = sum(p.numel() for p in half)
    logger.info("%d trainable parameters upcast from %s to float32 (master weights; the forward passes run under "
                "%s autocast): +%.2f GB", n, dtype, dtype, 2 * n / 1e9)
    return dtype
