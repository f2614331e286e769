"""transformers' TrainingArguments with the defaults on-policy distillation needs."""

from dataclasses import dataclass, field
from typing import Optional

from transformers import Seq2SeqTrainingArguments


@dataclass
class DOPDTrainingArguments(Seq2SeqTrainingArguments):
    # Rollouts need the raw prompt columns (images, two views); the Trainer must not drop them.
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep all dataset columns (the collator needs both prompt views). Leave false."},
    )
    sft_view: str = field(
        default="plain",
        metadata={"help": "stage sft: train on the plain view x (plain) or on x+p (privileged, e.g. to make a teacher)."},
    )
    plot_loss: bool = field(
        default=True,
        metadata={"help": "Save PNG plots of loss, regime fractions and entropy to output_dir at the end."},
    )
    # transformers' own help says the field is "not directly used by Trainer"; here `dopd-cli train` uses it.
    resume_from_checkpoint: Optional[str] = field(
        default=None,
        metadata={"help": "Resume a stopped run: `true` (or `latest`) takes the newest `checkpoint-N` in output_dir; "
                          "a path takes that checkpoint folder. The model weights (or LoRA adapter), optimizer, "
                          "scheduler, RNG states and step counter are restored, and training continues at step N+1. "
                          "`false`/empty: start fresh."},
    )
    seed: int = field(
        default=42,
        metadata={"help": "Random seed, set before the models are built (LoRA's initial weights) and again when the "
                          "Trainer starts (data order, rollout sampling). Two CPU runs of one config and seed log "
                          "identical losses (tests/train/test_reproducibility.py). A different max_steps is a "
                          "different run from the third logged step on: the cosine/linear learning-rate schedule "
                          "depends on it. GPU kernels may not be deterministic; full_determinism=true asks torch for "
                          "deterministic ones."},
    )
