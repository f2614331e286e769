"""Adapter registry: `config.model_type` -> ModelAdapter subclass (`register_adapter` + dict, LLaMA-Factory style).

The built-in families are the explicit table `dopd.model.adapters.ADAPTERS`; `register_adapter` adds a family from
outside code to that same table. Any causal LM with a chat template that is not in it falls back to the text
adapter. This module imports the adapters; the adapters never import it.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from .adapters import ADAPTERS, FALLBACK_ADAPTER, ModelAdapter

T = TypeVar("T", bound=type[ModelAdapter])

#: the adapter for unregistered model types; the last `register_adapter(..., fallback=True)` sets it
_fallback: type[ModelAdapter] = FALLBACK_ADAPTER


def register_adapter(*model_types: str, fallback: bool = False) -> Callable[[T], T]:
    """Class decorator: register an adapter for one or more `config.model_type` values (and, with `fallback`,
    for every model type not registered)."""

    def wrap(cls: T) -> T:
        global _fallback
        for model_type in model_types:
            ADAPTERS[model_type] = cls
        if fallback:
            _fallback = cls
        return cls

    return wrap


def get_adapter_class(model_type: str) -> type[ModelAdapter]:
    """The adapter registered for `model_type`, or the text fallback."""
    return ADAPTERS.get(model_type) or _fallback


def supported_model_types() -> list[str]:
    return sorted(ADAPTERS)
