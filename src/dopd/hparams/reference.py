"""The config-key reference (docs/config.md), generated from the dataclasses' help strings."""

from __future__ import annotations

import dataclasses

from .parser import OUR_DATACLASSES

SECTIONS = {
    "ModelArguments": "model",
    "DataArguments": "dataset",
    "FinetuningArguments": "method and trainable parameters",
    "DistillArguments": "objective",
    "RolloutArguments": "rollout",
    "EvalArguments": "evaluation",
    "ProbeArguments": "probe and premise alarm",
}

TRAINING_KEYS = (
    "output_dir", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type",
    "max_steps", "num_train_epochs", "bf16", "activation_checkpointing", "deepspeed", "logging_steps", "save_steps",
    "save_total_limit", "resume_from_checkpoint", "eval_strategy", "eval_steps", "report_to", "seed", "use_cpu",
    "sft_view", "plot_loss",
)


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default).replace("|", "\\|").replace("\n", "\\n")
    return "(required)"


def render_reference() -> str:
    lines = [
        "# Configuration keys",
        "",
        "Generated from the help strings by `python -m dopd.hparams.reference > docs/config.md`; a test keeps it current.",
        "Any key goes in the YAML file or as a `key=value` override. An unknown key is an error naming the closest",
        "known keys. Besides the keys below, every `transformers.TrainingArguments` key is accepted. A leading `~` in a",
        "path (keys ending in `_or_path`, `_dir`, `_path`, `_file`, and `deepspeed`, `resume_from_checkpoint`) is the",
        "home folder, as in a shell.",
        "",
    ]
    for cls in OUR_DATACLASSES:
        lines += [f"## {SECTIONS.get(cls.__name__, cls.__name__)}", "", "| key | default | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            help_text = " ".join(f.metadata.get("help", "").split()).replace("|", "\\|")
            lines.append(f"| `{f.name}` | `{_default(f)}` | {help_text} |")
        lines.append("")
    # imported here: transformers is a heavy import (see parser._training_class)
    from .training_args import DOPDTrainingArguments

    fields = {f.name: f for f in dataclasses.fields(DOPDTrainingArguments)}
    lines += ["## training (transformers' TrainingArguments; the ones most runs set)", "",
              "| key | default | meaning |", "|---|---|---|"]
    for name in TRAINING_KEYS:
        f = fields[name]
        help_text = " ".join(f.metadata.get("help", "").split()).replace("|", "\\|")
        lines.append(f"| `{name}` | `{_default(f)}` | {help_text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_reference(), end="")
