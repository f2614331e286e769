"""Arguments of `dopd-cli probe` (checks of DOPD's premises before training) and of the in-run premise alarm."""

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ProbeArguments:
    probe_dataset: Optional[str] = field(
        default=None,
        metadata={"help": "Dataset(s) the probe reads (names from dataset_info.json, comma-separated); default: "
                          "eval_dataset, else dataset."},
    )
    probe_max_samples: int = field(
        default=64,
        metadata={"help": "Samples the probe uses (the first ones of probe_dataset)."},
    )
    probe_num_rollouts: Optional[int] = field(
        default=None,
        metadata={"help": "Answers sampled per prompt for the token and learning-rate checks; default: "
                          "num_generations."},
    )
    probe_lr_grid: Optional[str] = field(
        default="auto",
        metadata={"help": "Learning rates the one-step check tries, comma-separated; auto: learning_rate times "
                          "0.1, 0.3, 1, 3; empty (`probe_lr_grid=` on the command line) skips the check."},
    )
    probe_output_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Where probe_report.json / .md / .png go; default: <output_dir>/probe."},
    )
    probe_strict: bool = field(
        default=False,
        metadata={"help": "Exit with status 3 when a verdict check fails (default: exit 0 whenever the probe ran)."},
    )
    premise_alarm: bool = field(
        default=True,
        metadata={"help": "In a run that scores both privileged policies, print one warning after "
                          "premise_check_steps optimizer steps when the logged diagnostics show DOPD's premise "
                          "failing (docs/before_you_train.md)."},
    )
    premise_check_steps: int = field(
        default=10,
        metadata={"help": "Optimizer steps the premise alarm averages before it decides (once per run)."},
    )

    def __post_init__(self) -> None:
        if self.probe_max_samples < 1:
            raise ValueError("probe_max_samples must be >= 1")
        if self.probe_num_rollouts is not None and self.probe_num_rollouts < 1:
            raise ValueError("probe_num_rollouts must be >= 1")
        if self.premise_check_steps < 1:
            raise ValueError("premise_check_steps must be >= 1")

    def lr_grid(self, learning_rate: float) -> list[float]:
        """The learning rates of the one-step check ([] skips it)."""
        text = "" if self.probe_lr_grid is None else str(self.probe_lr_grid).strip()
        if text == "auto":
            return [float(f"{learning_rate * f:.12g}") for f in (0.1, 0.3, 1.0, 3.0)]  # 3e-7, not 3.0000000000000004e-7
        try:
            return [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"probe_lr_grid: cannot read {text!r} as comma-separated numbers") from None
