"""What every adapter's `from_pretrained` (and the loader) shares: hub keyword arguments, the checkpoint's
generation config."""

from __future__ import annotations

from typing import Any


def hub_kwargs(model_args: Any) -> dict[str, Any]:
    """`trust_remote_code` / `cache_dir` from `ModelArguments` as `from_pretrained` keyword arguments."""
    if model_args is None:
        return {}
    kw: dict[str, Any] = {"trust_remote_code": bool(getattr(model_args, "trust_remote_code", False))}
    if getattr(model_args, "cache_dir", None):
        kw["cache_dir"] = model_args.cache_dir
    return kw


def load_generation_config(name_or_path: str, **kw: Any) -> Any:
    """The checkpoint's `GenerationConfig` (eos / pad / bos ids for generation), or None when it ships none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(name_or_path, **{k: v for k, v in kw.items()
                                                                 if k != "trust_remote_code"})
    except (OSError, ValueError):
        return None
