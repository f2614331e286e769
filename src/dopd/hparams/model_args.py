"""Arguments for the student and the teacher models."""

from dataclasses import dataclass, field
from typing import Any, Optional

import yaml


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "The student: a local folder or a hub id (the model being trained and deployed)."},
    )
    teacher_model_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "The privileged teacher: a local folder or a hub id. Frozen during training."},
    )
    adapter_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "A LoRA adapter folder to start from (resume LoRA training or export it)."},
    )
    torch_dtype: str = field(
        default="auto",
        metadata={"help": "Student weights dtype: auto | bfloat16 | float16 | float32."},
    )
    teacher_torch_dtype: Optional[str] = field(
        default=None,
        metadata={"help": "Teacher weights dtype (auto | bfloat16 | float16 | float32); defaults to torch_dtype."},
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata={"help": "Attention kernel: sdpa | eager | flash_attention_2 (when installed)."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow custom modelling code from the model folder/hub repo."},
    )
    teacher_text_only: bool = field(
        default=False,
        metadata={"help": "Allow a text-only teacher for a VLM student: the teacher reads the text of x+p, no images."},
    )
    image_min_pixels: Optional[int] = field(
        default=None,
        metadata={"help": "Minimum pixels of an image after resizing (qwen-vl-utils min_pixels). Default: the "
                          "checkpoint's own (preprocessor_config.json; Qwen2/2.5-VL 3,136, Qwen3-VL 65,536). "
                          "Saved models keep the checkpoint's bounds."},
    )
    image_max_pixels: Optional[int] = field(
        default=None,
        metadata={"help": "Maximum pixels of an image after resizing (qwen-vl-utils max_pixels). Default: the "
                          "checkpoint's own (Qwen2/2.5-VL 12,845,056, Qwen3-VL 16,777,216); when set below the "
                          "checkpoint's minimum, the minimum is lowered to it."},
    )
    crop_min_pixels: Optional[int] = field(
        default=None,
        metadata={"help": "Zoomed crops (privilege `crops`) are upscaled, aspect kept, to at least this many "
                          "pixels. Default: 256 visual tokens (256 x 28^2 Qwen2/2.5-VL, 256 x 32^2 Qwen3-VL); "
                          "always within [image_min_pixels, image_max_pixels]."},
    )
    enable_thinking: Optional[bool] = field(
        default=None,
        metadata={"help": "Reasoning models with a thinking switch in their chat template (Qwen3): false renders the "
                          "non-thinking prompt (Qwen3 appends an empty `<think>\\n\\n</think>` block), true the "
                          "thinking one; passed to every render of student, teacher and eval prompts. "
                          "Default (unset): the template's own default (Qwen3: thinking)."},
    )
    chat_template_kwargs: Optional[Any] = field(
        default=None,
        metadata={"help": "Extra variables for the chat template at every render, a mapping (or YAML/JSON text), "
                          "e.g. {enable_thinking: false}; `enable_thinking`, when set, overrides the same key here."},
    )
    cache_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Where hub downloads are cached."},
    )
    export_dir: Optional[str] = field(
        default=None,
        metadata={"help": "`dopd-cli export`: folder to save the merged model and processor to."},
    )

    def __post_init__(self) -> None:
        kwargs = self.chat_template_kwargs
        if isinstance(kwargs, str):
            kwargs = yaml.safe_load(kwargs) if kwargs.strip() else None
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ValueError(f"chat_template_kwargs must be a mapping of template variables, got {kwargs!r}")
        self.chat_template_kwargs = dict(kwargs) if kwargs else None

    def template_kwargs(self) -> dict[str, Any]:
        """What every `apply_chat_template` call gets besides the messages (`chat_template_kwargs` +
        `enable_thinking`)."""
        out = dict(self.chat_template_kwargs or {})
        if self.enable_thinking is not None:
            out["enable_thinking"] = bool(self.enable_thinking)
        return out
