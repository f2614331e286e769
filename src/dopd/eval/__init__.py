"""Evaluation: answer extraction, scoring (accuracy, pass@k, mean@k) and `dopd-cli eval`. See docs/evaluation.md."""

from .extract import EXTRACTORS, clean_reference, extract_answer, get_extractor, register_extractor
from .metrics import METRICS, aggregate, get_metric, pass_at_k, register_metric, score
from .spec import EvalSpec, resolve_specs, spec_from_entry
from .workflow import (EvalResult, evaluate_samples, format_table, run_eval, run_eval_cli, summarize, write_outputs,
                       write_predictions)

__all__ = [
    "EXTRACTORS", "METRICS", "EvalResult", "EvalSpec", "aggregate", "clean_reference", "evaluate_samples",
    "extract_answer", "format_table", "get_extractor", "get_metric", "pass_at_k", "register_extractor",
    "register_metric", "resolve_specs", "run_eval", "run_eval_cli", "score", "spec_from_entry", "summarize",
    "write_outputs", "write_predictions",
]
