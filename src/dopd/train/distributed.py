"""Distributed details the trainer needs: where the frozen teacher lives, and CPU (gloo) DeepSpeed runs."""

from __future__ import annotations

import copy
import os
from typing import Any

import torch


def prepare_teacher(teacher: torch.nn.Module, accelerator: Any, device: torch.device) -> torch.nn.Module:
    """ZeRO-3: wrap the frozen teacher in a DeepSpeed engine with the student's ZeRO-3 config (no optimizer), so its
    parameters are partitioned across ranks like the student's rather than whole on every GPU.
    ZeRO-0/1/2 and no DeepSpeed: a replica on this rank's device."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    teacher.eval()
    teacher.requires_grad_(False)
    if plugin is None or plugin.zero_stage != 3:
        return teacher.to(device)
    import deepspeed

    config = copy.deepcopy(plugin.deepspeed_config)
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    zero = config.setdefault("zero_optimization", {})
    zero.pop("offload_optimizer", None)
    config["train_micro_batch_size_per_gpu"] = config.get("train_micro_batch_size_per_gpu", 1)
    config.pop("train_batch_size", None)
    config.pop("gradient_accumulation_steps", None)
    hidden = getattr(getattr(teacher, "config", None), "hidden_size", None)
    if hidden:  # the "auto" values the student's config got from transformers, sized for the teacher
        zero["reduce_bucket_size"] = hidden * hidden
        zero["stage3_param_persistence_threshold"] = 10 * hidden
        zero["stage3_prefetch_bucket_size"] = int(0.9 * hidden * hidden)
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine.module


def use_gloo_for_cpu_deepspeed() -> None:
    """DeepSpeed through transformers' Trainer on a machine without CUDA: accelerate picks no backend unless told.

    Launched by torchrun (LOCAL_RANK set) with no CUDA, initialise torch.distributed with gloo ourselves before the
    TrainingArguments' device setup, so DeepSpeed (ZeRO-2/3 on CPU) and accelerate find a working process group.
    """
    if "LOCAL_RANK" not in os.environ or torch.cuda.is_available():
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    os.environ.setdefault("ACCELERATE_TORCH_DEVICE", "cpu")
