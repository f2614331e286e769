"""`dopd-cli COMMAND --help`: the command's usage and the config keys it reads, with their help strings.

The keys and their help come from the argument dataclasses (`dopd.hparams`), as docs/config.md does
(`dopd.hparams.reference`); the usage line is the command's line in `dopd.cli`'s docstring. Every command parses the
whole config (an unknown key is an error anywhere), so the sections shown are the ones that command reads; the full
reference stays docs/config.md.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any, Optional

from dopd.hparams.parser import OUR_DATACLASSES
from dopd.hparams.reference import SECTIONS, TRAINING_KEYS

#: command -> (what it does, the sections of keys it reads; "training" is transformers' TrainingArguments)
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": ("Train the student (stage dopd, a baseline, or sft): rollouts, scoring, the routed objective, "
              "checkpoints, trainer_log.jsonl and plots in output_dir. SIGTERM / Ctrl-C saves a checkpoint, then "
              "exits 143 / 130.",
              ("ModelArguments", "DataArguments", "FinetuningArguments", "DistillArguments", "RolloutArguments",
               "EvalArguments", "ProbeArguments", "training")),
    "probe": ("Before training: does p help the student and the teacher, where will the routed tokens go, how large "
              "a step lowers the divergence; writes probe_report.json/.md and a plot (docs/before_you_train.md). "
              "Exits 0 whatever the verdict (3 with probe_strict=true and a failed check).",
              ("ModelArguments", "DataArguments", "FinetuningArguments", "DistillArguments", "RolloutArguments",
               "EvalArguments", "ProbeArguments", "training")),
    "eval": ("Generate answers on eval_dataset with the deployed view (no p), extract, score; writes predictions "
             "and metrics.", ("ModelArguments", "DataArguments", "RolloutArguments", "EvalArguments")),
    "check-data": ("Validate every sample of every configured dataset (files, images, boxes, privileged fields) and "
                   "render both views, before any model loads.", ("ModelArguments", "DataArguments")),
    "export": ("Merge a LoRA adapter (adapter_name_or_path) into its base model and save model + processor to "
               "export_dir.", ("ModelArguments",)),
    "annotate": ("Ask a model for privileged information p (hints, boxes) on a plain dataset; writes the annotated "
                 "data and its registry entry.", ("AnnotateArguments", "DataArguments", "ModelArguments")),
    "render": ("Print what each model sees (x, x+p, the teacher's view), decoded with special tokens, before "
               "anything trains. Loads tokenizers and processors, never weights.",
               ("ModelArguments", "DataArguments", "FinetuningArguments", "DistillArguments")),
    "env": ("Print the versions a bug report needs (Python, torch, transformers, ..., qwen-vl-utils) and whether CUDA "
            "is available.", ()),
    "version": ("Print dopd's version.", ()),
}

VERBOSE_NOTE = ("--verbose (or DOPD_VERBOSE=1) also shows the libraries' start-up warnings that dopd-cli hides "
                "(DeepSpeed's accelerator detection when no DeepSpeed config is given, peft's use of a deprecated "
                "transformers property).")


def usage_line(usage: str, command: str) -> Optional[str]:
    """The line of `usage` (the CLI's docstring) that shows how `command` is called."""
    for line in usage.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "dopd-cli" and words[1] == command:
            return line.strip()
    return None


def _section_title(cls_name: str) -> str:
    return SECTIONS.get(cls_name, cls_name.removesuffix("Arguments").lower())


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default)
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return repr(field.default_factory())  # type: ignore[misc]
    return "(required)"


def _key_lines(fields: list[dataclasses.Field], width: int) -> list[str]:
    lines = []
    for f in fields:
        lines.append(f"  {f.name} = {_default(f)}")
        text = " ".join(str(f.metadata.get("help", "")).split())
        if text:
            lines += textwrap.wrap(text, width=width, initial_indent="      ", subsequent_indent="      ")
    return lines


def _sections(names: tuple[str, ...]) -> list[tuple[str, list[dataclasses.Field]]]:
    by_name: dict[str, Any] = {cls.__name__: cls for cls in OUR_DATACLASSES}
    out = []
    for name in names:
        if name == "training":
            # heavy: transformers' TrainingArguments, needed only when a command's help lists the training keys
            from dopd.hparams.training_args import DOPDTrainingArguments

            fields = {f.name: f for f in dataclasses.fields(DOPDTrainingArguments)}
            out.append(("training (transformers' TrainingArguments; the ones most runs set, any other is accepted)",
                        [fields[k] for k in TRAINING_KEYS]))
        else:
            out.append((_section_title(name), list(dataclasses.fields(by_name[name]))))
    return out


def command_help(command: str, usage: str, width: int = 100) -> str:
    """The text `dopd-cli COMMAND --help` prints: usage, what the command does, and each key it reads with its
    default and help string, grouped by argument dataclass."""
    line = usage_line(usage, command) or f"dopd-cli {command} CONFIG.yaml [key=value ...]"
    summary, sections = COMMANDS.get(command, ("", tuple(c.__name__ for c in OUR_DATACLASSES) + ("training",)))
    out = [f"usage: {line}", ""]
    if summary:
        out += textwrap.wrap(summary, width=width) + [""]
    if sections:
        out += textwrap.wrap("Keys go in CONFIG.yaml or as key=value overrides (an override wins); an unknown key is "
                             "an error naming the closest known keys. All keys: docs/config.md.", width=width)
        for title, fields in _sections(sections):
            out += ["", f"{title}:"] + _key_lines(fields, width)
        out.append("")
    out += textwrap.wrap(VERBOSE_NOTE, width=width)
    return "\n".join(out)


def wants_help(args: list[str]) -> bool:
    """`-h` or `--help` anywhere among a command's arguments (an override `key=--help` is a value, not a flag)."""
    return any(arg in ("-h", "--help") for arg in args)
