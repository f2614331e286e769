"""Which method runs (`stage`) and which parameters train."""

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class FinetuningArguments:
    stage: str = field(
        default="dopd",
        metadata={"help": "Method: dopd | vanilla_opd | opsd | uniform_dual | the ablation presets "
                          "(see docs/objective.md) | sft."},
    )
    finetuning_type: str = field(
        default="full",
        metadata={"help": "full | freeze | lora."},
    )
    freeze_vision_tower: bool = field(
        default=True,
        metadata={"help": "VLMs: keep the vision tower frozen (full and freeze)."},
    )
    freeze_multi_modal_projector: bool = field(
        default=True,
        metadata={"help": "VLMs: keep the vision-language projector frozen (full and freeze)."},
    )
    freeze_trainable_layers: int = field(
        default=2,
        metadata={"help": "finetuning_type=freeze: train only the last N language-model layers (negative: the first N)."},
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Set every dropout of the student and the teacher to 0 (TRL's disable_dropout), LoRA dropout "
                          "included: the privileged-student pass and the graded pass then score the very policy that "
                          "sampled the answers."},
    )
    pure_bf16: bool = field(
        default=False,
        metadata={"help": "Train the trainable weights in bfloat16 itself, without fp32 master weights "
                          "(LLaMA-Factory's pure_bf16; torch_dtype becomes bfloat16). Weights, gradients and AdamW "
                          "states take 8 bytes per parameter instead of 16, but updates smaller than a weight's bf16 "
                          "resolution are lost (lr 1e-5 on weights of ~1e-2). For full and freeze tuning (peft makes "
                          "LoRA adapters fp32 anyway); not with DeepSpeed, which keeps its own fp32 masters."},
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: Optional[int] = field(default=None, metadata={"help": "LoRA alpha (default: 2 * lora_rank)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target: str = field(
        default="all",
        metadata={"help": "LoRA target modules: `all` (the language model's linear layers) or a comma-separated list."},
    )
