"""Adapter registry: `config.model_type` -> ModelAdapter subclass (`register_adapter` + dict, LLaMA-Factory style).

Adding a family is one class decorated with `@register_adapter("<model_type>", ...)`; any causal LM with a chat
template that is not registered falls back to the text adapter.
"""

from __future__ import annotations

from typing import Callable, TypeVar

ADAPTERS: dict[str, type] = {}
FALLBACK_KEY = "__text__"

T = TypeVar("T", bound=type)


def register_adapter(*model_types: str, fallback: bool = False) -> Callable[[T], T]:
    """Class decorator: register an adapter for one or more `config.model_type` values."""

    def wrap(cls: T) -> T:
        for model_type in model_types:
            ADAPTERS[model_type] = cls
        if fallback:
            ADAPTERS[FALLBACK_KEY] = cls
        return cls

    return wrap


def get_adapter_class(model_type: str) -> type:
    """The adapter registered for `model_type`, or the text fallback."""
    from . import adapters  # noqa: F401  (registers the built-in families)

    return ADAPTERS.get(model_type) or ADAPTERS[FALLBACK_KEY]


def supported_model_types() -> list[str]:
    from . import adapters  # noqa: F401

    return sorted(k for k in ADAPTERS if k != FALLBACK_KEY)
