"""Arguments of `dopd-cli eval` and of evaluation during training (`dopd.eval.evaluate_samples`)."""

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class EvalArguments:
    eval_num_samples: int = field(
        default=1,
        metadata={"help": "Answers generated per prompt. 1: one answer (greedy unless eval_temperature > 0), reported "
                          "as accuracy. >1: sampled answers, reported as pass@k (unbiased estimator) and mean@k."},
    )
    eval_pass_k: Optional[str] = field(
        default=None,
        metadata={"help": "The k values of pass@k, comma-separated (each <= eval_num_samples); "
                          "default: 1 and eval_num_samples."},
    )
    eval_with_privilege: bool = field(
        default=False,
        metadata={"help": "Evaluate on the privileged view x+p (the privileged upper bound) instead of the plain view "
                          "x that the deployed student sees. Samples without privileged information use x either way."},
    )
    eval_max_new_tokens: Optional[int] = field(
        default=None,
        metadata={"help": "Maximum tokens per generated answer; defaults to max_new_tokens (the rollout's)."},
    )
    eval_temperature: Optional[float] = field(
        default=None,
        metadata={"help": "Sampling temperature. Default: 0 (greedy) when eval_num_samples is 1, 1.0 otherwise."},
    )
    eval_top_p: float = field(
        default=1.0,
        metadata={"help": "Nucleus sampling for evaluation (only when sampling)."},
    )
    eval_generation_batch_size: int = field(
        default=8,
        metadata={"help": "Prompts per generate call (each repeated eval_num_samples times)."},
    )
    eval_seed: int = field(
        default=0,
        metadata={"help": "Seed of evaluation sampling; the global RNG state is restored afterwards."},
    )
    eval_extractor: Optional[str] = field(
        default=None,
        metadata={"help": "Answer extractor for every dataset, overriding the registry's `eval.extractor`: "
                          "auto | boxed | answer | last_line | choice | number | gsm8k | full."},
    )
    eval_metric: Optional[str] = field(
        default=None,
        metadata={"help": "Scoring for every dataset, overriding the registry's `eval.metric`: "
                          "auto | exact | numeric | choice."},
    )
    eval_tolerance: Optional[float] = field(
        default=None,
        metadata={"help": "Numeric metric: |pred - ref| <= tolerance * max(1, |ref|) counts as correct. Overrides the "
                          "registry's `eval.tolerance` for every dataset; default there: 1e-4."},
    )
    eval_output_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Where `dopd-cli eval` writes predictions and metrics; defaults to output_dir, "
                          "else saves/eval."},
    )
    predictions_file: str = field(
        default="eval_predictions.jsonl",
        metadata={"help": "Predictions JSON Lines (one line per prompt), relative to eval_output_dir."},
    )
    eval_metrics_file: str = field(
        default="eval_metrics.json",
        metadata={"help": "Metrics JSON, relative to eval_output_dir."},
    )

    def __post_init__(self) -> None:
        if self.eval_num_samples < 1:
            raise ValueError("eval_num_samples must be >= 1")
        if self.eval_generation_batch_size < 1:
            raise ValueError("eval_generation_batch_size must be >= 1")
        if self.eval_tolerance is not None and self.eval_tolerance < 0:
            raise ValueError("eval_tolerance must be >= 0")
