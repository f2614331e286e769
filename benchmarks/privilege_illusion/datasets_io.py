"""Writing a testbed task as registry datasets (shared by the text and VLM tasks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable


def write_task_datasets(
    data_dir: Path,
    names: tuple[str, str, str],
    train: list[dict[str, Any]],
    held_out: list[dict[str, Any]],
    registry_entry: Callable[[str], dict[str, Any]],
    privileged_text: Callable[[dict[str, Any]], str],
) -> None:
    """Write train / held-out / mixed JSON files and their dataset_info.json; `names` = (train, eval, mixed).

    The mixed set holds every training row twice: as x, and as x+p written into the prompt (no privileged column),
    so that one plain-view SFT run teaches the student both views (its privileged view S(.|x,p) must mean something).
    """
    train_name, eval_name, mixed_name = names
    info: dict[str, Any] = {}
    mixed = []
    for row in train:
        mixed.append({k: v for k, v in row.items() if k != "privileged"})
        with_p = json.loads(json.dumps(mixed[-1]))
        with_p["messages"][0]["content"] += privileged_text(row)
        mixed.append(with_p)
    for name, rows in ((train_name, train), (eval_name, held_out), (mixed_name, mixed)):
        (data_dir / f"{name}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
        info[name] = registry_entry(f"{name}.json")
    (data_dir / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
