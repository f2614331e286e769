"""Model layer: family adapters (templates, processors, batching, forward), loading, finetuning, tiny models.

Heavy submodules are imported lazily so `import dopd.model` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EncodedPrompt": "dopd.model.adapters.prompt",
    "ModelAdapter": "dopd.model.adapters.base",
    "IGNORE_INDEX": "dopd.model.adapters.batching",
    "IMAGE_PLACEHOLDER": "dopd.model.adapters.prompt",
    "register_adapter": "dopd.model.registry",
    "get_adapter_class": "dopd.model.registry",
    "supported_model_types": "dopd.model.registry",
    "ADAPTERS": "dopd.model.adapters",
    "load_adapter": "dopd.model.loader",
    "load_model": "dopd.model.loader",
    "load_student": "dopd.model.loader",
    "load_teacher": "dopd.model.loader",
    "freeze_model": "dopd.model.loader",
    "apply_finetuning": "dopd.model.finetuning",
    "check_compatibility": "dopd.model.compat",
    "build_tiny_model": "dopd.model.tiny",
    "export_model": "dopd.model.export",
    "run_export_cli": "dopd.model.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dopd.model' has no attribute {name!r}")
