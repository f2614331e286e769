"""Distributed details the trainer needs: where the frozen teacher lives, and CPU (gloo) DeepSpeed runs."""

from __future__ import annotations

import contextlib
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


def gathered_parameters(*modules: Any) -> contextlib.AbstractContextManager:
    """The modules' ZeRO-3-partitioned parameters gathered whole on every rank for the block (read-only: no rank
    modifies them); a no-op for parameters DeepSpeed does not partition.

    The objective runs from hidden states under ZeRO-3 this way: each lm_head is gathered once per loss call and the
    loss reads the full [V, H] weight. A trained head must stay gathered until the backward has run: the loss hands
    its weight gradient (computed in its forward) to autograd there, and autograd accumulates it into the parameter,
    which must then have its full shape; DeepSpeed's per-parameter gradient hook then reduces and partitions it like
    any other gradient. tests/train/test_zero3_objective.py checks loss and gradients against the logits path (the
    head called as a module)."""
    params = [p for m in modules if m is not None for p in m.parameters() if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def use_gloo_for_cpu_deepspeed() -> None:
    """Make multi-process runs work on a machine without CUDA (how the DeepSpeed paths are tested here).

    Under torchrun (LOCAL_RANK set) with no CUDA and no `use_cpu`, accelerate chooses no process-group backend and
    trains as a single process while DeepSpeed counts every rank: the batch-size check fails. We make accelerate's
    backend choice gloo / MULTI_CPU in exactly that case; DeepSpeed then initialises its communication over gloo and
    accelerate switches the state to DEEPSPEED as usual. Nothing changes where CUDA is available.
    """
    if "LOCAL_RANK" not in os.environ or torch.cuda.is_available():
        return
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    original = PartialState._prepare_backend
    if getattr(original, "_dopd_gloo", False):
        return

    def prepare_backend(self: Any, cpu: bool = False, sagemaker_dp: bool = False, backend: Any = None):
        chosen, distributed_type = original(self, cpu, sagemaker_dp, backend)
        if chosen is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return "gloo", DistributedType.MULTI_CPU
        return chosen, distributed_type

    prepare_backend._dopd_gloo = True  # type: ignore[attr-defined]
    PartialState._prepare_backend = prepare_backend


def rank_checksums(model: torch.nn.Module, accelerator: Any) -> list[float]:
    """One float64 checksum of the student's parameters per rank (all-gathered; ZeRO-3 parameters gathered one at a
    time). Replicas that drifted apart (a sync bug, a rank that skipped an update) show different values."""
    unwrapped = accelerator.unwrap_model(model)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    zero3 = plugin is not None and plugin.zero_stage == 3
    total = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for index, param in enumerate(unwrapped.parameters()):
        if zero3:
            import deepspeed

            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                total += _weighted_sum(param.data, index)
        else:
            total += _weighted_sum(param.data, index)
    gathered = accelerator.gather(total.reshape(1))
    return [float(v) for v in gathered.tolist()]


def _weighted_sum(tensor: torch.Tensor, index: int) -> torch.Tensor:
    flat = tensor.detach().double().flatten()
    weights = torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64, device=flat.device)
    return (flat * weights).sum() * (1.0 + 1e-3 * index)

