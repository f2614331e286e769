"""Arguments for datasets and the two prompt views (x and x+p)."""

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class DataArguments:
    dataset: Optional[str] = field(
        default=None,
        metadata={"help": "Training dataset name(s) from dataset_info.json, comma-separated."},
    )
    eval_dataset: Optional[str] = field(
        default=None,
        metadata={"help": "Evaluation dataset name(s) from dataset_info.json, comma-separated."},
    )
    dataset_dir: str = field(
        default="data",
        metadata={"help": "Folder holding dataset_info.json and the dataset files."},
    )
    media_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Folder that relative image paths resolve against; defaults to dataset_dir."},
    )
    cutoff_len: int = field(
        default=2048,
        metadata={"help": "Maximum prompt length in tokens (each view). Longer prompts are cut from the left "
                          "of the earliest turns, never through image tokens, and counted in a warning."},
    )
    max_samples: Optional[int] = field(
        default=None,
        metadata={"help": "Keep at most this many samples per dataset (for debugging)."},
    )
    mix_strategy: str = field(
        default="concat",
        metadata={"help": "How several datasets combine: concat | interleave_under | interleave_over."},
    )
    interleave_probs: Optional[str] = field(
        default=None,
        metadata={"help": "Sampling probabilities for interleaving, comma-separated (default: uniform)."},
    )
    privilege: Optional[str] = field(
        default=None,
        metadata={"help": "Override the registry's privilege processors, comma-separated: "
                          "hint, boxes_text, boxes_draw, crops, reference (or 'none')."},
    )
    hint_template: str = field(
        default="\n\n[Privileged hint]\n{hint}\n[End of hint]",
        metadata={"help": "How a hint is appended to the last user turn of the privileged view; {hint} is replaced."},
    )
    boxes_template: str = field(
        default="\n\n[Privileged regions]\n{boxes}\n[End of regions]",
        metadata={"help": "How labelled boxes (privilege `boxes_text`, written in the model's grounding convention) "
                          "are appended to the last user turn; {boxes} is replaced."},
    )
    crops_template: str = field(
        default="\n\n[Zoomed views]\n{crops}\n[End of zoomed views]",
        metadata={"help": "How zoomed crops (privilege `crops`, one `Zoomed view of region ... <image>` line each) "
                          "are appended to the last user turn; {crops} is replaced."},
    )
    reference_template: str = field(
        default="\n\n[Reference answer]\n{reference}\n[End of reference answer]",
        metadata={"help": "How the reference answer (privilege `reference`, the OPSD setting) is appended to the "
                          "last user turn; {reference} is replaced."},
    )
    max_invalid_fraction: float = field(
        default=0.0,
        metadata={"help": "check-data/train fail when more than this fraction of samples is invalid "
                          "(invalid samples are dropped otherwise)."},
    )
    preprocessing_num_workers: Optional[int] = field(
        default=None,
        metadata={"help": "Worker processes for dataset preprocessing."},
    )
