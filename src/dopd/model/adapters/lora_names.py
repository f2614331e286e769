"""Naming the language model's linear layers for LoRA (peft `target_modules`), away from VLM vision towers."""

from __future__ import annotations

import re
from typing import Sequence

from torch import nn

_QUANTISED_LINEAR = ("Linear8bitLt", "Linear4bit")


def parent_name(root: nn.Module, target: nn.Module) -> str:
    """Qualified name (in `root`) of the module holding `target` ("" when `root` holds it directly)."""
    for name, module in root.named_modules():
        if module is target:
            return name.rsplit(".", 1)[0] if "." in name else ""
    raise RuntimeError("decoder layers not found in the model")


def linear_leaf_names(blocks: nn.Module) -> list[str]:
    """Leaf names of the linear layers (incl. bitsandbytes ones) under `blocks`, first-seen order."""
    names: list[str] = []
    for name, module in blocks.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ in _QUANTISED_LINEAR:
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in names:
                names.append(leaf)
    return names


def block_target_regex(prefix: str, leaves: Sequence[str]) -> str:
    """A regex matching modules named `leaves` inside `<prefix>.layers.<i>` only."""
    head = re.escape(prefix) + r"\." if prefix else ""
    alts = "|".join(re.escape(x) for x in leaves)
    return rf"^(?:.*\.)?{head}layers\.\d+\.(?:.*\.)?(?:{alts})$"
