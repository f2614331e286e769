"""Text causal LMs: Qwen2, Qwen3, Llama and (as the fallback) any AutoModelForCausalLM with a chat template."""

from __future__ import annotations

from typing import Any

from ..registry import register_adapter
from .base import ModelAdapter


def hub_kwargs(model_args: Any) -> dict[str, Any]:
    if model_args is None:
        return {}
    kw: dict[str, Any] = {"trust_remote_code": bool(getattr(model_args, "trust_remote_code", False))}
    if getattr(model_args, "cache_dir", None):
        kw["cache_dir"] = model_args.cache_dir
    return kw


def load_generation_config(name_or_path: str, **kw: Any) -> Any:
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(name_or_path, **{k: v for k, v in kw.items()
                                                                 if k != "trust_remote_code"})
    except (OSError, ValueError):
        return None


@register_adapter("qwen2", "qwen3", "llama", "mistral", fallback=True)
class TextAdapter(ModelAdapter):
    family = "text"
    is_vlm = False
    grounding = "plain"
    auto_model_class = "AutoModelForCausalLM"
    min_image_size = 28

    def load_image(self, path: Any) -> Any:
        """Text models never see images (their prompts drop them); opened as RGB only so the data layer can
        build views for a text-only teacher."""
        from PIL import Image

        if isinstance(path, Image.Image):
            return path.convert("RGB")
        with Image.open(path) as image:
            return image.convert("RGB")

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: Any, model_args: Any = None) -> "TextAdapter":
        from transformers import AutoTokenizer

        from dopd.hparams import ConfigError

        kw = hub_kwargs(model_args)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kw)
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"{name_or_path}: the tokenizer has no chat template; DOPD renders prompts with the "
                              "model's own template (use an instruct/chat checkpoint)")
        adapter = cls(name_or_path, config, tokenizer, None, model_args)
        adapter.generation_config = load_generation_config(name_or_path, **kw)
        return adapter
