"""Helpers for the data tests (a module name no other test folder uses)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image


def make_image(path: Path, size: tuple[int, int], colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (255, 255, 255))
    # a coloured left half makes crops and drawings checkable by pixel
    image.paste(Image.new("RGB", (size[0] // 2, size[1]), colour), (0, 0))
    image.save(path)
    return path


class Registry:
    """Write dataset files and dataset_info.json entries into one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.info: dict[str, Any] = {}

    def add(self, name: str, rows: Any, entry: dict[str, Any] | None = None, file_name: str | None = None) -> Path:
        file_name = file_name or f"{name}.json"
        path = self.root / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        if file_name.endswith(".jsonl"):
            path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
        elif rows is not None:
            path.write_text(rows if isinstance(rows, str) else json.dumps(rows))
        self.info[name] = {"file_name": file_name, **(entry or {})}
        (self.root / "dataset_info.json").write_text(json.dumps(self.info))
        return path

    def args(self, dataset: str, **kwargs: Any):
        from dopd.hparams import DataArguments

        return DataArguments(dataset=dataset, dataset_dir=str(self.root), **kwargs)


SHAREGPT = {
    "formatting": "sharegpt",
    "columns": {"messages": "messages", "images": "images", "privileged": "privileged"},
    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
}


def vqa_row(images: list[str], privileged: Any = None, question: str = "What is red?", answer: str = "Answer: A"):
    row = {
        "messages": [{"role": "user", "content": "<image>" * len(images) + question},
                     {"role": "assistant", "content": answer}],
        "images": images,
    }
    if privileged is not None:
        row["privileged"] = privileged
    return row
