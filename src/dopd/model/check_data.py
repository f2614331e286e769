"""`dopd-cli check-data CONFIG.yaml [key=value ...]`: validate every sample of every configured dataset.

The validation is `dopd.data.check.check_data` (data layer, no model). This entry point adds the model: with
`model_name_or_path` set (a folder, a hub id or a `tiny:` name), the model's adapter renders and tokenises both
prompt views of every valid sample, and prompt lengths are reported. Only the adapter (config, tokenizer, processor)
is loaded, never the weights. When the config's method scores a policy on x+p (`privilege_required`), data without
any privileged information fails: `dopd-cli train` refuses the same data before it loads a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from dopd.data.check import check_data
from dopd.distill import DOPDLossConfig
from dopd.hparams import DOPDConfig, ModelArguments, load_config_dict, parse_config_dict

from .loader import load_adapter
from .paths import resolve_model_path

if TYPE_CHECKING:
    from .adapters.base import ModelAdapter


def load_student_adapter(model_args: ModelArguments) -> Optional[ModelAdapter]:
    """The adapter of the student named in the config (None when no model is named)."""
    path = resolve_model_path(model_args.model_name_or_path, "student")
    return load_adapter(path, model_args) if path else None


def privilege_required(config: DOPDConfig, sft_view: Optional[str] = None) -> Optional[str]:
    """Why the config's method needs privileged information p, or None when it trains without it.

    The same test the trainer applies: a routing table that scores the privileged student (every routed table: the
    gap A needs it), or one that scores the teacher while `teacher_sees_privileged` holds; stage sft with
    `sft_view=privileged` (`sft_view`: the key's value when the config was parsed without training arguments)."""
    stage = config.finetuning.stage
    if stage == "sft":
        view = config.training.sft_view if config.training is not None else sft_view
        return "stage sft with sft_view=privileged trains on x+p" if view == "privileged" else None
    loss = DOPDLossConfig.from_args(config.distill, stage)
    if loss.needs_privileged_student:
        return f"stage `{stage}` scores the privileged student (the student on x+p)"
    if loss.needs_teacher and config.distill.teacher_sees_privileged:
        return f"stage `{stage}` scores the teacher on x+p (teacher_sees_privileged=true)"
    return None


def run_check_data_cli(config_path: Optional[str], overrides: Sequence[str]) -> int:
    """Entry point of `dopd-cli check-data`; ConfigError propagates (the CLI prints it and exits 2)."""
    raw = load_config_dict(config_path, list(overrides))
    config = parse_config_dict(raw, with_training=False, source=config_path or "command line")
    return check_data(config, load_renderer=lambda: load_student_adapter(config.model),
                      require_privilege=privilege_required(config, sft_view=raw.get("sft_view")))
