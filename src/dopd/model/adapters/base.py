"""`ModelAdapter`: everything model-family-specific, behind one interface (see docs/architecture.md).

An adapter wraps a tokenizer (text families) or a processor (VLM families). It holds no model weights and no loss
code. The work itself lives in small modules, so this class is mostly the hooks a family overrides:
- `prompt`: `EncodedPrompt`, the `<image>` placeholder;
- `truncation`: `truncate_messages`, the `cutoff_len` rule (pure, given a length function);
- `batching`: `collate_prompts` (left padding, generation), `build_scoring_batch` (right padding, the labels
  contract: `labels[b, t]` is the token position t predicts, -100 elsewhere);
- `generation`: the generation config, `generate_with_logprobs`, stop-token cuts;
- `lora_names`: LoRA target names inside the language model's blocks.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Optional, Self, Sequence

import torch
from torch import nn

from . import batching, generation, lora_names
from .prompt import IMAGE_PLACEHOLDER, EncodedPrompt, count_images
from .truncation import truncate_messages

logger = logging.getLogger(__name__)

_END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>")


class ModelAdapter:
    """Base class of the family adapters; the table `config.model_type` -> class is `dopd.model.adapters.ADAPTERS`.

    Hooks a family overrides (everything else is built on them):
    - class attributes `family`, `is_vlm`, `grounding`, `auto_model_class`, `vision_module_names`,
      `projector_module_names`, `min_image_size`;
    - `from_pretrained(name_or_path, config, model_args)`: load the tokenizer / processor, build the adapter;
    - `load_image(path)`: a PIL image as the processor will see it;
    - `suppressed_token_ids`: ids an answer must never contain;
    - `to_template_messages(messages)`: our message dicts -> what the chat template expects;
    - `prepare_messages(messages, images)`: check / load / drop images before rendering;
    - `image_token_counts(images)`: tokens each image expands to (for truncation without the image processor);
    - `prompt_length(messages, image_tokens)`: prompt length in tokens, used while truncating;
    - `tokenize_rendered(text, images)`: rendered text -> (ids, multimodal tensors);
    - `mm_token_type_ids(input_ids)`: the family's token-type tensor for the forward, or None;
    - `cast_pixels(model, batch)`: pixel values in the vision tower's dtype;
    - `language_model(model)` / `decoder_layers(model)`: where the decoder stack and its blocks are.
    """

    #: a readable name; the table keys are `config.model_type` values
    family: ClassVar[str] = "text"
    is_vlm: ClassVar[bool] = False
    #: key of `dopd.data.grounding.CONVENTIONS`: how box coordinates are written for this family
    grounding: ClassVar[str] = "plain"
    #: the `transformers` auto class used to load the model
    auto_model_class: ClassVar[str] = "AutoModelForCausalLM"
    #: module name prefixes (in the unwrapped HF model) of the vision tower and the vision-language projector
    vision_module_names: ClassVar[tuple[str, ...]] = ()
    projector_module_names: ClassVar[tuple[str, ...]] = ()
    #: smallest image side the family accepts (VisionSpec; text default)
    min_image_size: int = 0

    def __init__(self, name_or_path: str, config: Any, tokenizer: Any, processor: Any = None,
                 model_args: Any = None, generation_config: Any = None) -> None:
        self.name_or_path = name_or_path
        self.config = config
        self.tokenizer = tokenizer
        self.processor = processor
        self.model_args = model_args
        #: the checkpoint's `GenerationConfig` (its eos / pad / bos ids are used), None when it ships none
        self.generation_config = generation_config
        if self.tokenizer.pad_token_id is None:
            # generation and batching need a pad id; it never reaches the loss (masked out)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._warned: set[str] = set()
        self._stop_ids: Optional[list[int]] = None  # cached by `stop_token_ids`
        self._end_of_turn_id: Optional[int] = None  # cached by `end_of_turn_id`

    # ------------------------------------------------------------------ hooks: construction and vision
    @classmethod
    def from_pretrained(cls, name_or_path: str, config: Any, model_args: Any = None) -> Self:
        raise NotImplementedError

    def load_image(self, path: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} ({self.name_or_path}) is a text model: no images")

    @property
    def suppressed_token_ids(self) -> list[int]:
        """Tokens an answer must never contain (a VLM's image/video markers: sampled into a response they would
        make the multimodal position code look for an image that is not there)."""
        return []

    # ------------------------------------------------------------------ hooks: rendering and tokenising
    def to_template_messages(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Our message dicts -> what the chat template expects (text families: unchanged strings)."""
        return [{"role": m["role"], "content": m["content"]} for m in messages]

    def prepare_messages(self, messages: list[dict[str, Any]], images: list[Any]
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

    def image_token_counts(self, images: Sequence[Any]) -> list[int]:
        """Tokens each image expands to in the prompt (text families: none)."""
        return [0] * len(images)

    def prompt_length(self, messages: Sequence[dict[str, Any]], image_tokens: Sequence[int]) -> int:
        """Token count of the prompt without running the image processor (used while truncating)."""
        text = self.render(messages)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokenize_rendered(self, text: str, images: Sequence[Any]) -> tuple[list[int], dict[str, torch.Tensor]]:
        """A rendered prompt (and its images) -> token ids and the prompt's multimodal tensors."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return list(ids), {}

    # ------------------------------------------------------------------ hooks: model inputs
    def mm_token_type_ids(self, input_ids: torch.Tensor) -> Optional[torch.Tensor]:
        """`mm_token_type_ids` for the forward (1 image, 2 video), or None when the family takes none."""
        return None

    def cast_pixels(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with pixel values in the vision tower's dtype (text families: unchanged)."""
        return batch

    def language_model(self, model: nn.Module) -> nn.Module:
        """The decoder stack that returns `last_hidden_state` (before the final projection)."""
        return self.unwrap(model).model

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        """The language model's transformer blocks, in order."""
        lm = self.unwrap(model).model
        lm = getattr(lm, "language_model", lm)
        return lm.layers

    # ------------------------------------------------------------------ tokens
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
    def stop_token_ids(self) -> list[int]:
        """eos plus the chat template's end-of-turn token (`<|im_end|>`, `<|eot_id|>`, ...), in that order."""
        if self._stop_ids is None:
            candidates: list[Any] = [self.tokenizer.eos_token_id]
            gen_eos = getattr(self.generation_config, "eos_token_id", None)
            candidates += gen_eos if isinstance(gen_eos, list) else [gen_eos]
            vocab = self.tokenizer.get_vocab()
            for tok in _END_OF_TURN_TOKENS:
                tid = self.tokenizer.convert_tokens_to_ids(tok)
                if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tok in vocab:
                    candidates.append(tid)
            ids: list[int] = []
            for tid in candidates:
                if tid is not None and int(tid) not in ids:
                    ids.append(int(tid))
            self._stop_ids = ids
        return list(self._stop_ids)

    @property
    def end_of_turn_id(self) -> int:
        """The stop token the chat template closes an assistant turn with (`<|im_end|>` for ChatML)."""
        if self._end_of_turn_id is None:
            stops = self.stop_token_ids
            found = None
            try:
                text = self._template_holder.apply_chat_template(
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

    # ------------------------------------------------------------------ rendering and encoding
    @property
    def _template_holder(self) -> Any:
        """The object whose `apply_chat_template` renders: the processor for VLMs, else the tokenizer."""
        return self.processor if self.processor is not None else self.tokenizer

    @property
    def chat_template(self) -> Optional[str]:
        return getattr(self._template_holder, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)

    @property
    def template_kwargs(self) -> dict[str, Any]:
        """Variables every chat-template render gets (`chat_template_kwargs`, `enable_thinking`): the plain and
        privileged views, the teacher's view, length estimates while truncating, the end-of-turn probe and eval
        all render through `render` / this, so a non-thinking Qwen3 run is non-thinking everywhere."""
        fn = getattr(self.model_args, "template_kwargs", None)
        return dict(fn()) if callable(fn) else {}

    def render(self, messages: Sequence[dict[str, Any]]) -> str:
        """The prompt text, exactly as the checkpoint's chat template renders it, generation prompt added."""
        return self._template_holder.apply_chat_template(self.to_template_messages(messages), tokenize=False,
                                                         add_generation_prompt=True, **self.template_kwargs)

    def encode_prompt(self, view: Any, cutoff_len: Optional[int] = None) -> EncodedPrompt:
        """Render and tokenise one prompt view (`.messages`, `.images`), applying `cutoff_len`.

        Prompts longer than `cutoff_len` tokens are cut by `truncation.truncate_messages` (earliest turns first,
        then text from the left of the last turn, never through an image). `truncated` is True whenever that
        happened or the prompt is still over-long. Untruncated prompts are exactly what the checkpoint's chat
        template + processor produce at inference.
        """
        messages = [dict(m) for m in view.messages]
        images = list(getattr(view, "images", None) or [])
        messages, images = self.prepare_messages(messages, images)
        truncated = False
        if cutoff_len is not None and cutoff_len > 0:
            messages, images, truncated = truncate_messages(messages, images, self.image_token_counts(images),
                                                            cutoff_len, self.prompt_length)
        ids, mm = self.tokenize_rendered(self.render(messages), images)
        if cutoff_len and len(ids) > cutoff_len:
            truncated = True
        return EncodedPrompt(input_ids=ids, mm_inputs=mm, truncated=truncated)

    # ------------------------------------------------------------------ batching
    def collate_prompts(self, prompts: Sequence[EncodedPrompt]) -> dict[str, torch.Tensor]:
        """Left-padded batch for `generate`: input_ids, attention_mask and the family's multimodal tensors."""
        return batching.collate_prompts(prompts, self.pad_token_id, self.mm_token_type_ids)

    def build_scoring_batch(self, prompts: Sequence[EncodedPrompt], responses: Sequence[Sequence[int]]
                            ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Right-padded prompt+response batch and `labels` with `logits[:, t]` predicting `labels[:, t]`.

        labels[b, t] = input_ids[b, t + 1] where t + 1 is a response position, -100 elsewhere. `prompts` and
        `responses` pair up row by row (repeat a prompt for each of its G responses).
        """
        return batching.build_scoring_batch(prompts, responses, self.pad_token_id, self.mm_token_type_ids)

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

    def reset_state(self, model: nn.Module) -> None:
        """Qwen-VL models cache `rope_deltas` across calls; a stale value from another batch must not leak."""
        inner = getattr(self.unwrap(model), "model", None)
        if inner is not None and hasattr(inner, "rope_deltas"):
            inner.rope_deltas = None

    def model_inputs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`batch` ready for a call of `model`: cached state reset, tensors on its device, pixels in its dtype."""
        self.reset_state(model)
        return self.cast_pixels(model, _to_device(model, batch))

    def generation_config_for(self, gen_kwargs: dict[str, Any]) -> Any:
        """A `GenerationConfig` built from our settings alone: the checkpoint's `generation_config.json` contributes
        its eos / pad / bos ids and nothing else (no repetition penalty, top-k, min-p, epsilon cutoff... of its own).
        See `generation.build_generation_config` for `gen_kwargs`."""
        checkpoint = self.generation_config
        bos = getattr(checkpoint, "bos_token_id", None)
        if bos is None:
            bos = self.tokenizer.bos_token_id
        config = generation.build_generation_config(gen_kwargs, stop_ids=self.stop_token_ids,
                                                    pad_id=self.pad_token_id, bos_id=bos,
                                                    suppressed=self.suppressed_token_ids)
        generation.log_generation_settings(self.name_or_path, config, checkpoint, self._warned)
        return config

    def generate(self, model: nn.Module, batch: dict[str, torch.Tensor], **gen_kwargs: Any) -> list[list[int]]:
        """Sample from `model` on a `collate_prompts` batch; one response per row (use
        `num_return_sequences` or repeat prompts for G samples: rows come out prompt-major).

        Each response is cut after its first stop token (kept, so the model learns to stop); pads are stripped.
        """
        responses, _ = self.generate_with_logprobs(model, batch, return_logprobs=False, **gen_kwargs)
        return responses

    def generate_with_logprobs(self, model: nn.Module, batch: dict[str, torch.Tensor],
                               return_logprobs: bool = True, **gen_kwargs: Any
                               ) -> tuple[list[list[int]], Optional[list[list[float]]]]:
        """`generate`, plus the log-probability of each kept token under the logits seen while sampling
        (raw logits, before temperature / top-k / top-p processing)."""
        kw = dict(gen_kwargs)
        extra = {key: kw.pop(key) for key in ("logits_processor", "stopping_criteria") if key in kw}
        inputs = self.model_inputs(model, batch)
        if return_logprobs:
            kw.update(return_dict_in_generate=True, output_logits=True)
        try:
            return generation.generate_with_logprobs(
                model, self.unwrap(model), inputs, self.generation_config_for(kw), stop_ids=self.stop_token_ids,
                vocab_size=self.vocab_size, return_logprobs=return_logprobs, extra=extra)
        finally:
            self.reset_state(model)

    def forward_logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits [B, T, V_model] (V_model may exceed `vocab_size`: slice `[..., :adapter.vocab_size]`)."""
        return model(**self.model_inputs(model, batch), use_cache=False).logits

    def forward_hidden(self, model: nn.Module, batch: dict[str, torch.Tensor]
                       ) -> tuple[torch.Tensor, nn.Module]:
        """(last hidden state [B, T, H] after the final norm, lm_head) without materialising full logits.

        `lm_head(hidden)` equals `forward_logits(model, batch)`; the loss applies it per chunk of tokens.
        """
        batch = self.model_inputs(model, batch)
        base = self.unwrap(model)
        out = base.model(**batch, use_cache=False)
        return out.last_hidden_state, base.get_output_embeddings()

    # ------------------------------------------------------------------ LoRA naming
    def language_model_prefix(self, model: nn.Module) -> str:
        """Qualified module name (in the unwrapped model) of the language model's block container."""
        return lora_names.parent_name(self.unwrap(model), self.decoder_layers(model))

    def default_lora_targets(self, model: nn.Module) -> list[str]:
        """Leaf names of the linear layers inside the language model's blocks (e.g. q_proj ... down_proj)."""
        return lora_names.linear_leaf_names(self.decoder_layers(model))

    def lora_target_regex(self, model: nn.Module, leaves: Sequence[str]) -> str:
        """A peft `target_modules` regex matching `leaves` inside the language model's blocks only
        (VLM vision towers reuse names such as `qkv`, `proj`, `gate_proj`)."""
        return lora_names.block_target_regex(self.language_model_prefix(model), leaves)


def _to_device(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    try:
        device = next(model.parameters()).device
    except StopIteration:
        return batch
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
