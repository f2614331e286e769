"""How a dataset is scored: the `eval` key of its dataset_info.json entry, overridable from the config.

    "mmstar": {..., "eval": {"extractor": "choice", "metric": "choice"}}
    "math500": {..., "eval": {"extractor": "boxed", "metric": "numeric",
                              "suffix": "\\nPlease reason step by step, and put your final answer within \\\\boxed{}."}}

LLaMA-Factory ignores keys it does not know, so the same entry still works there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Optional

from dopd.data.registry import load_dataset_info

from dopd.hparams import ConfigError

from .extract import EXTRACTORS
from .metrics import DEFAULT_TOLERANCE, METRICS

if TYPE_CHECKING:
    from dopd.hparams import DataArguments
    from dopd.hparams.eval_args import EvalArguments

SPEC_KEYS = ("extractor", "metric", "tolerance", "suffix", "source", "prepare", "notes")


@dataclass(frozen=True)
class EvalSpec:
    extractor: str = "auto"
    metric: str = "auto"
    tolerance: float = DEFAULT_TOLERANCE
    suffix: str = ""  # appended to the last user turn at evaluation (e.g. the benchmark's answer-format instruction)


def spec_from_entry(name: str, entry: Any, eval_args: Optional[EvalArguments] = None) -> EvalSpec:
    """The EvalSpec of registry entry `name`; `eval_extractor` / `eval_metric` / `eval_tolerance` override it."""
    raw = entry.get("eval") if isinstance(entry, dict) else None
    raw = raw or {}
    where = f"dataset `{name}`: `eval`"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object such as {{\"extractor\": \"boxed\", \"metric\": \"numeric\"}}")
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(SPEC_KEYS)})")
    extractor = getattr(eval_args, "eval_extractor", None) or raw.get("extractor") or "auto"
    metric = getattr(eval_args, "eval_metric", None) or raw.get("metric") or "auto"
    if extractor not in EXTRACTORS:
        raise ConfigError(f"{where}: unknown extractor `{extractor}` (known: {', '.join(sorted(EXTRACTORS))})")
    if metric not in METRICS:
        raise ConfigError(f"{where}: unknown metric `{metric}` (known: {', '.join(sorted(METRICS))})")
    tolerance = raw.get("tolerance", DEFAULT_TOLERANCE)
    if getattr(eval_args, "eval_tolerance", None) is not None:
        tolerance = eval_args.eval_tolerance
    suffix = raw.get("suffix") or ""
    if not isinstance(suffix, str):
        raise ConfigError(f"{where}: `suffix` must be text")
    return EvalSpec(extractor=extractor, metric=metric, tolerance=float(tolerance), suffix=suffix)


def resolve_specs(data_args: DataArguments, names: Iterable[str], eval_args: Optional[EvalArguments] = None
                  ) -> dict[str, EvalSpec]:
    """EvalSpec per dataset name, read from `data_args.dataset_dir`/dataset_info.json."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    info = load_dataset_info(data_args.dataset_dir)
    return {name: spec_from_entry(name, info.get(name), eval_args) for name in names}


def default_spec(eval_args: Optional[EvalArguments] = None) -> EvalSpec:
    return spec_from_entry("<default>", None, eval_args)
