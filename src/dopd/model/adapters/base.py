"""`ModelAdapter`: everything model-family-specific, behind one interface (see docs/architecture.md).

An adapter wraps a tokenizer (text families) or a processor (VLM families) and knows how to
- render a `PromptView` with the checkpoint's own chat template and turn it into token ids + multimodal tensors,
- batch prompts for `generate` (left padding) and prompt+response pairs for teacher-forced scoring (right padding),
- run the model (`generate`, `forward_logits`, `forward_hidden`) with the extra inputs the family needs.
It holds no model weights and no loss code.

Padding choices (why):
- generation: left padding, so that every row's next token is at the last column. `generate` derives positions
  from the attention mask (`cumsum - 1`), and the Qwen-VL multimodal RoPE index ignores masked tokens.
- scoring: right padding. Every prompt then starts at position 0 with no explicit `position_ids`, so the text
  models' default positions equal the ones used at generation time, and pads (after the response) cannot
  influence earlier tokens under the causal mask. `labels != -100` selects, row by row and in order, exactly the
  response tokens, so the same mask shape works for the plain and the privileged views of one rollout.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"
IGNORE_INDEX = -100


@dataclass
class EncodedPrompt:
    """One rendered, tokenised prompt view.

    `input_ids`: token ids with image placeholders already expanded to the model's vision tokens.
    `mm_inputs`: multimodal tensors for this prompt alone (e.g. `pixel_values` [patches, D], `image_grid_thw`
    [n_images, 3]); empty for text. `truncated`: the prompt exceeded `cutoff_len` (see `encode_prompt`).
    """

    input_ids: list[int]
    mm_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def split_image_placeholders(text: str) -> list[dict[str, str]]:
    """'a <image> b' -> [{'type': 'text', 'text': 'a '}, {'type': 'image'}, {'type': 'text', 'text': ' b'}]."""
    parts: list[dict[str, str]] = []
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i > 0:
            parts.append({"type": "image"})
        if chunk:
            parts.append({"type": "text", "text": chunk})
    return parts


def count_images(messages: Sequence[dict[str, Any]]) -> int:
    return sum(str(m.get("content", "")).count(IMAGE_PLACEHOLDER) for m in messages)


class ModelAdapter:
    """Base class; subclasses are registered per `config.model_type` with `@register_adapter`."""

    #: registry key(s) are given to `register_adapter`; `family` is a readable name
    family: ClassVar[str] = "text"
    is_vlm: ClassVar[bool] = False
    #: key of `dopd.data.grounding.CONVENTIONS`: how box coordinates are written for this family
    grounding: ClassVar[str] = "plain"
    #: the `transformers` auto class used to load the model
    auto_model_class: ClassVar[str] = "AutoModelForCausalLM"
    #: module name prefixes (in the unwrapped HF model) of the vision tower and the vision-language projector
    vision_module_names: ClassVar[tuple[str, ...]] = ()
    projector_module_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name_or_path: str, config: Any, tokenizer: Any, processor: Any = None,
                 model_args: Any = None) -> None:
        self.name_or_path = name_or_path
        self.config = config
        self.tokenizer = tokenizer
        self.processor = processor
        self.model_args = model_args
        if self.tokenizer.pad_token_id is None:
            # generation and batching need a pad id; it never reaches the loss (masked out)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name_or_path: str, config: Any, model_args: Any = None) -> "ModelAdapter":
        raise NotImplementedError

    # ------------------------------------------------------------------ properties
    @property
    def model_type(self) -> str:
        return self.config.model_type

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer can produce (the model's logit width may be larger: padded)."""
        return len(self.tokenizer)

    @property
    def suppressed_token_ids(self) -> list[int]:
        """Tokens an answer must never contain (a VLM's image/video markers: sampled into a response they would
        make the multimodal position code look for an image that is not there)."""
        return []

    @property
    def stop_token_ids(self) -> list[int]:
        """eos plus the chat template's end-of-turn token (`<|im_end|>`, `<|eot_id|>`, ...), in that order."""
        cached = getattr(self, "_stop_ids", None)
        if cached is not None:
            return list(cached)
        ids: list[int] = []
        candidates: list[Any] = [self.tokenizer.eos_token_id]
        gen_eos = getattr(getattr(self, "generation_config", None), "eos_token_id", None)
        candidates += gen_eos if isinstance(gen_eos, list) else [gen_eos]
        for tok in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tok in self.tokenizer.get_vocab():
                candidates.append(tid)
        for tid in candidates:
            if tid is not None and int(tid) not in ids:
                ids.append(int(tid))
        self._stop_ids = ids
        return list(ids)

    @property
    def end_of_turn_id(self) -> int:
        """The stop token the chat template closes an assistant turn with (`<|im_end|>` for ChatML)."""
        if getattr(self, "_end_of_turn_id", None) is None:
            stops = self.stop_token_ids
            found = None
            try:
                holder = self.processor if self.processor is not None else self.tokenizer
                text = holder.apply_chat_template(
                    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "DOPD_PROBE"}],
                    tokenize=False, add_generation_prompt=False, **self.template_kwargs)
                suffix = text.split("DOPD_PROBE", 1)[1]
                ids = self.tokenizer(suffix, add_special_tokens=False)["input_ids"]
                found = next((int(t) for t in ids if int(t) in stops), None)
            except Exception:  # templates that refuse this probe: fall back to eos
                found = None
            self._end_of_turn_id = found if found is not None else stops[0]
        return int(self._end_of_turn_id)

    def encode_response(self, text: str) -> list[int]:
        """A reference answer as response token ids: its text tokens + the end-of-turn token, i.e. exactly the
        tokens the model should generate after the generation prompt (used for SFT and reference scoring)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return [int(t) for t in ids] + [self.end_of_turn_id]

    @property
    def chat_template(self) -> Optional[str]:
        holder = self.processor if self.processor is not None else self.tokenizer
        return getattr(holder, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)

    # ------------------------------------------------------------------ VisionSpec (text default)
    min_image_size: int = 0

    def load_image(self, path: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} ({self.name_or_path}) is a text model: no images")

    # ------------------------------------------------------------------ rendering
    def to_template_messages(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Our message dicts -> what the chat template expects (text families: unchanged strings)."""
        return [{"role": m["role"], "content": m["content"]} for m in messages]

    @property
    def template_kwargs(self) -> dict[str, Any]:
        """Variables every chat-template render gets (`chat_template_kwargs`, `enable_thinking`): the plain and
        privileged views, the teacher's view, length estimates while truncating, the end-of-turn probe and eval
        all render through `render` / this, so a non-thinking Qwen3 run is non-thinking everywhere."""
        fn = getattr(self.model_args, "template_kwargs", None)
        return dict(fn()) if callable(fn) else {}

    def render(self, messages: Sequence[dict[str, Any]]) -> str:
        """The prompt text, exactly as the checkpoint's chat template renders it, generation prompt added."""
        holder = self.processor if self.processor is not None else self.tokenizer
        return holder.apply_chat_template(self.to_template_messages(messages), tokenize=False,
                                          add_generation_prompt=True, **self.template_kwargs)

    def _tokenize_rendered(self, text: str, images: Sequence[Any]) -> tuple[list[int], dict[str, torch.Tensor]]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return list(ids), {}

    def _length_estimate(self, messages: Sequence[dict[str, Any]], image_tokens: Sequence[int]) -> int:
        """Token count of the prompt without running the image processor (used while truncating)."""
        text = self.render(messages)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _image_token_counts(self, images: Sequence[Any]) -> list[int]:
        return [0] * len(images)

    # ------------------------------------------------------------------ encode_prompt
    def encode_prompt(self, view: Any, cutoff_len: Optional[int] = None) -> EncodedPrompt:
        """Render and tokenise one prompt view (`.messages`, `.images`), applying `cutoff_len`.

        Truncation rule (prompts longer than `cutoff_len` tokens), each step only if still too long:
        1. drop the earliest non-system turns (with their images), one at a time, keeping the system message(s)
           and the last turn;
        2. cut text from the left of the last turn's text segments (image placeholders are kept whole, so a cut
           never goes through image tokens);
        3. if the images alone exceed the budget: keep every image block whole and return an over-long prompt.
        `truncated` is True whenever any of these happened. Untruncated prompts are exactly what the
        checkpoint's chat template + processor produce at inference.
        """
        messages = [dict(m) for m in view.messages]
        images = list(getattr(view, "images", None) or [])
        messages, images = self._prepare_messages(messages, images)
        truncated = False
        if cutoff_len is not None and cutoff_len > 0:
            messages, images, truncated = self._truncate(messages, images, cutoff_len)
        ids, mm = self._tokenize_rendered(self.render(messages), images)
        if cutoff_len and len(ids) > cutoff_len:
            truncated = True
        return EncodedPrompt(input_ids=ids, mm_inputs=mm, truncated=truncated)

    def _prepare_messages(self, messages: list[dict[str, Any]], images: list[Any]
                          ) -> tuple[list[dict[str, Any]], list[Any]]:
        """Text families: drop `<image>` placeholders and images (a text-only teacher reads only the text)."""
        n = count_images(messages)
        if n or images:
            if "drop_images" not in self._warned:
                logger.warning("%s is a text model: dropping %d image placeholder(s) from its prompts",
                               self.name_or_path, n)
                self._warned.add("drop_images")
            for m in messages:
                m["content"] = str(m["content"]).replace(IMAGE_PLACEHOLDER, "")
        return messages, []

    def _truncate(self, messages: list[dict[str, Any]], images: list[Any], cutoff_len: int
                  ) -> tuple[list[dict[str, Any]], list[Any], bool]:
        image_tokens = self._image_token_counts(images)
        per_msg = [str(m["content"]).count(IMAGE_PLACEHOLDER) for m in messages]

        def length(msgs: list[dict[str, Any]], counts: list[int]) -> int:
            return self._length_estimate(msgs, counts)

        if length(messages, image_tokens) <= cutoff_len:
            return messages, images, False
        # 1. drop the earliest non-system turns, keeping the last message
        msgs, imgs, toks, pm = list(messages), list(images), list(image_tokens), list(per_msg)
        while True:
            first = next((i for i, m in enumerate(msgs[:-1]) if m["role"] != "system"), None)
            if first is None:
                break
            start = sum(pm[:first])
            del imgs[start:start + pm[first]], toks[start:start + pm[first]]
            del msgs[first], pm[first]
            if length(msgs, toks) <= cutoff_len:
                return msgs, imgs, True
        # 2. cut text from the left of the last message, never through an image placeholder
        last = msgs[-1]
        content = str(last["content"])
        segments = content.split(IMAGE_PLACEHOLDER)
        text_total = sum(len(s) for s in segments)

        def cut(n_chars: int) -> str:
            out, left = [], n_chars
            for seg in segments:
                drop = min(left, len(seg))
                out.append(seg[drop:])
                left -= drop
            return IMAGE_PLACEHOLDER.join(out)

        def with_last(text: str) -> list[dict[str, Any]]:
            return msgs[:-1] + [{**last, "content": text}]

        if length(with_last(cut(text_total)), toks) > cutoff_len:
            # 3. the images (and the template) alone are over budget: keep images whole, drop all text
            return with_last(cut(text_total)), imgs, True
        lo, hi = 0, text_total  # smallest cut that fits: binary search on characters
        while lo < hi:
            mid = (lo + hi) // 2
            if length(with_last(cut(mid)), toks) <= cutoff_len:
                hi = mid
            else:
                lo = mid + 1
        return with_last(cut(lo)), imgs, True

    # ------------------------------------------------------------------ batching
    def _mm_token_type_ids(self, input_ids: torch.Tensor) -> Optional[torch.Tensor]:
        return None

    def _collate_mm(self, prompts: Sequence[EncodedPrompt]) -> dict[str, torch.Tensor]:
        keys: list[str] = []
        for p in prompts:
            keys += [k for k in p.mm_inputs if k not in keys]
        out: dict[str, torch.Tensor] = {}
        for key in keys:
            parts = [p.mm_inputs[key] for p in prompts if key in p.mm_inputs]
            out[key] = torch.cat(parts, dim=0)
        return out

    def _pad(self, rows: Sequence[Sequence[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            n = len(row)
            if n == 0:
                continue
            sl = slice(width - n, width) if side == "left" else slice(0, n)
            ids[b, sl] = torch.tensor(list(row), dtype=torch.long)
            mask[b, sl] = 1
        return ids, mask

    def _batch(self, rows: Sequence[Sequence[int]], prompts: Sequence[EncodedPrompt], side: str
               ) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = self._pad(rows, side)
        batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        batch.update(self._collate_mm(prompts))
        mm_types = self._mm_token_type_ids(input_ids)
        if mm_types is not None:
            batch["mm_token_type_ids"] = mm_types * attention_mask
        return batch

    def collate_prompts(self, prompts: Sequence[EncodedPrompt]) -> dict[str, torch.Tensor]:
        """Left-padded batch for `generate`: input_ids, attention_mask and the family's multimodal tensors."""
        return self._batch([p.input_ids for p in prompts], prompts, side="left")

    def build_scoring_batch(self, prompts: Sequence[EncodedPrompt], responses: Sequence[Sequence[int]]
                            ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Right-padded prompt+response batch and `labels` with `logits[:, t]` predicting `labels[:, t]`.

        labels[b, t] = input_ids[b, t + 1] where t + 1 is a response position, -100 elsewhere. `prompts` and
        `responses` pair up row by row (repeat a prompt for each of its G responses).
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        rows = [list(p.input_ids) + [int(t) for t in r] for p, r in zip(prompts, responses)]
        batch = self._batch(rows, prompts, side="right")
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for b, (p, r) in enumerate(zip(prompts, responses)):
            plen, rlen = len(p.input_ids), len(r)
            if rlen:
                labels[b, plen - 1:plen - 1 + rlen] = torch.tensor([int(t) for t in r], dtype=torch.long)
        return batch, labels

    # ------------------------------------------------------------------ running the model
    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        """The transformers model under peft / DDP / DeepSpeed wrappers (LoRA layers stay inside it)."""
        while True:
            if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP / DeepSpeed engine
                model = model.module
            elif hasattr(model, "get_base_model") and callable(model.get_base_model):  # peft
                model = model.get_base_model()
            else:
                return model

    def _reset_state(self, model: nn.Module) -> None:
        """Qwen-VL models cache `rope_deltas` across calls; a stale value from another batch must not leak."""
        inner = getattr(self.unwrap(model), "model", None)
        if inner is not None and hasattr(inner, "rope_deltas"):
            inner.rope_deltas = None

    def _to_device(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            return batch
        return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    def _cast_pixels(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return batch

    def generation_config_for(self, gen_kwargs: dict[str, Any]) -> Any:
        """A `GenerationConfig` built from our settings alone: the checkpoint's `generation_config.json` contributes
        its eos / pad / bos ids and nothing else (no repetition penalty, top-k, min-p, epsilon cutoff... of its own).

        `gen_kwargs`: max_new_tokens, do_sample, temperature, top_p, top_k (0 or None: off), repetition_penalty,
        plus any other GenerationConfig field given explicitly. Sampling settings not given are neutral
        (temperature 1, top_p 1, no top-k, no penalty), so a sample is a sample of the model's own distribution.
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
        checkpoint = getattr(self, "generation_config", None)
        bos = getattr(checkpoint, "bos_token_id", None)
        if bos is None:
            bos = self.tokenizer.bos_token_id
        settings.setdefault("eos_token_id", self.stop_token_ids)
        settings.setdefault("pad_token_id", self.pad_token_id)
        if bos is not None:
            settings.setdefault("bos_token_id", bos)
        if self.suppressed_token_ids:
            settings["suppress_tokens"] = sorted(set(settings.get("suppress_tokens") or [])
                                                 | set(self.suppressed_token_ids))
        config = GenerationConfig(**settings)
        self._log_generation_settings(config, checkpoint)
        return config

    def _log_generation_settings(self, config: Any, checkpoint: Any) -> None:
        """Once per distinct setting: what generation runs with, and which checkpoint defaults it ignores."""
        shown = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty")
        ours = {k: getattr(config, k, None) for k in shown if getattr(config, k, None) is not None}
        key = "gen:" + repr(sorted(ours.items()))
        if key in self._warned:
            return
        self._warned.add(key)
        ignored = {}
        if checkpoint is not None:
            for k, v in checkpoint.to_diff_dict().items():
                if k in ("eos_token_id", "pad_token_id", "bos_token_id", "transformers_version", "_from_model_config"):
                    continue
                if getattr(config, k, None) != v:
                    ignored[k] = v
        logger.info("%s: generating with %s%s", self.name_or_path,
                    ", ".join(f"{k}={v}" for k, v in ours.items()),
                    f"; ignoring the checkpoint's generation_config.json: "
                    f"{', '.join(f'{k}={v}' for k, v in sorted(ignored.items()))}" if ignored else "")

    def _gen_kwargs(self, model: nn.Module, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        """`generate` arguments: `generation_config` (ours alone, see `generation_config_for`) + logits processors."""
        kw = dict(gen_kwargs)
        call: dict[str, Any] = {}
        for key in ("logits_processor", "stopping_criteria"):
            if key in kw:
                call[key] = kw.pop(key)
        call["generation_config"] = self.generation_config_for(kw)
        width = self.unwrap(model).get_output_embeddings().weight.shape[0]
        if width > self.vocab_size:
            # logit rows beyond the tokenizer are padding: never sample them
            from transformers import LogitsProcessorList

            procs = LogitsProcessorList(call.pop("logits_processor", None) or [])
            procs.append(MaskPaddedVocab(self.vocab_size))
            call["logits_processor"] = procs
        return call

    def _cut_responses(self, new_tokens: torch.Tensor) -> list[list[int]]:
        stops = set(self.stop_token_ids)
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
    def generate(self, model: nn.Module, batch: dict[str, torch.Tensor], **gen_kwargs: Any) -> list[list[int]]:
        """Sample from `model` on a `collate_prompts` batch; one response per row (use
        `num_return_sequences` or repeat prompts for G samples: rows come out prompt-major).

        Each response is cut after its first stop token (kept, so the model learns to stop); pads are stripped.
        """
        responses, _ = self.generate_with_logprobs(model, batch, return_logprobs=False, **gen_kwargs)
        return responses

    @torch.no_grad()
    def generate_with_logprobs(self, model: nn.Module, batch: dict[str, torch.Tensor],
                               return_logprobs: bool = True, **gen_kwargs: Any
                               ) -> tuple[list[list[int]], Optional[list[list[float]]]]:
        """`generate`, plus the log-probability of each kept token under the logits seen while sampling
        (raw logits, before temperature / top-k / top-p processing)."""
        self._reset_state(model)
        batch = self._cast_pixels(model, self._to_device(model, batch))
        gen_kwargs = dict(gen_kwargs)
        if return_logprobs:
            gen_kwargs.update(return_dict_in_generate=True, output_logits=True)
        kw = self._gen_kwargs(model, gen_kwargs)
        was_training = model.training
        model.eval()  # sample from the policy without dropout; also lets gradient-checkpointed models use the cache
        # transformers fills every field our config leaves unset from `model.generation_config` (the checkpoint's
        # file): for the duration of the call, the model's own config is ours too
        base = self.unwrap(model)
        saved = getattr(base, "generation_config", None)
        base.generation_config = kw["generation_config"]
        try:
            out = base.generate(**batch, **kw) if _needs_unwrap_for_generate(model) else model.generate(**batch, **kw)
        finally:
            base.generation_config = saved
            model.train(was_training)
            self._reset_state(model)
        sequences = out.sequences if return_logprobs else out
        plen = batch["input_ids"].shape[1]
        responses = self._cut_responses(sequences[:, plen:].cpu())
        if not return_logprobs:
            return responses, None
        logps: list[list[float]] = []
        steps = torch.stack([lg.float() for lg in out.logits], dim=1).log_softmax(-1)  # [B*n, steps, V]
        for b, resp in enumerate(responses):
            idx = torch.tensor(resp, dtype=torch.long, device=steps.device)
            logps.append(steps[b, torch.arange(len(resp), device=steps.device), idx].tolist())
        return responses, logps

    def forward_logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits [B, T, V_model] (V_model may exceed `vocab_size`: slice `[..., :adapter.vocab_size]`)."""
        self._reset_state(model)
        batch = self._cast_pixels(model, self._to_device(model, batch))
        return model(**batch, use_cache=False).logits

    def language_model(self, model: nn.Module) -> nn.Module:
        """The decoder stack that returns `last_hidden_state` (before the final projection)."""
        return self.unwrap(model).model

    def forward_hidden(self, model: nn.Module, batch: dict[str, torch.Tensor]
                       ) -> tuple[torch.Tensor, nn.Module]:
        """(last hidden state [B, T, H] after the final norm, lm_head) without materialising full logits.

        `lm_head(hidden)` equals `forward_logits(model, batch)`; the loss applies it per chunk of tokens.
        """
        self._reset_state(model)
        batch = self._cast_pixels(model, self._to_device(model, batch))
        base = self.unwrap(model)
        out = base.model(**batch, use_cache=False)
        return out.last_hidden_state, base.get_output_embeddings()

    # ------------------------------------------------------------------ finetuning helpers
    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        """The language model's transformer blocks, in order."""
        lm = self.unwrap(model).model
        lm = getattr(lm, "language_model", lm)
        return lm.layers

    def language_model_prefix(self, model: nn.Module) -> str:
        """Qualified module name (in the unwrapped model) of the language model's block container."""
        base = self.unwrap(model)
        layers = self.decoder_layers(model)
        for name, module in base.named_modules():
            if module is layers:
                return name.rsplit(".", 1)[0] if "." in name else ""
        raise RuntimeError("decoder layers not found in the model")

    def default_lora_targets(self, model: nn.Module) -> list[str]:
        """Leaf names of the linear layers inside the language model's blocks (e.g. q_proj ... down_proj)."""
        names: list[str] = []
        for name, module in self.decoder_layers(model).named_modules():
            if isinstance(module, nn.Linear) or type(module).__name__ in ("Linear8bitLt", "Linear4bit"):
                leaf = name.rsplit(".", 1)[-1]
                if leaf not in names:
                    names.append(leaf)
        return names

    def lora_target_regex(self, model: nn.Module, leaves: Sequence[str]) -> str:
        """A peft `target_modules` regex matching `leaves` inside the language model's blocks only
        (VLM vision towers reuse names such as `qkv`, `proj`, `gate_proj`)."""
        prefix = self.language_model_prefix(model)
        head = re.escape(prefix) + r"\." if prefix else ""
        alts = "|".join(re.escape(x) for x in leaves)
        return rf"^(?:.*\.)?{head}layers\.\d+\.(?:.*\.)?(?:{alts})$"


class MaskPaddedVocab:
    """Logits processor: -inf at ids >= the tokenizer size (rows a checkpoint pads its embedding matrix with)."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = scores.clone()  # not in place: generate's `output_logits` must stay the raw logits
        out[..., self.vocab_size:] = float("-inf")
        return out


def _needs_unwrap_for_generate(model: nn.Module) -> bool:
    """DDP / DeepSpeed engines have no `generate`; peft models do (and route it through the adapter)."""
    return not hasattr(model, "generate")
