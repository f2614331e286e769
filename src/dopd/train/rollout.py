"""On-policy rollout: the current student samples G answers per prompt from the plain view x (no gradient)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch


@dataclass
class RolloutResult:
    prompts: list  # EncodedPrompt per answer (each prompt repeated G times, grouped)
    responses: list[list[int]]  # sampled token ids, ending with a stop token unless cut by max_new_tokens
    num_tokens: int
    seconds: float


def repeat_each(items: Sequence[Any], times: int) -> list[Any]:
    """[a, b] -> [a, a, b, b] for times=2: answers to one prompt stay adjacent."""
    return [item for item in items for _ in range(times)]


def generation_kwargs(rollout_args: Any) -> dict[str, Any]:
    greedy = rollout_args.temperature <= 0
    kwargs: dict[str, Any] = {"max_new_tokens": rollout_args.max_new_tokens, "do_sample": not greedy}
    if not greedy:
        kwargs.update(temperature=rollout_args.temperature, top_p=rollout_args.top_p, top_k=rollout_args.top_k or None)
    if rollout_args.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = rollout_args.repetition_penalty
    return kwargs


@contextlib.contextmanager
def model_for_generation(model: torch.nn.Module, accelerator: Any) -> Iterator[torch.nn.Module]:
    """The unwrapped student in eval mode (KV cache on, no checkpointing); under ZeRO-3 its parameters are
    gathered once for the whole rollout rather than once per generated token."""
    unwrapped = accelerator.unwrap_model(model)
    was_training = unwrapped.training
    unwrapped.eval()
    gather: contextlib.AbstractContextManager = contextlib.nullcontext()
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None and plugin.zero_stage == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(unwrapped.parameters()), modifier_rank=None)
    try:
        with gather, torch.no_grad():
            yield unwrapped
    finally:
        if was_training:
            unwrapped.train()
