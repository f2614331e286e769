"""On-policy rollout: the current student samples G answers per prompt from the plain view x (no gradient)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from dopd.hparams import ConfigError


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
    if loss_config is None:
        return
    uses = sorted({regime for regime, terms in loss_config.table.items()
                   for term in terms if term.divergence == "sampled_rkl"})
    if not uses:
        return
    problems = []
    if rollout_args.temperature <= 0:
        problems.append("temperature=0 (greedy answers are not samples)")
    elif abs(float(rollout_args.temperature) - float(loss_config.distill_temperature)) > 1e-9:
        problems.append(f"temperature={rollout_args.temperature} != "
                        f"distill_temperature={loss_config.distill_temperature}")
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


# ---------------------------------------------------------------------------------------------- rollout engines
@dataclass
class EngineOutput:
    responses: list[list[int]]  # one per (prompt, answer), prompt-major: prompt i's G answers at i*G .. i*G+G-1
    calls: int  # generate calls made (rollout/sequences_per_generate = answers / calls)


class RolloutEngine:
    """What samples the on-policy answers for the trainer; HF `generate` today (`HFRolloutEngine`), and the seam a
    vLLM or SGLang backend would implement (see docs/architecture.md).

    Contract:
    - `update_weights(model)`: called by the trainer before every rollout, with the trainer's model (possibly
      wrapped by DeepSpeed / peft). An engine that samples from the trainer's own modules does nothing; an engine
      holding its own copy of the weights must load the current ones here (gathered under ZeRO-3, LoRA merged):
      the answers must be samples of the current student, or the objective is no longer on-policy.
    - `generate(model, prompts, num_generations, rollout_args) -> EngineOutput`: `prompts` are `EncodedPrompt`s of the
      plain view x (token ids with the family's image tokens expanded, plus `mm_inputs`); each gets
      `num_generations` answers, sampled with exactly `generation_kwargs(rollout_args)` (temperature, top-p/k,
      repetition penalty, max_new_tokens), stopping at the adapter's `stop_token_ids` (kept as the last token) and
      never emitting `adapter.suppressed_token_ids` or ids >= `adapter.vocab_size`. Token ids, not text: the three
      scorings must see the very ids that were sampled. `rollout_args.rollout_batch_size` bounds the sequences per
      underlying call (0: as many as the engine likes).
    - Every rank calls it the same number of times per step (collectives such as ZeRO-3 gathers may run inside).
    """

    name = "base"

    def update_weights(self, model: torch.nn.Module) -> None:
        return None

    def generate(self, model: torch.nn.Module, prompts: Sequence[Any], num_generations: int,
                 rollout_args: Any) -> EngineOutput:
        raise NotImplementedError


def per_call_sequences(num_prompts: int, num_generations: int, rollout_batch_size: int) -> int:
    """Sequences per generate call: all of them, or `rollout_batch_size` rounded down to whole prompts (>= 1)."""
    total = num_prompts * num_generations
    if 0 < rollout_batch_size < total:
        return max(1, rollout_batch_size // num_generations) * num_generations
    return total


class HFRolloutEngine(RolloutEngine):
    """transformers `generate` on the trainer's own student (eval mode, KV cache; under ZeRO-3 every parameter
    gathered once for the whole rollout): prompts repeated G times, left-padded, `rollout_batch_size` sequences per
    call. Measured alternatives (docs/benchmarks.md): `num_return_sequences` (transformers repeats the prompts
    before the prefill too: no shared prefill), a static KV cache and `torch.compile`."""

    name = "hf"

    def __init__(self, adapter: Any, accelerator: Any, device: torch.device) -> None:
        self.adapter, self.accelerator, self.device = adapter, accelerator, device

    def generate(self, model: torch.nn.Module, prompts: Sequence[Any], num_generations: int,
                 rollout_args: Any) -> EngineOutput:
        rows = repeat_each(list(prompts), num_generations)
        per_call = per_call_sequences(len(prompts), num_generations,
                                      int(getattr(rollout_args, "rollout_batch_size", 0) or 0))
        responses: list[list[int]] = []
        calls = 0
        with model_for_generation(model, self.accelerator) as student:
            for start in range(0, len(rows), per_call):
                batch = self.adapter.collate_prompts(rows[start:start + per_call])
                batch = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
                responses += self.adapter.generate(student, batch, **generation_kwargs(rollout_args))
                calls += 1
        return EngineOutput(responses=responses, calls=calls)


ROLLOUT_ENGINES: dict[str, type] = {"hf": HFRolloutEngine}


def register_rollout_engine(name: str, cls: type) -> None:
    """Make `rollout_engine: <name>` build `cls(adapter, accelerator, device)` (a `RolloutEngine`)."""
    ROLLOUT_ENGINES[name] = cls


def build_rollout_engine(name: str, adapter: Any, accelerator: Any, device: torch.device) -> RolloutEngine:
    if name not in ROLLOUT_ENGINES:
        raise ValueError(f"rollout_engine must be one of {sorted(ROLLOUT_ENGINES)}, got {name!r}")
    return ROLLOUT_ENGINES[name](adapter, accelerator, device)
