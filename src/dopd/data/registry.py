"""`dataset_info.json` entries (LLaMA-Factory's schema plus the `privileged` column and `privilege` key).

Only what is needed to find and read a dataset lives here; reading rows is `loader`, converting them `converters`.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

from dopd.hparams import ConfigError

from .privilege import DEFAULT_PRIVILEGE, parse_privilege_names

FORMATTINGS = ("alpaca", "sharegpt", "openai")

# LLaMA-Factory's column names, plus ours (`privileged`).
COLUMN_NAMES = (
    "prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios",
    "chosen", "rejected", "kto_tag", "privileged",
)
TAG_NAMES = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")

# LLaMA-Factory's defaults per formatting.
DEFAULT_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output"},
    "sharegpt": {"messages": "conversations"},
    "openai": {"messages": "messages"},
}
DEFAULT_TAGS = {
    "sharegpt": {
        "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
        "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system",
    },
    "openai": {
        "role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
        "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system",
    },
}
UNSUPPORTED_COLUMNS = {
    "videos": "video inputs are not supported",
    "audios": "audio inputs are not supported",
    "tools": "tool-calling datasets are not supported",
}


@dataclass
class DatasetAttr:
    """One registry entry, resolved: where the rows are and which columns/tags hold what."""

    name: str
    load_from: str  # "file" | "hf_hub"
    path: str  # absolute file/folder path, or the hub id
    formatting: str = "alpaca"
    subset: Optional[str] = None
    split: str = "train"
    folder: Optional[str] = None
    num_samples: Optional[int] = None
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    privilege: list[str] = field(default_factory=list)
    media_dir: str = "."


def load_dataset_info(dataset_dir: str) -> dict[str, Any]:
    path = os.path.join(dataset_dir, "dataset_info.json")
    if not os.path.isfile(path):
        raise ConfigError(f"no dataset registry at {path} (set `dataset_dir` to the folder holding dataset_info.json)")
    with open(path, encoding="utf-8") as fh:
        try:
            info = json.load(fh)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{path}: expected an object mapping dataset names to entries")
    return info


def split_names(names: Union[str, Sequence[str], None]) -> list[str]:
    if names is None:
        return []
    if isinstance(names, str):
        names = names.split(",")
    return [n.strip() for n in names if n and n.strip()]


def get_dataset_attr(name: str, info: dict[str, Any], dataset_dir: str, media_dir: Optional[str] = None,
                     privilege_override: Optional[str] = None) -> DatasetAttr:
    """Resolve entry `name` of `info` (the parsed dataset_info.json in `dataset_dir`)."""
    dataset_dir = os.path.abspath(dataset_dir)
    where = f"{os.path.join(dataset_dir, 'dataset_info.json')}: dataset `{name}`"
    if name not in info:
        close = difflib.get_close_matches(name, list(info), n=3)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise ConfigError(f"dataset `{name}` is not in {os.path.join(dataset_dir, 'dataset_info.json')}{hint}")
    entry = info[name]
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: the entry must be an object")
    load_from, path = _source(entry, dataset_dir, where)
    formatting = _formatting(entry, where)
    columns, tags = _columns(entry, formatting, where), _tags(entry, formatting, where)
    privilege = _privilege(entry, privilege_override, where)
    num_samples = entry.get("num_samples")
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples <= 0):
        raise ConfigError(f"{where}: `num_samples` must be a positive integer")
    return DatasetAttr(
        name=name, load_from=load_from, path=path, formatting=formatting, subset=entry.get("subset"),
        split=entry.get("split", "train"), folder=entry.get("folder"), num_samples=num_samples,
        columns=columns, tags=tags, privilege=privilege,
        media_dir=os.path.abspath(media_dir) if media_dir else dataset_dir,
    )


def _source(entry: dict[str, Any], dataset_dir: str, where: str) -> tuple[str, str]:
    """(load_from, path): `hf_hub_url` or `file_name`; LLaMA-Factory's other sources are refused by name."""
    if entry.get("hf_hub_url"):
        return "hf_hub", entry["hf_hub_url"]
    if entry.get("file_name"):
        return "file", os.path.join(dataset_dir, entry["file_name"])
    other = [k for k in ("ms_hub_url", "om_hub_url", "script_url", "cloud_file_name") if entry.get(k)]
    what = f"only {', '.join(other)} given, which is not supported" if other else "no `file_name` or `hf_hub_url`"
    raise ConfigError(f"{where}: {what}; give `file_name` (a local file or folder) or `hf_hub_url`")


def _formatting(entry: dict[str, Any], where: str) -> str:
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise ConfigError(f"{where}: unknown formatting `{formatting}` (use one of {', '.join(FORMATTINGS)})")
    if entry.get("ranking"):
        raise ConfigError(
            f"{where}: preference (`ranking`) datasets are not supported; DOPD needs prompts only, so an entry "
            "without `ranking` whose conversations end with the user turn works"
        )
    return formatting


def _columns(entry: dict[str, Any], formatting: str, where: str) -> dict[str, str]:
    """The formatting's default columns, overridden by the entry's `columns` (unknown / unsupported keys refused)."""
    columns = dict(DEFAULT_COLUMNS[formatting])
    given_columns = entry.get("columns") or {}
    if not isinstance(given_columns, dict):
        raise ConfigError(f"{where}: `columns` must be an object")
    for key, value in given_columns.items():
        if key not in COLUMN_NAMES:
            raise ConfigError(f"{where}: unknown column key `{key}` (known: {', '.join(COLUMN_NAMES)})")
        if key in UNSUPPORTED_COLUMNS and value:
            raise ConfigError(f"{where}: column `{key}`: {UNSUPPORTED_COLUMNS[key]}")
        if value:
            columns[key] = value
    return columns


def _tags(entry: dict[str, Any], formatting: str, where: str) -> dict[str, str]:
    """The formatting's default tags, overridden by the entry's `tags` (unknown keys refused)."""
    tags = dict(DEFAULT_TAGS.get(formatting, {}))
    given_tags = entry.get("tags") or {}
    if not isinstance(given_tags, dict):
        raise ConfigError(f"{where}: `tags` must be an object")
    for key, value in given_tags.items():
        if key not in TAG_NAMES:
            raise ConfigError(f"{where}: unknown tag key `{key}` (known: {', '.join(TAG_NAMES)})")
        tags[key] = value
    return tags


def _privilege(entry: dict[str, Any], override: Optional[str], where: str) -> list[str]:
    """Privilege processor names: the config's `privilege` override, else the entry's, else the default."""
    try:
        if override:
            return parse_privilege_names(override)
        if "privilege" in entry:
            return parse_privilege_names(entry["privilege"])
        return list(DEFAULT_PRIVILEGE)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def get_dataset_attrs(data_args: Any, names: Union[str, Sequence[str], None] = None) -> list[DatasetAttr]:
    """Entries for `names` (default: `data_args.dataset`) from `data_args.dataset_dir`/dataset_info.json."""
    names = split_names(names if names is not None else data_args.dataset)
    if not names:
        raise ConfigError("no dataset given: set `dataset` (names from dataset_info.json, comma-separated)")
    info = load_dataset_info(data_args.dataset_dir)
    return [
        get_dataset_attr(n, info, data_args.dataset_dir, data_args.media_dir, data_args.privilege) for n in names
    ]
