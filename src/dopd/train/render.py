"""`dopd-cli render CONFIG.yaml [--num-samples N] [--save-images DIR] [key=value ...]`: what each model sees, before
anything trains.

For the first N samples of `dataset` (or `eval_dataset`), prints the student's plain view x, its privileged view x+p
and the teacher's view, each decoded WITH special tokens, with token and image-token counts -- built by the very
code the trainer uses (`PromptViewDataset`: the adapters' chat templates with `enable_thinking` /
`chat_template_kwargs`, the privilege processors, `cutoff_len` truncation), so a wrong template, a missing
`<think></think>` block, a lost image or a truncated prompt shows here first. Loads tokenizers and processors,
never model weights. `--save-images DIR` writes the images of every view (the very PIL images the processor gets:
boxes drawn, crops zoomed) as PNGs named `<n>_<view>_<k>.png`, and lists them under each sample.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from dopd.data import load_dataset_samples
from dopd.hparams import ConfigError, parse_config
from dopd.model import load_adapter
from dopd.model.paths import resolve_model_path
from dopd.train.dataset import PromptViewDataset

logger = logging.getLogger("dopd.render")


@dataclass
class RenderedView:
    name: str
    text: str
    num_tokens: int
    num_image_tokens: int
    num_images: int
    truncated: bool
    same_as: Optional[str] = None  # the teacher reads the student's own ids


@dataclass
class RenderedSample:
    uid: str
    has_privilege: bool
    views: list[RenderedView] = field(default_factory=list)
    response: Optional[str] = None
    response_tokens: Optional[int] = None
    image_files: list[str] = field(default_factory=list)


def _image_counts(adapter: Any, prompt: Any) -> tuple[int, int]:
    token = getattr(adapter, "image_token_id", None) if getattr(adapter, "is_vlm", False) else None
    n_tokens = sum(1 for t in prompt.input_ids if t == token) if token is not None else 0
    grid = prompt.mm_inputs.get("image_grid_thw") if prompt.mm_inputs else None
    return n_tokens, int(grid.shape[0]) if grid is not None else 0


def _decode(adapter: Any, ids: Sequence[int]) -> str:
    """Decoded with special tokens; a run of one image's vision tokens is written once with its count
    (`<|image_pad|>*64`): the counts are what matter there, and the text stays readable."""
    token = getattr(adapter, "image_token_id", None) if getattr(adapter, "is_vlm", False) else None
    if token is None:
        return adapter.tokenizer.decode(list(ids), skip_special_tokens=False)
    parts, run, start = [], 0, 0
    ids = list(ids)
    for i, t in enumerate(ids + [None]):
        if t == token:
            if run == 0:
                parts.append(adapter.tokenizer.decode(ids[start:i], skip_special_tokens=False))
            run += 1
            continue
        if run:
            parts.append(f"{adapter.tokenizer.convert_ids_to_tokens(token)}*{run}")
            run, start = 0, i
    parts.append(adapter.tokenizer.decode(ids[start:], skip_special_tokens=False))
    return "".join(parts)


def _view(name: str, adapter: Any, prompt: Any, same_as: Optional[str] = None) -> RenderedView:
    n_img_tokens, n_images = _image_counts(adapter, prompt)
    return RenderedView(name, _decode(adapter, prompt.input_ids), len(prompt.input_ids), n_img_tokens, n_images,
                        bool(prompt.truncated), same_as)


def save_view_images(dataset: Any, index: int, out_dir: str) -> list[str]:
    """Write each view's images of sample `index` to `out_dir` (`<index+1>_<view>_<k>.png`, k in placeholder order);
    the teacher's only when it renders a view of its own (else it gets the student's). Returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    plain, privileged, teacher = dataset.views(index)
    views = {"x": plain, "xp": privileged if privileged.has_privilege else None, "teacher": teacher}
    paths = []
    for name, view in views.items():
        for k, image in enumerate(view.images if view is not None else []):
            path = os.path.join(out_dir, f"{index + 1:03d}_{name}_{k + 1}.png")
            image.save(path)
            paths.append(path)
    return paths


def render_samples(cfg: Any, num_samples: int = 2,
                   save_images: Optional[str] = None) -> tuple[list[RenderedSample], dict[str, Any]]:
    """The rendered views of the first `num_samples` samples, and a header (models, template kwargs, stops).
    `save_images`: a folder to write every view's images to (see `save_view_images`)."""
    model_args, data_args = cfg.model, cfg.data
    names = data_args.dataset or data_args.eval_dataset
    if not names:
        raise ConfigError("`dataset` (or `eval_dataset`) is required: names from dataset_info.json")
    if not model_args.model_name_or_path:
        raise ConfigError("`model_name_or_path` is required: the student")
    samples = load_dataset_samples(data_args, names)[: max(0, int(num_samples))]
    if not samples:
        raise ConfigError(f"no samples in {names}")
    student_path = resolve_model_path(model_args.model_name_or_path, "student")
    adapter = load_adapter(student_path, model_args)
    teacher_adapter = None
    teacher_path = model_args.teacher_model_name_or_path
    if teacher_path and cfg.finetuning.stage != "sft":
        teacher_path = resolve_model_path(teacher_path, "teacher")
        teacher_adapter = load_adapter(teacher_path, model_args)
    sees_p = bool(cfg.distill.teacher_sees_privileged)
    dataset = PromptViewDataset(samples, adapter, data_args, teacher_adapter=teacher_adapter,
                                teacher_sees_privileged=sees_p)
    out: list[RenderedSample] = []
    for index, sample in enumerate(samples):
        item = dataset[index]
        rendered = RenderedSample(item.uid, item.has_privilege, response=item.response)
        rendered.views.append(_view("student, plain view x", adapter, item.plain))
        rendered.views.append(_view("student, privileged view x+p", adapter, item.privileged,
                                    None if item.has_privilege else "no privileged information: x+p is x"))
        if item.teacher is not None:
            shared = item.teacher is (item.privileged if sees_p else item.plain)
            rendered.views.append(_view(f"teacher view ({'x+p' if sees_p else 'x'})", teacher_adapter, item.teacher,
                                        "the student's own token ids" if shared else None))
        if save_images:
            rendered.image_files = save_view_images(dataset, index, save_images)
        if item.response:
            rendered.response_tokens = len(adapter.encode_response(item.response))
        out.append(rendered)
    header = {
        "student": student_path, "teacher": teacher_path if teacher_adapter is not None else None,
        "template_kwargs": adapter.template_kwargs, "cutoff_len": data_args.cutoff_len,
        "stop tokens": [adapter.tokenizer.convert_ids_to_tokens(t) for t in adapter.stop_token_ids],
        "end of turn": adapter.tokenizer.convert_ids_to_tokens(adapter.end_of_turn_id),
    }
    return out, header


def format_rendered(samples: Sequence[RenderedSample], header: dict[str, Any]) -> str:
    lines = [f"{key}: {value}" for key, value in header.items() if value is not None]
    for i, sample in enumerate(samples):
        lines.append("")
        lines.append(f"========== sample {i + 1}/{len(samples)}: {sample.uid} "
                     f"(privileged information: {'yes' if sample.has_privilege else 'no'})")
        for view in sample.views:
            counts = f"{view.num_tokens} tokens"
            if view.num_images or view.num_image_tokens:
                counts += f", {view.num_images} image(s), {view.num_image_tokens} image tokens"
            if view.truncated:
                counts += ", TRUNCATED to cutoff_len"
            lines.append(f"---------- {view.name}: {counts}" + (f" [{view.same_as}]" if view.same_as else ""))
            lines.append(view.text)
        if sample.image_files:
            lines.append("---------- images (x: plain view, xp: privileged view, teacher: the teacher's own view)")
            lines += sample.image_files
        if sample.response is not None:
            lines.append(f"---------- reference answer: {sample.response_tokens} tokens (with the end-of-turn token)")
            lines.append(sample.response)
    return "\n".join(lines)


_FLAGS = {"num_samples": ("--num-samples", "--num_samples", "-n"), "save_images": ("--save-images", "--save_images")}


def _pop_flags(overrides: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """`--num-samples N`, `--save-images DIR` (also `--flag=value` and `flag=value`) out of the overrides."""
    found, rest, items = {}, [], list(overrides)
    i = 0
    while i < len(items):
        arg, name = items[i], None
        for key, spellings in _FLAGS.items():
            if arg in spellings:
                if i + 1 >= len(items):
                    raise ConfigError(f"{arg} needs a value")
                found[key], name = items[i + 1], key
                i += 1
            elif arg.startswith(tuple(f"{s}=" for s in spellings + (key,))):
                found[key], name = arg.split("=", 1)[1], key
        if name is None:
            rest.append(arg)
        i += 1
    return found, rest


def run_render_cli(config_path: Optional[str], overrides: Sequence[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    flags, rest = _pop_flags(overrides)
    try:
        num = int(flags.get("num_samples", 2))
    except ValueError:
        raise ConfigError(f"--num-samples must be a number, got {flags['num_samples']!r}") from None
    cfg = parse_config(config_path, rest, with_training=False)
    samples, header = render_samples(cfg, num, save_images=flags.get("save_images"))
    print(format_rendered(samples, header))
    return 0
