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
    """Every sampling setting of the rollout, explicitly: the adapter builds the GenerationConfig from these alone
    (the checkpoint's generation_config.json contributes only its eos / pad / bos ids)."""
    greedy = rollout_args.temperature <= 0
    kwargs: dict[str, Any] = {"max_new_tokens": rollout_args.max_new_tokens, "do_sample": not greedy,
                              "repetition_penalty": float(rollout_args.repetition_penalty)}
    if not greedy:
        kwargs.update(temperature=float(rollout_args.temperature), top_p=float(rollout_args.top_p),
                      top_k=int(rollout_args.top_k or 0))
    return kwargs


def check_sampling_matches_loss(loss_config: Any, rollout_args: Any) -> None:
    """Refuse, before anything loads, rollout settings under which `sampled_rkl` is not the reverse-KL gradient.

    `sampled_rkl` (vanilla_opd, or any routing table using it) estimates KL(s || t) from the sampled token alone,
    which is unbiased only when the answers are samples of s itself at the loss temperature: rollout temperature ==
    distill_temperature, no top-p / top-k truncation, no repetition penalty. We refuse rather than reweight (an
    importance weight s_T(y) / s_rollout(y) per token would be exact but high-variance under truncation, where it
    is undefined for the truncated tokens). The full-distribution divergences (js, rkl, fkl and their top-K forms)
    do not depend on which token was sampled, so they accept any rollout settings.
    """
    from dopd.hparams import ConfigError

    if loss_config is None:
        return
    uses = sorted({regime for regime, terms in loss_config.routing_table.items()
                   for term in terms if term.divergence == "sampled_rkl"})
    if not uses:
        return
    problems = []
    if rollout_args.temperature <= 0:
        problems.append("temperature=0 (greedy answers are not samples)")
    elif abs(float(rollout_args.temperature) - float(loss_config.temperature)) > 1e-9:
        problems.append(f"temperature={rollout_args.temperature} != distill_temperature={loss_config.temperature}")
    if rollout_args.top_p < 1.0:
        problems.append(f"top_p={rollout_args.top_p} (must be 1.0)")
    if rollout_args.top_k and rollout_args.top_k > 0:
        problems.append(f"top_k={rollout_args.top_k} (must be 0)")
    if rollout_args.repetition_penalty != 1.0:
        problems.append(f"repetition_penalty={rollout_args.repetition_penalty} (must be 1.0)")
    if problems:
        raise ConfigError(
            f"the loss uses `sampled_rkl` (regimes {', '.join(uses)}), which is the reverse-KL gradient only for "
            f"answers sampled from the student at the loss temperature with no truncation; the rollout has "
            f"{'; '.join(problems)}. Set temperature equal to distill_temperature, top_p=1.0, top_k=0, "
            "repetition_penalty=1.0, or use a full-distribution divergence (e.g. stage vanilla_opd_full_rkl)")


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
