"""Registry entries -> rows -> canonical samples, per dataset; then several datasets mixed into one list.

JSON and JSON Lines are read with the standard library rather than `datasets`: Arrow needs one type per column,
and the `privileged` column is legitimately a string in one row and an object in the next; reading rows as they are
also lets a broken JSON Lines line count as one invalid sample instead of failing the whole file. CSV, Parquet and
Arrow files, and hub datasets, go through `datasets`.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence, Union

from dopd.hparams import ConfigError

from .converters import to_canonical
from .privilege import check_templates
from .registry import DatasetAttr, get_dataset_attrs
from .sample import CanonicalSample, SampleError, SampleIssue

logger = logging.getLogger(__name__)

FILE_TYPES = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
NUM_SAMPLES_SEED = 0  # `num_samples` draws the same rows on every run


@dataclass
class LoadedDataset:
    attr: DatasetAttr
    samples: list[CanonicalSample] = field(default_factory=list)
    issues: list[SampleIssue] = field(default_factory=list)  # rows that could not be converted
    num_rows: int = 0
    column_problem: Optional[str] = None  # `columns.privileged` names a key that no row has (see below)

    @property
    def name(self) -> str:
        return self.attr.name


Row = tuple[str, Any]  # (source file, row) where row is a dict, or a SampleError for an unreadable row


def _file_type(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FILE_TYPES:
        raise ConfigError(f"{path}: unsupported file type `{ext}` (use {', '.join(FILE_TYPES)})")
    return FILE_TYPES[ext]


def _read_json(path: str) -> list[Row]:
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a JSON list of samples, got {type(data).__name__}")
    return [(path, row) for row in data]


def _read_jsonl(path: str) -> list[Row]:
    rows: list[Row] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append((path, json.loads(line)))
            except json.JSONDecodeError as err:
                rows.append((path, SampleError("<line>", f"line {lineno} is not valid JSON: {err}")))
    return rows


def _read_with_datasets(path: str, kind: str) -> list[Row]:
    import datasets

    try:
        table = datasets.load_dataset(kind, data_files=[path], split="train")
    except Exception as err:  # noqa: BLE001 - any reader failure is a user-fixable file problem
        raise ConfigError(f"{path}: cannot read as {kind}: {err}") from None
    return [(path, row) for row in table.to_list()]


def _read_file(path: str) -> list[Row]:
    kind = _file_type(path)
    if kind == "json":
        return _read_json(path)
    if kind == "jsonl":
        return _read_jsonl(path)
    return _read_with_datasets(path, kind)


def _files(attr: DatasetAttr) -> list[str]:
    if os.path.isdir(attr.path):
        files = sorted(
            os.path.join(attr.path, f) for f in os.listdir(attr.path)
            if os.path.splitext(f)[1].lower() in FILE_TYPES and not f.startswith(".")
        )
        if not files:
            raise ConfigError(f"dataset `{attr.name}`: folder {attr.path} holds no {'/'.join(FILE_TYPES)} files")
        return files
    if not os.path.isfile(attr.path):
        raise ConfigError(f"dataset `{attr.name}`: file not found: {attr.path}")
    return [attr.path]


def hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", os.environ.get("HF_DATASETS_OFFLINE", ""))
    return flag.strip().upper() in ("1", "ON", "YES", "TRUE")


def _read_hub(attr: DatasetAttr) -> list[Row]:
    source = f"hf://datasets/{attr.path}"
    if hub_offline():
        raise ConfigError(
            f"dataset `{attr.name}` lives on the Hugging Face hub ({attr.path}) but the hub is offline "
            "(HF_HUB_OFFLINE=1): download it once and point a `file_name` entry at the local copy"
        )
    import datasets

    try:
        table = datasets.load_dataset(attr.path, name=attr.subset, data_dir=attr.folder, split=attr.split)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"dataset `{attr.name}`: cannot load {attr.path} from the hub: {err}") from None
    return [(source, row) for row in table.to_list()]


def read_rows(attr: DatasetAttr) -> list[Row]:
    """All rows of the dataset, in order (the files of a folder in sorted order)."""
    if attr.load_from == "hf_hub":
        return _read_hub(attr)
    rows: list[Row] = []
    for path in _files(attr):
        rows.extend(_read_file(path))
    return rows


def select_rows(num_rows: int, num_samples: Optional[int], max_samples: Optional[int]) -> list[int]:
    """LLaMA-Factory's `num_samples` (random rows; every row once before any repeats) then `max_samples` (first N)."""
    indices = list(range(num_rows))
    if num_samples is not None and num_rows:
        rng = random.Random(NUM_SAMPLES_SEED)
        rng.shuffle(indices)
        extra = [rng.randrange(num_rows) for _ in range(max(0, num_samples - num_rows))]
        indices = indices[:num_samples] + extra
    if max_samples is not None:
        indices = indices[:max_samples]
    return indices


KEY_MATCH_CUTOFF = 0.8  # difflib ratio from which an unknown row key is taken for a misspelled column


def _misspelled_keys(row: dict[str, Any], attr: DatasetAttr) -> Iterator[SampleError]:
    """Unknown keys of `row` that look like a configured column the row lacks (`privilegd` for `privileged`): the
    column's content would otherwise be dropped without a word. Other unknown keys (ids, pass rates) are allowed."""
    import difflib

    known = set(attr.columns.values())
    missing = [c for c in known if c not in row]
    for key in row:
        if key in known or row[key] is None or not missing:
            continue
        close = difflib.get_close_matches(str(key), missing, n=1, cutoff=KEY_MATCH_CUTOFF)
        if close:
            role = next(r for r, c in attr.columns.items() if c == close[0])
            yield SampleError(str(key), f"unknown key; did you mean `{close[0]}` (the dataset's {role} column)?",
                              kind="privileged" if role == "privileged" else "format")


def _blank_hint(row: dict[str, Any], attr: DatasetAttr) -> Optional[SampleError]:
    """An empty or blank hint: p that is there but says nothing (an annotation that failed, a cell left empty). A
    sample without p leaves the column out or null."""
    column = attr.columns.get("privileged")
    raw = row.get(column) if column else None
    where, hint = column, raw
    if isinstance(raw, dict):
        where, hint = f"{column}.hint", raw.get("hint")
    if isinstance(hint, str) and not hint.strip():
        return SampleError(str(where), f"empty hint ({hint!r}); give the hint, or leave `{column}` out (or null) for "
                           "a sample without privileged information", kind="privileged")
    return None


def row_issues(row: dict[str, Any], attr: DatasetAttr) -> list[SampleError]:
    """What a row says about p that conversion does not catch: a blank hint, a misspelled column key."""
    blank = _blank_hint(row, attr)
    return ([blank] if blank else []) + list(_misspelled_keys(row, attr))


def privileged_column_problem(attr: DatasetAttr, rows: list[Row]) -> Optional[str]:
    """A `columns.privileged` that no row has names the wrong column (or data not annotated yet): no sample has p.
    A method that needs p refuses it (`validate`, `check`); others get a warning. Not checked when the processors
    read no column (`privilege: reference` or none)."""
    column = attr.columns.get("privileged")
    dicts = [row for _, row in rows if isinstance(row, dict)]
    if not column or not dicts or not set(attr.privilege) - {"reference"} or any(column in row for row in dicts):
        return None
    import difflib

    seen = sorted({str(k) for row in dicts for k in row})
    close = difflib.get_close_matches(column, seen, n=1, cutoff=0.6)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    return (f"dataset `{attr.name}`: its registry entry's columns.privileged is `{column}`, but no row of "
            f"{attr.path} has that key (keys: {', '.join(seen)}){hint}")


def load_dataset(attr: DatasetAttr, max_samples: Optional[int] = None) -> LoadedDataset:
    """Read and convert one dataset. Rows that cannot be converted become issues, not exceptions;
    a missing or unparsable file and an empty dataset raise ConfigError."""
    rows = read_rows(attr)
    if not rows:
        raise ConfigError(f"dataset `{attr.name}`: {attr.path} holds no samples")
    loaded = LoadedDataset(attr=attr, column_problem=privileged_column_problem(attr, rows))
    for index in select_rows(len(rows), attr.num_samples, max_samples):
        source, row = rows[index]
        loaded.num_rows += 1
        try:
            if isinstance(row, SampleError):
                raise row
            sample = to_canonical(row, index, attr, source)
        except SampleError as err:
            loaded.issues.append(SampleIssue(attr.name, source, index, err.field, err.reason, err.kind))
            continue
        loaded.samples.append(sample)  # like any invalid sample, one with row issues is dropped by validation
        loaded.issues += [SampleIssue(attr.name, source, index, e.field, e.reason, e.kind)
                          for e in row_issues(row, attr)]
    return loaded


def load_datasets(data_args: Any, names: Union[str, Sequence[str], None] = None) -> list[LoadedDataset]:
    check_templates(data_args)
    return [load_dataset(attr, data_args.max_samples) for attr in get_dataset_attrs(data_args, names)]


def _probabilities(data_args: Any, count: int) -> Optional[list[float]]:
    if not data_args.interleave_probs:
        return None
    try:
        probs = [float(p) for p in str(data_args.interleave_probs).split(",")]
    except ValueError:
        raise ConfigError(f"interleave_probs: expected numbers, got {data_args.interleave_probs!r}") from None
    if len(probs) != count or any(p < 0 for p in probs) or sum(probs) <= 0:
        raise ConfigError(f"interleave_probs: need {count} non-negative numbers (one per dataset), got {probs}")
    return probs


def _interleave(parts: list[list[Any]], probs: Optional[list[float]], until_all: bool, seed: int) -> Iterator[Any]:
    """`datasets.interleave_datasets` on lists: round-robin without probabilities, else random picks with `seed`;
    stop when a picked list has run out (under-sampling) or once every list has run out (over-sampling)."""
    keep = [i for i, part in enumerate(parts) if part]
    parts = [parts[i] for i in keep]
    probs = [probs[i] for i in keep] if probs is not None else None
    if not parts:
        return
    rng = random.Random(seed)
    positions = [0] * len(parts)
    exhausted = [False] * len(parts)
    step = 0
    while True:
        i = step % len(parts) if probs is None else rng.choices(range(len(parts)), weights=probs)[0]
        step += 1
        if positions[i] >= len(parts[i]):
            if not until_all:
                return
            positions[i] = 0
        yield parts[i][positions[i]]
        positions[i] += 1
        if positions[i] >= len(parts[i]):
            exhausted[i] = True
            if until_all and all(exhausted):
                return


def mix_samples(parts: list[list[CanonicalSample]], data_args: Any, seed: int = 42) -> list[CanonicalSample]:
    """Combine datasets by `mix_strategy`: concat | interleave_under | interleave_over."""
    if len(parts) == 1:
        return list(parts[0])
    strategy = data_args.mix_strategy
    if strategy == "concat":
        return [s for part in parts for s in part]
    if strategy not in ("interleave_under", "interleave_over"):
        raise ConfigError(f"mix_strategy: unknown `{strategy}` (use concat, interleave_under or interleave_over)")
    probs = _probabilities(data_args, len(parts))
    return list(_interleave(parts, probs, strategy == "interleave_over", seed))


def load_dataset_samples(
    data_args: Any, names: Union[str, Sequence[str], None] = None, seed: int = 42
) -> list[CanonicalSample]:
    """Read the registry entries `names` (default: `data_args.dataset`), convert and mix them.

    Strict: any row that cannot be converted raises ConfigError. The trainer uses
    `dopd.data.validate.load_and_validate`, which also checks images and boxes and drops invalid samples."""
    loaded = load_datasets(data_args, names)
    issues = [issue for d in loaded for issue in d.issues]
    if issues:
        shown = "\n  ".join(str(i) for i in issues[:5])
        more = f"\n  ... and {len(issues) - 5} more" if len(issues) > 5 else ""
        raise ConfigError(f"{len(issues)} sample(s) cannot be read:\n  {shown}{more}\n"
                          "(run `dopd-cli check-data` for a full report)")
    return mix_samples([d.samples for d in loaded], data_args, seed)
