"""What `dopd-cli` shows of the libraries' own start-up noise.

Two messages came with every command, and neither said anything a user could act on:
- DeepSpeed's `Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.` It is
  logged, on import, by DeepSpeed's logger `"DeepSpeed"` (its own stdout handler, `propagate=False`), and
  transformers / accelerate import deepspeed whenever it is installed, whether a run uses it or not.
- transformers' `FutureWarning: is_gradient_checkpointing is deprecated`, raised because peft's `PeftModel` reads
  that property when it wraps a model (every LoRA run and `dopd-cli export`).

`quiet_library_noise` silences them at their source: a filter on the `"DeepSpeed"` logger (a filter, not a level:
DeepSpeed resets its logger's level when it creates it, but keeps the filters) that drops its records below ERROR, and
a warnings filter for that one deprecation. Shown again with `--verbose` or `DOPD_VERBOSE=1`; DeepSpeed's records
also whenever the run has a `deepspeed` config, where what DeepSpeed detects matters.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Optional, Sequence

VERBOSE_ENV = "DOPD_VERBOSE"
VERBOSE_FLAGS = ("-v", "--verbose")
DEEPSPEED_LOGGER = "DeepSpeed"
_DEPRECATION = r"`is_gradient_checkpointing` is deprecated"


def verbose_from_env() -> bool:
    """`DOPD_VERBOSE` set to anything but empty / 0 / false / no / off."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def pop_verbose_flag(args: Sequence[str]) -> tuple[bool, list[str]]:
    """(`--verbose` / `-v` was among `args`, `args` without it)."""
    rest = [a for a in args if a not in VERBOSE_FLAGS]
    return len(rest) != len(args), rest


def uses_deepspeed(config_path: Optional[str], overrides: Sequence[str]) -> bool:
    """Whether the run names a DeepSpeed config (`deepspeed:` in the YAML or a `deepspeed=` override), read without
    importing anything heavy; an unreadable file counts as no (the config parser reports it properly later)."""
    value = None
    if config_path:
        try:
            import yaml

            with open(config_path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh)
            if isinstance(loaded, dict):
                value = loaded.get("deepspeed")
        except Exception:
            value = None
    for item in overrides:
        key, sep, val = item.partition("=")
        if sep and key.strip() == "deepspeed":
            value = val.strip()
    return bool(value) and str(value).strip().lower() not in ("none", "null", "false")


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


_FILTER = _BelowError()


def quiet_library_noise(show_deepspeed: bool = False, show_deprecations: bool = False) -> None:
    """Hide DeepSpeed's records below ERROR (unless `show_deepspeed`) and peft's transformers deprecation warning
    (unless `show_deprecations`). Call before anything imports deepspeed, transformers or peft; idempotent."""
    ds_logger = logging.getLogger(DEEPSPEED_LOGGER)
    if show_deepspeed:
        ds_logger.removeFilter(_FILTER)
    elif _FILTER not in ds_logger.filters:
        ds_logger.addFilter(_FILTER)
    if not show_deprecations:
        warnings.filterwarnings("ignore", message=_DEPRECATION, category=FutureWarning)
