"""Sampling responses with `model.generate`: our generation config, padded-vocab masking, stop-token cuts and the
log-probabilities of the sampled tokens.

Plain functions of plain values (a model, a batch ready for it, a `GenerationConfig`, token ids): the adapter
(`ModelAdapter.generate_with_logprobs`) prepares the family's model inputs and ids and calls in; nothing here calls
back into the adapter. Generation runs on a `collate_prompts` batch (left padded, see `batching`).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

import torch
from torch import nn
from transformers import GenerationConfig, LogitsProcessorList

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


def generate_call_kwargs(generation_config: Any, logit_width: int, vocab_size: int,
                         extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """`generate` arguments: `generation_config` (ours alone, see `build_generation_config`), the caller's
    `logits_processor` / `stopping_criteria` (`extra`), and a mask over logit rows beyond the tokenizer."""
    call: dict[str, Any] = dict(extra or {})
    call["generation_config"] = generation_config
    if logit_width > vocab_size:
        # logit rows beyond the tokenizer are padding: never sample them
        procs = LogitsProcessorList(call.pop("logits_processor", None) or [])
        procs.append(MaskPaddedVocab(vocab_size))
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
def generate_with_logprobs(model: nn.Module, base: nn.Module, batch: dict[str, torch.Tensor], generation_config: Any,
                           *, stop_ids: Iterable[int], vocab_size: int, return_logprobs: bool = True,
                           extra: Optional[dict[str, Any]] = None
                           ) -> tuple[list[list[int]], Optional[list[list[float]]]]:
    """Sample from `model` (`base`: the transformers model under its wrappers) on `batch` (already the model's
    inputs: on its device, multimodal tensors included) with `generation_config`; each response cut after its
    first stop token. With `return_logprobs` the config must ask for `return_dict_in_generate` and `output_logits`;
    the log-probabilities are those of the raw logits seen while sampling. `extra`: `logits_processor` /
    `stopping_criteria` passed on to `generate`."""
    kw = generate_call_kwargs(generation_config, base.get_output_embeddings().weight.shape[0], vocab_size, extra)
    was_training = model.training
    model.eval()  # sample from the policy without dropout; also lets gradient-checkpointed models use the cache
    # transformers fills every field our config leaves unset from `model.generation_config` (the checkpoint's
    # file): for the duration of the call, the model's own config is ours too
    saved = getattr(base, "generation_config", None)
    base.generation_config = kw["generation_config"]
    try:
        out = base.generate(**batch, **kw) if _needs_unwrap_for_generate(model) else model.generate(**batch, **kw)
    finally:
        base.generation_config = saved
        model.train(was_training)
    sequences = out.sequences if return_logprobs else out
    plen = batch["input_ids"].shape[1]
    responses = cut_responses(sequences[:, plen:].cpu(), stop_ids)
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
