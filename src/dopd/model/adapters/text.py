"""Text causal LMs: Qwen2, Qwen3, Llama and (as the fallback) any AutoModelForCausalLM with a chat template."""

from __future__ import annotations

from typing import Any

from PIL import Image
from transformers import AutoTokenizer

from dopd.hparams import ConfigError

from ..pretrained import hub_kwargs, load_generation_config
from .base import ModelAdapter


class TextAdapter(ModelAdapter):
    family = "text"
    is_vlm = False
    grounding = "plain"
    auto_model_class = "AutoModelForCausalLM"
    min_image_size = 28

    def load_image(self, path: Any) -> Any:
        """Text models never see images (their prompts drop them); opened as RGB only so the data layer can
        build views for a text-only teacher."""
        if isinstance(path, Image.Image):
            return path.convert("RGB")
        with Image.open(path) as image:
            return image.convert("RGB")

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: Any, model_args: Any = None) -> TextAdapter:
        kw = hub_kwargs(model_args)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kw)
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"{name_or_path}: the tokenizer has no chat template; DOPD renders prompts with the "
                              "model's own template (use an instruct/chat checkpoint)")
        return cls(name_or_path, config, tokenizer, None, model_args,
                   generation_config=load_generation_config(name_or_path, **kw))
