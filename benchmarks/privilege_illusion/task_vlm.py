"""The VLM task of the privilege-illusion testbed, generated on the fly (issue 7).

A tiny image (56x56 px by default: 4 vision tokens for Qwen2-VL) holds two or three coloured shapes, one per
quadrant. The question names one shape by its colour and asks for its number of corners, with a short chain:

    x : <image>Question: how many corners has the red shape?
    p : the labelled box of the queried object, e.g. label `red triangle` + its box (dopd.data `boxes_text`,
        written in the student family's grounding convention: Qwen2-VL's <|box_start|>(x1,y1),(x2,y2)<|box_end|>)
    y : triangle: 3 corners. Answer: 3

As in the text task, the answer chain mixes three kinds of tokens:
- "triangle" is learnable from x (look at the shape of that colour) but with p it is a pure copy of the box label:
  a *shortcut* the deployed student never has;
- "3 corners" is *capability*: p does not contain it (shape -> corners);
- in a share `hidden_fraction` of questions the queried shape is under a grey cover and the question asks about
  "the shape under the grey cover": only p's label names it: an *information gap* (best held-out accuracy on those
  questions is a 1-in-3 guess).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .datasets_io import write_task_datasets

SYSTEM = "Answer briefly."
DATASET_TRAIN = "pi_vlm_train"
DATASET_EVAL = "pi_vlm_eval"
DATASET_MIXED = "pi_vlm_train_mixed"
# the privileged view as dopd.data's `boxes_text` processor renders it with the default `boxes_template`
BOXES_TEMPLATE = "\n\n[Privileged regions]\n{boxes}\n[End of regions]"
GROUNDING = "qwen2_vl"

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
SHAPES = {"circle": 0, "triangle": 3, "square": 4}  # shape -> corners
COVER = (128, 128, 128)


@dataclass
class VLMTaskSpec:
    num_train: int = 600
    num_eval: int = 100
    hidden_fraction: float = 0.25  # share of questions whose queried shape is covered (only p names it)
    image_size: int = 56
    seed: int = 0


def _draw(size: int, objs: list[dict[str, Any]], covered: int | None) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for i, o in enumerate(objs):
        x1, y1, x2, y2 = o["bbox"]
        if i == covered:
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=COVER)
            continue
        fill = COLOURS[o["colour"]]
        if o["shape"] == "circle":
            draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill)
        elif o["shape"] == "square":
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=fill)
        else:
            draw.polygon([((x1 + x2) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=fill)
    return image


def make_sample(rng: random.Random, spec: VLMTaskSpec, index: int, media_dir: Path, prefix: str) -> dict[str, Any]:
    """One sharegpt row (image written to media_dir) with the labelled box of the queried object as p."""
    size = spec.image_size
    cell = size // 2
    n = rng.randint(2, 3)
    quadrants = rng.sample(range(4), n)
    colours = rng.sample(list(COLOURS), n)
    objs = []
    for q, colour in zip(quadrants, colours):
        side = rng.randint(max(8, cell // 2), cell - 4)
        x0, y0 = (q % 2) * cell, (q // 2) * cell
        x1, y1 = x0 + rng.randint(2, cell - side - 2), y0 + rng.randint(2, cell - side - 2)
        objs.append({"colour": colour, "shape": rng.choice(list(SHAPES)), "bbox": [x1, y1, x1 + side, y1 + side]})
    target = rng.randrange(n)
    hidden = rng.random() < spec.hidden_fraction
    o = objs[target]
    name = f"{prefix}/{index:05d}.png"
    _draw(size, objs, target if hidden else None).save(media_dir / f"{index:05d}.png")
    what = "the shape under the grey cover" if hidden else f"the {o['colour']} shape"
    question = f"<image>Question: how many corners has {what}?"
    corners = SHAPES[o["shape"]]
    answer = f"{o['shape']}: {corners} corners. Answer: {corners}"
    label = f"covered {o['shape']}" if hidden else f"{o['colour']} {o['shape']}"
    return {
        "system": SYSTEM,
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        "images": [name],
        "privileged": {"boxes": [{"label": label, "bbox": list(o["bbox"])}]},
        "meta": {"hidden": hidden, "answer": corners, "shape": o["shape"]},
    }


def generate(spec: VLMTaskSpec, data_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, held-out rows); every image is a fresh draw (held-out images are new images)."""
    rng = random.Random(spec.seed)
    rows = {}
    for split, count in (("train", spec.num_train), ("eval", spec.num_eval)):
        media = data_dir / f"images_{split}"
        media.mkdir(parents=True, exist_ok=True)
        rows[split] = [make_sample(rng, spec, i, media, f"images_{split}") for i in range(count)]
    return rows["train"], rows["eval"]


def registry_entry(file_name: str) -> dict[str, Any]:
    """A dataset_info.json entry in the shape of data/dataset_info.json's vlm_demo (sharegpt, images, privileged)."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "system": "system", "images": "images", "privileged": "privileged"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"},
        "privilege": ["boxes_text"],
        "eval": {"extractor": "answer", "metric": "numeric"},
    }


def boxes_text(row: dict[str, Any], size: int) -> str:
    """p as `boxes_text` writes it for the qwen2_vl grounding (images are not resized: min = max pixels)."""
    from dopd.data import CONVENTIONS

    conv = CONVENTIONS[GROUNDING]
    lines = [conv.format_box(b["label"], b["bbox"], (size, size), (size, size)) for b in row["privileged"]["boxes"]]
    parts = ([conv.preamble] if conv.preamble else []) + [conv.join(lines)]
    return BOXES_TEMPLATE.format(boxes="\n".join(parts))


def write_registry(data_dir: str | Path, spec: VLMTaskSpec) -> dict[str, Any]:
    """Write images, train / held-out JSON files and dataset_info.json into `data_dir`; returns a summary."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    train, held_out = generate(spec, data_dir)
    write_task_datasets(data_dir, (DATASET_TRAIN, DATASET_EVAL, DATASET_MIXED), train, held_out, registry_entry,
                        lambda row: boxes_text(row, spec.image_size))
    hidden_eval = sum(r["meta"]["hidden"] for r in held_out) / len(held_out)
    ceiling = (1 - hidden_eval) + hidden_eval / len(SHAPES)  # every visible shape right, covered ones guessed
    example = json.loads(json.dumps(train[0]))
    example["privileged_text"] = boxes_text(train[0], spec.image_size).strip()
    return {"train": DATASET_TRAIN, "eval": DATASET_EVAL, "num_train": len(train), "num_eval": len(held_out),
            "hidden_fraction_eval": hidden_eval, "accuracy_ceiling_without_p": ceiling, "example": example,
            "image_size": spec.image_size, "answer_shares_eval": answer_shares(held_out)}


def answer_shares(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Share of each answer among `rows`: a student that always gives answer a scores answer_shares[a]."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row["meta"]["answer"])] = counts.get(str(row["meta"]["answer"]), 0) + 1
    return {k: v / len(rows) for k, v in sorted(counts.items())}
