"""`dopd-cli check-data CONFIG.yaml [key=value ...]`: validate every sample of every configured dataset.

The validation is `dopd.data.check.check_data` (data layer, no model). This entry point adds the model: with
`model_name_or_path` set (a folder, a hub id or a `tiny:` name), the model's adapter renders and tokenises both
prompt views of every valid sample, and prompt lengths are reported. Only the adapter (config, tokenizer, processor)
is loaded, never the weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from dopd.data.check import check_data
from dopd.hparams import ModelArguments, parse_config

from .loader import load_adapter
from .paths import resolve_model_path

if TYPE_CHECKING:
    from .adapters.base import ModelAdapter


def load_student_adapter(model_args: ModelArguments) -> Optional[ModelAdapter]:
    """The adapter of the student named in the config (None when no model is named)."""
    path = resolve_model_path(model_args.model_name_or_path, "student")
    return load_adapter(path, model_args) if path else None


def run_check_data_cli(config_path: Optional[str], overrides: Sequence[str]) -> int:
    """Entry point of `dopd-cli check-data`; ConfigError propagates (the CLI prints it and exits 2)."""
    config = parse_config(config_path, list(overrides), with_training=False)
    return check_data(config, load_renderer=lambda: load_student_adapter(config.model))
