"""One YAML file plus `key=value` overrides -> the argument dataclasses.

Unknown keys are an error naming the key and the closest known keys (LLaMA-Factory style), and values given as
strings (command-line overrides, or YAML 1.1 reading `5e-6` as a string) are converted to the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import sys
import types
import typing
from typing import Any, NamedTuple, Optional, Sequence

import yaml

from .annotate_args import AnnotateArguments
from .data_args import DataArguments
from .distill_args import DistillArguments
from .eval_args import EvalArguments
from .finetuning_args import FinetuningArguments
from .model_args import ModelArguments
from .probe_args import ProbeArguments
from .rollout_args import RolloutArguments

OUR_DATACLASSES = (
    ModelArguments, DataArguments, FinetuningArguments, DistillArguments, RolloutArguments, EvalArguments,
    AnnotateArguments, ProbeArguments,
)


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message says what and where."""


class DOPDConfig(NamedTuple):
    model: ModelArguments
    data: DataArguments
    finetuning: FinetuningArguments
    distill: DistillArguments
    rollout: RolloutArguments
    training: Any  # DOPDTrainingArguments, or None when not requested
    evaluation: EvalArguments = EvalArguments()  # `dopd-cli eval` and evaluation during training
    annotate: AnnotateArguments = AnnotateArguments()  # `dopd-cli annotate`
    probe: ProbeArguments = ProbeArguments()  # `dopd-cli probe` and the premise alarm


def _training_class():
    # imported here, not at the top: training_args imports transformers (a heavy import) that `import dopd.hparams`
    # and `import dopd.distill` (whose config imports ConfigError from here) do not need
    from .training_args import DOPDTrainingArguments

    return DOPDTrainingArguments


def known_keys(with_training: bool = True) -> dict[str, type]:
    """Every accepted key mapped to the dataclass that owns it."""
    owners: dict[str, type] = {}
    classes = list(OUR_DATACLASSES) + ([_training_class()] if with_training else [])
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.init:
                owners.setdefault(f.name, cls)
    return owners


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a string/number to the field's scalar type; leave other shapes alone."""
    tp = _unwrap_optional(tp)
    if value is None:
        return None
    try:
        if tp is bool and isinstance(value, str):
            low = value.strip().lower()
            if low in ("true", "1", "yes", "y", "on"):
                return True
            if low in ("false", "0", "no", "n", "off"):
                return False
            raise ValueError(value)
        if tp is float and isinstance(value, (str, int)) and not isinstance(value, bool):
            return float(value)
        if tp is int and isinstance(value, str):
            return int(value)
        if tp is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    except ValueError:
        raise ConfigError(f"config key `{key}`: cannot read {value!r} as {getattr(tp, '__name__', tp)}") from None
    return value


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"command-line override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config_dict(config_path: Optional[str], overrides: Sequence[str] = ()) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if config_path:
        if not os.path.isfile(config_path):
            raise ConfigError(f"config file not found: {config_path}")
        with open(config_path, encoding="utf-8") as fh:
            try:
                loaded = yaml.safe_load(fh) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"{config_path}: not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_path}: the top level must be a mapping of key: value")
        config.update(loaded)
    for item in overrides:
        key, value = parse_override(item)
        config[key] = value
    return config


def check_unknown_keys(config: dict[str, Any], with_training: bool = True, source: str = "config") -> None:
    owners = known_keys(with_training=True)
    unknown = [k for k in config if k not in owners]
    if unknown:
        lines = []
        for key in unknown:
            close = difflib.get_close_matches(key, owners.keys(), n=3, cutoff=0.6)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            lines.append(f"unknown key `{key}`{hint}")
        raise ConfigError(f"{source}: " + "; ".join(lines))


def _cpu_flag_for_multiprocess_deepspeed(kwargs: dict[str, Any], source: str) -> None:
    """`use_cpu: true` + DeepSpeed + several processes (torchrun sets WORLD_SIZE): accelerate then skips DeepSpeed's
    own process-group setup, so DeepSpeed counts one rank while the Trainer counts all of them and its batch-size
    check fails. Without CUDA the CPU is what runs anyway (over gloo, see `dopd.train.distributed`), so the flag is
    dropped; with CUDA present it is refused here, before any model loads."""
    if not kwargs.get("use_cpu") or not kwargs.get("deepspeed") or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch  # here: a heavy import the parser needs only for this check

    if torch.cuda.is_available():
        raise ConfigError(f"{source}: use_cpu=true with DeepSpeed across {os.environ['WORLD_SIZE']} processes is not "
                          "supported: drop use_cpu to train on the GPUs, or hide them (CUDA_VISIBLE_DEVICES=) to "
                          "train on the CPU")
    kwargs["use_cpu"] = False  # no CUDA: the processes run on the CPU either way


def _check_pure_bf16(model: ModelArguments, finetuning: FinetuningArguments, training_kwargs: dict[str, Any],
                     source: str) -> None:
    """`pure_bf16` trains bf16 weights directly: it needs bf16 weights (`torch_dtype` auto is read as bfloat16) and
    no DeepSpeed (whose optimizer keeps fp32 masters of its own, so the flag would silently mean nothing)."""
    if not finetuning.pure_bf16:
        return
    if model.torch_dtype in (None, "", "auto"):
        model.torch_dtype = "bfloat16"
    elif model.torch_dtype != "bfloat16":
        raise ConfigError(f"{source}: pure_bf16=true trains the weights in bfloat16, but torch_dtype is "
                          f"{model.torch_dtype!r}: set torch_dtype: bfloat16 (or leave it unset), or drop pure_bf16")
    if training_kwargs.get("deepspeed"):
        raise ConfigError(f"{source}: pure_bf16=true does not apply under DeepSpeed, whose optimizer keeps fp32 "
                          "master weights of its own: drop pure_bf16 (or deepspeed)")


def _field_default(cls: type, name: str) -> Any:
    field = {f.name: f for f in dataclasses.fields(cls)}.get(name)
    if field is None:
        return None
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _import_integrations_without_wandb_notice(report_to: Any) -> None:
    """transformers prints "Running in WANDB offline mode" when its integrations module is first imported (by
    `TrainingArguments`) with WANDB_MODE=offline in the environment, whatever `report_to` says. A run that does not
    report to wandb imports that module first with WANDB_MODE hidden, so the notice appears only for runs using
    wandb; the environment is restored right after."""
    name = "transformers.integrations.integration_utils"
    if name in sys.modules or "WANDB_MODE" not in os.environ:
        return
    targets = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if any(str(t) in ("wandb", "all") for t in targets):
        return
    saved = os.environ.pop("WANDB_MODE")
    try:
        importlib.import_module(name)
    finally:
        os.environ["WANDB_MODE"] = saved


# keys holding a file or folder path: model_name_or_path, dataset_dir, output_dir, ..., and two without a suffix
PATH_KEY_SUFFIXES = ("_or_path", "_dir", "_path", "_file")
PATH_KEYS = frozenset({"deepspeed", "resume_from_checkpoint"})


def path_key(key: str) -> bool:
    """Whether `key` holds a file or folder path (a leading `~` in its value is expanded)."""
    return key in PATH_KEYS or key.endswith(PATH_KEY_SUFFIXES)


def parse_config_dict(config: dict[str, Any], with_training: bool = True, source: str = "config") -> DOPDConfig:
    check_unknown_keys(config, with_training, source)
    owners = known_keys(with_training=True)
    per_class: dict[type, dict[str, Any]] = {}
    for key, value in config.items():
        cls = owners[key]
        ftype = {f.name: f.type for f in dataclasses.fields(cls)}[key]
        if isinstance(ftype, str):
            ftype = typing.get_type_hints(cls).get(key, Any)
        value = _coerce(value, ftype, key)
        if path_key(key) and isinstance(value, str) and value.startswith("~"):
            value = os.path.expanduser(value)  # `~/...` means the home folder, as in a shell
        per_class.setdefault(cls, {})[key] = value
    built = {}
    for cls in OUR_DATACLASSES:
        try:
            built[cls] = cls(**per_class.get(cls, {}))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{source}: {err}") from None
    training = None
    _check_pure_bf16(built[ModelArguments], built[FinetuningArguments], per_class.get(_training_class(), {}), source)
    if with_training:
        tcls = _training_class()
        kwargs = per_class.get(tcls, {})
        _cpu_flag_for_multiprocess_deepspeed(kwargs, source)
        _import_integrations_without_wandb_notice(kwargs.get("report_to", _field_default(tcls, "report_to")))
        try:
            training = tcls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{source}: {err}") from None
    else:
        # keys owned only by the training arguments are accepted but ignored (e.g. check-data on a train config)
        pass
    return DOPDConfig(
        built[ModelArguments], built[DataArguments], built[FinetuningArguments],
        built[DistillArguments], built[RolloutArguments], training, built[EvalArguments],
        built[AnnotateArguments], built[ProbeArguments],
    )


def parse_config(
    config_path: Optional[str] = None, overrides: Sequence[str] = (), with_training: bool = True
) -> DOPDConfig:
    """Read `config_path` (YAML) and apply `key=value` overrides; raise ConfigError on any unknown key."""
    config = load_config_dict(config_path, overrides)
    return parse_config_dict(config, with_training=with_training, source=config_path or "command line")
