"""Where annotations go: one JSON Lines data file appended per sample, a rejects file, a summary, and the
`dataset_info.json` entry that makes the output a registry dataset.

Every output row is its input row (every field kept; relative image paths made absolute, since the new file lives in
another folder) plus the `privileged` column and `source_uid` (the input sample's `<dataset>:<row>`), which is how a
rerun knows what is finished. A rerun skips samples already written and samples rejected for a reason that a retry
would not change (leak, unparseable answer); failed requests and samples rejected as input (unreadable, invalid,
without image: perhaps fixed since) are examined again.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Iterable, Optional

from dopd.data.converters import resolve_image
from dopd.data.registry import DatasetAttr
from dopd.data.sample import PrivilegedRecord

UID_FIELD = "source_uid"
RETRYABLE_REJECTS = ("request_failed", "invalid_sample", "unreadable", "no_image")  # re-examined on a rerun
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name", "file_name", "subset", "split",
            "folder", "num_samples", "annotate", "eval")
KIND_PRIVILEGE = {"hint": ["hint"], "boxes": ["boxes_text", "crops"]}


def _write_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    """The rows of a JSON Lines file. A torn last line (a run killed mid-write) is cut off the file; any other
    unreadable line is skipped."""
    if not os.path.isfile(path):
        return []
    with open(path, "rb") as fh:
        lines = fh.readlines()
    rows, kept = [], 0
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            if i == len(lines) - 1:
                with open(path, "r+b") as fh:
                    fh.truncate(kept)
            continue
        finally:
            kept += len(line)
    return rows


class AnnotationStore:
    def __init__(self, out_dir: str, name: str) -> None:
        self.out_dir = os.path.abspath(out_dir)
        self.name = name
        os.makedirs(self.out_dir, exist_ok=True)
        self.data_path = os.path.join(self.out_dir, f"{name}.jsonl")
        self.rejects_path = os.path.join(self.out_dir, f"{name}.rejects.jsonl")
        self.summary_path = os.path.join(self.out_dir, f"{name}.summary.json")
        self.info_path = os.path.join(self.out_dir, "dataset_info.json")

    # ------------------------------------------------------------------ resume
    def finished_uids(self) -> set[str]:
        done = {row.get(UID_FIELD) for row in _read_jsonl(self.data_path)}
        final = {}
        for row in _read_jsonl(self.rejects_path):
            final[row.get("uid")] = row.get("reason") not in RETRYABLE_REJECTS
        return {uid for uid in done if uid} | {uid for uid, is_final in final.items() if is_final and uid}

    # ------------------------------------------------------------------ appending
    @staticmethod
    def _append(path: str, row: dict[str, Any]) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            fh.flush()

    def add(self, row: dict[str, Any]) -> None:
        self._append(self.data_path, row)

    def reject(self, uid: str, reason: str, detail: str, answer: Optional[str] = None) -> None:
        row = {"uid": uid, "reason": reason, "detail": detail}
        if answer is not None:
            row["answer"] = answer[:4000]
        self._append(self.rejects_path, row)

    def sort_rows(self) -> None:
        """Rewrite the data file in input order (rows are appended in completion order)."""
        rows = _read_jsonl(self.data_path)
        rows.sort(key=lambda r: int(str(r.get(UID_FIELD, "0")).rsplit(":", 1)[-1] or 0))
        _write_atomic(self.data_path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))

    def write_summary(self, summary: dict[str, Any]) -> None:
        _write_atomic(self.summary_path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------------ registry entry
    def write_entry(self, source_entry: dict[str, Any], kind: str) -> dict[str, Any]:
        """The new entry (the input's formatting, columns and tags; `privileged` column; processors for p), merged
        into `<annotate_output_dir>/dataset_info.json`."""
        entry = {k: v for k, v in source_entry.items() if k not in HUB_KEYS}
        entry["file_name"] = os.path.basename(self.data_path)
        entry["columns"] = {**(source_entry.get("columns") or {}), "privileged": "privileged"}
        given = source_entry.get("privilege") or []
        names = [n.strip() for n in (given.split(",") if isinstance(given, str) else given) if n.strip()]
        entry["privilege"] = [n for n in names if n != "none"] + [n for n in KIND_PRIVILEGE[kind] if n not in names]
        info: dict[str, Any] = {}
        if os.path.isfile(self.info_path):
            with open(self.info_path, encoding="utf-8") as fh:
                info = json.load(fh)
        info[self.name] = entry
        _write_atomic(self.info_path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        return entry


# ------------------------------------------------------------------------------------------------ output rows
def record_to_json(record: PrivilegedRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if record.hint:
        out["hint"] = record.hint
    if record.boxes:
        out["boxes"] = [{"label": b.label, "bbox": list(b.bbox), "image": b.image} for b in record.boxes]
    if record.crops:
        out["crops"] = [{"bbox": list(c.bbox), "image": c.image} for c in record.crops]
    return out


def _absolute_images(value: Any, attr: DatasetAttr, where: str) -> Any:
    if isinstance(value, list):
        return [_absolute_images(v, attr, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        return {**value, "path": resolve_image(value["path"], attr.media_dir, where)}
    if isinstance(value, str):
        return resolve_image(value, attr.media_dir, where)
    return value


def _absolute_parts(turns: Iterable[Any], attr: DatasetAttr) -> list[Any]:
    """openai formatting: image content parts of each turn with absolute paths."""
    content_tag = attr.tags.get("content_tag", "content")
    out = []
    for turn in turns:
        content = turn.get(content_tag) if isinstance(turn, dict) else None
        if isinstance(content, list):
            parts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in ("image", "image_url"):
                    value = part.get(kind)
                    if isinstance(value, dict) and isinstance(value.get("url"), str):
                        value = {**value, "url": resolve_image(value["url"], attr.media_dir, kind)}
                    elif isinstance(value, str):
                        value = resolve_image(value, attr.media_dir, kind)
                    part = {**part, kind: value}
                parts.append(part)
            turn = {**turn, content_tag: parts}
        out.append(turn)
    return out


def output_row(row: dict[str, Any], attr: DatasetAttr, uid: str, record: PrivilegedRecord) -> dict[str, Any]:
    """The input row, image paths absolute, plus `privileged` (the merged record) and `source_uid`."""
    out = dict(row)
    images_col = attr.columns.get("images")
    if images_col and out.get(images_col) is not None:
        out[images_col] = _absolute_images(out[images_col], attr, images_col)
    messages_col = attr.columns.get("messages")
    if attr.formatting == "openai" and messages_col and isinstance(out.get(messages_col), list):
        out[messages_col] = _absolute_parts(out[messages_col], attr)
    out["privileged"] = record_to_json(record)
    out[UID_FIELD] = uid
    return out
