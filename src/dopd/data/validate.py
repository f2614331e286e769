"""Check every sample before anything trains; report per dataset; drop or refuse invalid samples.

Each issue names the file, the sample index and the field. Conversion problems (missing columns, roles that do not
alternate, a malformed privileged record) come from the loader; this module adds what needs the converted sample
and the images: placeholder counts, images that open, boxes and crops inside their image.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence, Union

from PIL import Image

from dopd.hparams import ConfigError

from .loader import LoadedDataset, load_datasets, mix_samples
from .privilege import PROCESSORS, crop_box, processor_names
from .sample import IMAGE_PLACEHOLDER, CanonicalSample, SampleIssue
from .vision import MAX_ASPECT_RATIO, aspect_ratio, oriented_size

logger = logging.getLogger(__name__)

PROGRESS_MIN_SAMPLES = 500  # show a progress bar from this many samples on


@dataclass
class _Columns:
    """Names used for fields in messages: the dataset's own column names where known."""

    messages: str = "messages"
    images: str = "images"
    privileged: str = "privileged"

    @classmethod
    def of(cls, columns: Optional[dict[str, str]]) -> "_Columns":
        columns = columns or {}
        return cls(
            messages=columns.get("messages") or columns.get("prompt") or "messages",
            images=columns.get("images") or "images",
            privileged=columns.get("privileged") or "privileged",
        )


class _ImageCache:
    """(width, height) as displayed (EXIF orientation applied) or the reason an image cannot be used, once per
    path."""

    def __init__(self) -> None:
        self._cache: dict[str, Union[tuple[int, int], str]] = {}

    def get(self, path: str) -> Union[tuple[int, int], str]:
        if path not in self._cache:
            try:
                with Image.open(path) as image:
                    image.verify()  # must come right after open
                with Image.open(path) as image:
                    size = oriented_size(image)
                ratio = aspect_ratio(*size)
                self._cache[path] = size if ratio <= MAX_ASPECT_RATIO else (
                    f"{path}: aspect ratio {ratio:.1f} ({size[0]}x{size[1]} pixels) exceeds {MAX_ASPECT_RATIO}, "
                    "which the Qwen-VL image processing refuses")
            except FileNotFoundError:
                self._cache[path] = f"file not found: {path}"
            except Exception as err:  # noqa: BLE001 - PIL raises many kinds for a broken file
                self._cache[path] = f"cannot open {path}: {err}"
        return self._cache[path]


def _structure_issues(sample: CanonicalSample, cols: _Columns) -> Iterable[tuple[str, str, str]]:
    """(field, reason, kind) for the prompt's shape, as the converters guarantee it (hand-made samples too)."""
    roles = [m.get("role") for m in sample.messages]
    start = 1 if roles and roles[0] == "system" else 0
    if len(roles) == start:
        yield cols.messages, "the prompt has no user turn", "roles"
    for i in range(start, len(roles)):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if roles[i] != expected:
            yield f"{cols.messages}[{i}]", f"expected a {expected} turn, got {roles[i]}", "roles"
            break
    else:
        if len(roles) > start and roles[-1] != "user":
            yield cols.messages, "the prompt must end with a user turn", "roles"
    placeholders = sum(str(m.get("content", "")).count(IMAGE_PLACEHOLDER) for m in sample.messages)
    if placeholders != len(sample.images):
        yield (cols.images, f"{placeholders} `{IMAGE_PLACEHOLDER}` placeholder(s) in the prompt but "
               f"{len(sample.images)} image(s)", "placeholders")
    if sample.response and IMAGE_PLACEHOLDER in sample.response:
        yield cols.messages, f"the reference answer contains `{IMAGE_PLACEHOLDER}`", "placeholders"
    priv = sample.privileged
    if priv.hint and IMAGE_PLACEHOLDER in priv.hint:
        yield f"{cols.privileged}.hint", f"contains `{IMAGE_PLACEHOLDER}`", "privileged"
    for i, box in enumerate(priv.boxes):
        if IMAGE_PLACEHOLDER in box.label:
            yield f"{cols.privileged}.boxes[{i}].label", f"contains `{IMAGE_PLACEHOLDER}`", "privileged"


def _region_issue(bbox: Sequence[float], image: int, sizes: list[Any], is_crop: bool = False) -> Optional[str]:
    if not 0 <= image < len(sizes):
        return f"refers to image {image} but the sample has {len(sizes)} image(s)"
    size = sizes[image]
    if isinstance(size, str):
        return None  # the image itself is reported
    x1, y1, x2, y2 = bbox
    w, h = size
    if not (x1 < x2 and y1 < y2):
        return f"{list(bbox)} is empty (need x1 < x2 and y1 < y2)"
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        return f"{list(bbox)} lies outside image {image} ({w}x{h} pixels)"
    if is_crop:  # a crop becomes an image of its own: it needs whole pixels and an aspect ratio the model takes
        cx1, cy1, cx2, cy2 = crop_box(bbox)
        cw, ch = cx2 - cx1, cy2 - cy1
        if cw < 1 or ch < 1:
            return f"{list(bbox)} is less than one pixel wide or high once rounded to pixels"
        if aspect_ratio(cw, ch) > MAX_ASPECT_RATIO:
            return (f"{list(bbox)} has aspect ratio {aspect_ratio(cw, ch):.1f} ({cw}x{ch} pixels), more than "
                    f"{MAX_ASPECT_RATIO}, which the Qwen-VL image processing refuses")
    return None


def _media_issues(sample: CanonicalSample, cols: _Columns, cache: _ImageCache) -> Iterable[tuple[str, str, str]]:
    sizes = [cache.get(path) for path in sample.images]
    for k, size in enumerate(sizes):
        if isinstance(size, str):
            yield f"{cols.images}[{k}]", size, "image"
    for i, box in enumerate(sample.privileged.boxes):
        reason = _region_issue(box.bbox, box.image, sizes)
        if reason:
            field_ = "image" if reason.startswith("refers") else "bbox"
            yield f"{cols.privileged}.boxes[{i}].{field_}", reason, "box"
    for i, crop in enumerate(sample.privileged.crops):
        reason = _region_issue(crop.bbox, crop.image, sizes, is_crop=True)
        if reason:
            yield f"{cols.privileged}.crops[{i}]", reason, "box"


def validate_samples(
    samples: Sequence[CanonicalSample],
    columns: Optional[dict[str, str]] = None,
    check_images: bool = True,
    progress: Optional[bool] = None,
) -> list[SampleIssue]:
    """Every problem of every sample. `columns` (a registry entry's) only makes field names match the file.
    Images are opened (header and integrity), never decoded into memory for good."""
    cols, cache = _Columns.of(columns), _ImageCache()
    if progress is None:
        progress = len(samples) >= PROGRESS_MIN_SAMPLES
    iterator: Iterable[CanonicalSample] = samples
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(samples, desc="checking samples", unit="sample")
    issues = []
    for sample in iterator:
        found = list(_structure_issues(sample, cols))
        if check_images:
            found += list(_media_issues(sample, cols, cache))
        issues += [SampleIssue(sample.dataset, sample.source_file, sample.index, f, r, k) for f, r, k in found]
    return issues


@dataclass
class DatasetReport:
    dataset: str
    source: str
    num_samples: int
    issues: list[SampleIssue] = field(default_factory=list)

    @property
    def invalid_indices(self) -> set[int]:
        return {issue.index for issue in self.issues}

    @property
    def num_invalid(self) -> int:
        return len(self.invalid_indices)

    @property
    def invalid_fraction(self) -> float:
        return self.num_invalid / self.num_samples if self.num_samples else 0.0

    def summary(self, max_ids: int = 5, max_examples: int = 3) -> str:
        lines = [f"{self.dataset} ({self.source}): {self.num_samples} samples, "
                 f"{self.num_samples - self.num_invalid} ok, {self.num_invalid} invalid "
                 f"({100 * self.invalid_fraction:.1f}%)"]
        groups: "OrderedDict[str, list[SampleIssue]]" = OrderedDict()
        for issue in self.issues:
            groups.setdefault(issue.kind, []).append(issue)
        for kind, issues in groups.items():
            uids = list(dict.fromkeys(i.uid for i in issues))
            more = f", ... (+{len(uids) - max_ids})" if len(uids) > max_ids else ""
            lines.append(f"  {kind}: {len(issues)} issue(s) in {len(uids)} sample(s): "
                         f"{', '.join(uids[:max_ids])}{more}")
            lines += [f"    {issue}" for issue in issues[:max_examples]]
        return "\n".join(lines)


def validate_dataset(loaded: LoadedDataset, check_images: bool = True) -> DatasetReport:
    """Conversion issues from loading plus every check of `validate_samples`, for one dataset."""
    issues = list(loaded.issues) + validate_samples(loaded.samples, loaded.attr.columns, check_images)
    issues.sort(key=lambda i: i.index)
    return DatasetReport(loaded.name, loaded.attr.path, loaded.num_rows, issues)


def valid_samples(loaded: LoadedDataset, report: DatasetReport) -> list[CanonicalSample]:
    bad = report.invalid_indices
    return [s for s in loaded.samples if s.index not in bad]


# What each built-in processor reads; a processor registered elsewhere is taken to use any privileged record.
_PROCESSOR_USES = {
    "hint": lambda s: bool(s.privileged.hint and s.privileged.hint.strip()),
    "boxes_text": lambda s: bool(s.privileged.boxes),
    "boxes_draw": lambda s: bool(s.privileged.boxes),
    "crops": lambda s: bool(s.privileged.crops),
    "reference": lambda s: bool(s.response and s.response.strip()),
}


def has_privilege(sample: CanonicalSample, data_args: Optional[Any] = None) -> bool:
    """Whether the sample's privileged view differs from its plain view: one of its processors (or
    `data_args.privilege`) finds something to add. Decided without opening images."""
    for name in processor_names(sample, data_args):
        uses = _PROCESSOR_USES.get(name)
        if uses(sample) if uses else (name in PROCESSORS and not sample.privileged.is_empty()):
            return True
    return False


def without_privilege(samples: Sequence[CanonicalSample], data_args: Optional[Any] = None) -> list[str]:
    """Ids of the samples whose privileged view equals the plain one (for them x+p = x, the privilege gap is 0)."""
    return [s.uid for s in samples if not has_privilege(s, data_args)]


def privilege_warning(samples: Sequence[CanonicalSample], data_args: Optional[Any] = None,
                      max_ids: int = 5) -> Optional[str]:
    """`N of M samples have no privileged information (ids)`, or None when every sample has some."""
    missing = without_privilege(samples, data_args)
    if not missing:
        return None
    more = f", ... (+{len(missing) - max_ids})" if len(missing) > max_ids else ""
    return (f"{len(missing)} of {len(samples)} samples have no privileged information their processors use "
            f"(x+p = x for them): {', '.join(missing[:max_ids])}{more}")


def no_privilege_error(names: Sequence[str], reason: str) -> str:
    """The message refusing a method that needs p on data without any."""
    return (f"{reason}, but no sample of {', '.join(names)} has privileged information its processors use: "
            "every privileged view would equal the plain view. Check the registry entry's `columns.privileged` "
            "and `privilege` (or the `privilege` override), annotate p first (`dopd-cli annotate`), or choose a "
            "method without p (e.g. stage=vanilla_opd teacher_sees_privileged=false, or stage=sft)")


def load_and_validate(
    data_args: Any, names: Union[str, Sequence[str], None] = None, seed: int = 42,
    require_privilege: Optional[str] = None,
) -> list[CanonicalSample]:
    """What the trainer calls before the first step: load `names` (default `data_args.dataset`), validate
    every sample, raise ConfigError with the summary when a dataset's invalid fraction exceeds
    `data_args.max_invalid_fraction`, otherwise drop the invalid samples (with a warning) and mix.

    `require_privilege`: why the run needs p (the method scores a privileged policy), or None. Given, samples
    without p are counted in a warning, and data in which no sample has p raises ConfigError."""
    loaded = load_datasets(data_args, names)
    reports = [validate_dataset(d) for d in loaded]
    failing = [r for r in reports if r.invalid_fraction > data_args.max_invalid_fraction]
    if failing:
        raise ConfigError(
            f"invalid samples above max_invalid_fraction={data_args.max_invalid_fraction}:\n"
            + "\n".join(r.summary() for r in failing)
            + "\n(fix the data, or raise max_invalid_fraction to drop invalid samples)"
        )
    for report in reports:
        if report.issues:
            logger.warning("dropping %d invalid sample(s):\n%s", report.num_invalid, report.summary())
    parts = [valid_samples(d, r) for d, r in zip(loaded, reports)]
    problems = [d.column_problem for d in loaded if d.column_problem]
    if require_privilege and problems:
        raise ConfigError(f"{require_privilege}, but " + "\n".join(problems))
    for problem in problems:
        logger.warning("%s", problem)
    if require_privilege:
        if not any(has_privilege(s, data_args) for part in parts for s in part):
            raise ConfigError(no_privilege_error([d.name for d in loaded], require_privilege))
        for dataset, part in zip(loaded, parts):
            warning = privilege_warning(part, data_args)
            if warning:
                logger.warning("%s: %s", dataset.name, warning)
    return mix_samples(parts, data_args, seed)
