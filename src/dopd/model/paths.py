"""Where a model name points: a folder or hub id as given, or a `<scheme>:<spec>` name resolved by its scheme.

Every command that loads a model (train, eval, check-data, render, export, annotate's local backend) resolves the
name here first, so `tiny:<family>` works wherever a model folder or hub id does. The one scheme, `tiny:` (tiny
random-init models for the offline demo, tests and export examples), lives in `dopd.model.tiny`: loading a real
checkpoint never imports it.
"""

from __future__ import annotations

import importlib
from typing import Callable, Optional

#: scheme -> "module:function" turning `<spec>` (the name after `<scheme>:`) and the role into a folder
SCHEMES = {"tiny": "dopd.model.tiny:resolve_tiny_name"}


def _resolver(scheme: str) -> Callable[[str, str], str]:
    module, _, function = SCHEMES[scheme].partition(":")
    # by name, on first use: only runs that name a tiny model import the tiny-model builder
    return getattr(importlib.import_module(module), function)


def resolve_model_path(name_or_path: Optional[str], role: str) -> Optional[str]:
    """`tiny:<family>[:<size>[:<tokenizer>]]` names a tiny random-init model, built under `models/tiny/` (or
    `$DOPD_TINY_DIR`) on first use (see `dopd.model.tiny.resolve_tiny_name`); anything else goes to
    `from_pretrained` as given. `role` ("student" or "teacher") is the default size."""
    scheme, sep, spec = (name_or_path or "").partition(":")
    if not sep or scheme not in SCHEMES:
        return name_or_path
    return _resolver(scheme)(spec, role)
