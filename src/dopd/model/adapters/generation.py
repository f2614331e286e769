"""Sampling responses with `model.generate`: our generation config, padded-vocab masking, stop-token cuts and the
log-probabilities of the sampled tokens.

Generation runs on a `collate_prompts` batch (left padded, see `batching`); the adapter supplies the family's
model inputs (`ModelAdapter.model_inputs`) and token ids.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from .base import ModelAdapter

logger = logging.getLogger(__name__)

_SHOWN = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty")
_ID_FIELDS = ("eos_token_id", "pad_token_id", "bos_token_id", "transformers_version", "_from_model_config")


class MaskPaddedVocab:
    """Logits processor: -inf at ids >= the tokenizer size (rows a checkpoint pads its embedding matrix with)."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = scores.clone()  # not in place: generate's `output_logits` must stay the raw logits
        out[..., self.vocab_size:] = float("-inf")
        return out


def build_generation_config(gen_kwargs: dict[str, Any], *, stop_ids: list[int], pad_id: int,
                            bos_id: Optional[int], suppressed: Iterable[int] = ()) -> Any:
    """A `GenerationConfig` from our settings alone plus the given eos (`stop_ids`) / pad / bos ids.

    `gen_kwargs`: max_new_tokens, do_sample, temperature, top_p, top_k (0 or None: off), repetition_penalty,
    plus any other GenerationConfig field given explicitly (ids given there win). Sampling settings not given are
    neutral (temperature 1, top_p 1, no top-k, no penalty), so a sample is a sample of the model's own
    distribution. `suppressed` ids are added to `suppress_tokens`.
    """
    from transformers import GenerationConfig

    kw = dict(gen_kwargs)
    do_sample = bool(kw.pop("do_sample", False))
    settings: dict[str, Any] = {"do_sample": do_sample, "num_beams": 1, "use_cache": kw.pop("use_cache", True)}
    if do_sample:
        settings.update(temperature=float(kw.pop("temperature", None) or 1.0),
                        top_p=float(kw.pop("top_p", None) or 1.0), top_k=int(kw.pop("top_k", None) or 0),
                        typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)
    else:
        for key in ("temperature", "top_p", "top_k"):
            kw.pop(key, None)
    settings["repetition_penalty"] = float(kw.pop("repetition_penalty", None) or 1.0)
    settings.update(kw)
    settings.setdefault("eos_token_id", stop_ids)
    settings.setdefault("pad_token_id", pad_id)
    if bos_id is not None:
        settings.setdefault("bos_token_id", bos_id)
    suppressed = list(suppressed)
    if suppressed:
        settings["suppress_tokens"] = sorted(set(settings.get("suppress_tokens") or []) | set(suppressed))
    return GenerationConfig(**settings)


def log_generation_settings(name: str, config: Any, checkpoint: Any, seen: set[str]) -> None:
    """Once per distinct setting (`seen` remembers): what generation runs with, and which checkpoint defaults
    it ignores."""
    ours = {k: getattr(config, k, None) for k in _SHOWN if getattr(config, k, None) is not None}
    key = "gen:" + repr(sorted(ours.items()))
    if key in seen:
        return
    seen.add(key)
    ignored = {}
    if checkpoint is not None:
        for k, v in checkpoint.to_diff_dict().items():
            if k in _ID_FIELDS:
                continue
            if getattr(config, k, None) != v:
                ignored[k] = v
    logger.info("%s: generating with %s%s", name,
                ", ".join(f"{k}={v}" for k, v in ours.items()),
                f"; ignoring the checkpoint's generation_config.json: "
                f"{', '.join(f'{k}={v}' for k, v in sorted(ignored.items()))}" if ignored else "")


def generate_call_kwargs(adapter: ModelAdapter, model: nn.Module, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
    """`generate` arguments: `generation_config` (ours alone, see `build_generation_config`) + logits processors."""
    kw = dict(gen_kwargs)
    call: dict[str, Any] = {}
    for key in ("logits_processor", "stopping_criteria"):
        if key in kw:
            call[key] = kw.pop(key)
    call["generation_config"] = adapter.generation_config_for(kw)
    width = adapter.unwrap(model).get_output_embeddings().weight.shape[0]
    if width > adapter.vocab_size:
        # logit rows beyond the tokenizer are padding: never sample them
        from transformers import LogitsProcessorList

        procs = LogitsProcessorList(call.pop("logits_processor", None) or [])
        procs.append(MaskPaddedVocab(adapter.vocab_size))
        call["logits_processor"] = procs
    return call


def cut_responses(new_tokens: torch.Tensor, stop_ids: Iterable[int]) -> list[list[int]]:
    """Each row of generated ids [B, steps] up to and including its first stop token (pads after it dropped)."""
    stops = set(stop_ids)
    out: list[list[int]] = []
    for row in new_tokens.tolist():
        resp: list[int] = []
        for tok in row:
            resp.append(int(tok))
            if tok in stops:
                break
        out.append(resp)
    return out


@torch.no_grad()
def generate_with_logprobs(adapter: ModelAdapter, model: nn.Module, batch: dict[str, torch.Tensor],
                           return_logprobs: bool = True, **gen_kwargs: Any
                           ) -> tuple[list[list[int]], Optional[list[list[float]]]]:
    """See `ModelAdapter.generate_with_logprobs`."""
    batch = adapter.model_inputs(model, batch)
    gen_kwargs = dict(gen_kwargs)
    if return_logprobs:
        gen_kwargs.update(return_dict_in_generate=True, output_logits=True)
    kw = generate_call_kwargs(adapter, model, gen_kwargs)
    was_training = model.training
    model.eval()  # sample from the policy without dropout; also lets gradient-checkpointed models use the cache
    # transformers fills every field our config leaves unset from `model.generation_config` (the checkpoint's
    # file): for the duration of the call, the model's own config is ours too
    base = adapter.unwrap(model)
    saved = getattr(base, "generation_config", None)
    base.generation_config = kw["generation_config"]
    try:
        out = base.generate(**batch, **kw) if _needs_unwrap_for_generate(model) else model.generate(**batch, **kw)
    finally:
        base.generation_config = saved
        model.train(was_training)
        adapter.reset_state(model)
    sequences = out.sequences if return_logprobs else out
    plen = batch["input_ids"].shape[1]
    responses = cut_responses(sequences[:, plen:].cpu(), adapter.stop_token_ids)
    if not return_logprobs:
        return responses, None
    logps: list[list[float]] = []
    steps = torch.stack([lg.float() for lg in out.logits], dim=1).log_softmax(-1)  # [B*n, steps, V]
    for b, resp in enumerate(responses):
        idx = torch.tensor(resp, dtype=torch.long, device=steps.device)
        logps.append(steps[b, torch.arange(len(resp), device=steps.device), idx].tolist())
    return responses, logps


def _needs_unwrap_for_generate(model: nn.Module) -> bool:
    """DDP / DeepSpeed engines have no `generate`; peft models do (and route it through the adapter)."""
    return not hasattr(model, "generate")
