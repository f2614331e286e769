"""`dopd-cli check-data`, the data part: validate every sample of every configured dataset.

Prints one summary per dataset (ok / invalid counts, issues grouped by kind with the first offending sample ids)
and returns 1 when a dataset cannot be read or its invalid fraction exceeds `max_invalid_fraction`, else 0.
Given a prompt renderer (a model's adapter: a `VisionSpec` that also encodes prompts), both prompt views of every
valid sample are also rendered and tokenised, and prompt lengths are reported. The data layer loads no model: the
command's entry point, which loads the adapter of `model_name_or_path`, is `dopd.model.check_data`.
"""

from __future__ import annotations

import statistics
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Sequence, TextIO

from dopd.hparams import ConfigError

from .loader import load_dataset
from .registry import get_dataset_attrs, split_names
from .sample import CanonicalSample, SampleIssue
from .validate import (
    PROGRESS_MIN_SAMPLES, DatasetReport, has_privilege, no_privilege_error, privilege_warning, valid_samples,
    validate_dataset,
)
from .views import PromptView, build_views
from .vision import VisionSpec

if TYPE_CHECKING:
    from dopd.hparams import DataArguments, DOPDConfig


class EncodedLength(Protocol):
    input_ids: Sequence[int]


class PromptRenderer(VisionSpec, Protocol):
    """What check-data needs of a model's adapter (every `dopd.model.ModelAdapter` is one)."""

    def encode_prompt(self, view: PromptView, cutoff_len: Optional[int] = None) -> EncodedLength:
        ...


def _lengths_line(label: str, lengths: list[int]) -> str:
    if not lengths:
        return f"    {label}: -"
    return (f"    {label}: min {min(lengths)}, mean {statistics.fmean(lengths):.1f}, max {max(lengths)} tokens")


def render_prompts(samples: Sequence[CanonicalSample], adapter: PromptRenderer, data_args: DataArguments
                   ) -> tuple[dict[str, Any], list[SampleIssue]]:
    """Build and encode both views of each sample with the model's adapter: prompt-length statistics and the
    samples that fail to render."""
    plain, priv, truncated, with_p, issues = [], [], 0, 0, []
    iterator: Any = samples
    if len(samples) >= PROGRESS_MIN_SAMPLES:
        from tqdm.auto import tqdm

        iterator = tqdm(samples, desc="rendering prompts", unit="sample")
    for sample in iterator:
        try:
            x, xp = build_views(sample, adapter, data_args)
            ex = adapter.encode_prompt(x, data_args.cutoff_len)
            exp = adapter.encode_prompt(xp, data_args.cutoff_len) if xp.has_privilege else ex
        except Exception as err:  # noqa: BLE001 - report any failure against the sample, keep going
            issues.append(SampleIssue(sample.dataset, sample.source_file, sample.index, "<views>",
                                      f"cannot render the prompt: {type(err).__name__}: {err}", "render"))
            continue
        plain.append(len(ex.input_ids))
        priv.append(len(exp.input_ids))
        with_p += bool(xp.has_privilege)
        truncated += bool(getattr(ex, "truncated", False)) or bool(getattr(exp, "truncated", False))
    return {"plain": plain, "privileged": priv, "truncated": truncated, "with_privilege": with_p}, issues


def _privilege_line(samples: Sequence[CanonicalSample]) -> str:
    hint = sum(bool(s.privileged.hint) for s in samples)
    boxes = sum(bool(s.privileged.boxes) for s in samples)
    crops = sum(bool(s.privileged.crops) for s in samples)
    names = sorted({n for s in samples for n in s.privilege})
    return (f"  privileged info: hint {hint}, boxes {boxes}, crops {crops} of {len(samples)} samples; "
            f"processors: {', '.join(names) or 'none'}")


def check_data(config: DOPDConfig, out: Optional[TextIO] = None,
               load_renderer: Optional[Callable[[], Optional[PromptRenderer]]] = None,
               require_privilege: Optional[str] = None) -> int:
    """Validate the datasets of a parsed config (`dataset` and `eval_dataset`); print reports; exit code.

    `load_renderer`: called once, after the registry entries are checked (configuration mistakes surface before a
    model is loaded); the renderer it returns (or None) renders and tokenises the prompts of the valid samples.
    `require_privilege`: why the config's method needs p (None: it does not). The training datasets (`dataset`)
    then fail when none of their valid samples has p; samples without p beside samples with p are a warning."""
    out = out or sys.stdout
    data_args = config.data
    train_names = split_names(data_args.dataset)
    names = list(dict.fromkeys(train_names + split_names(data_args.eval_dataset)))
    if not names:
        raise ConfigError("check-data: no dataset given (set `dataset` and/or `eval_dataset`)")
    attrs = get_dataset_attrs(data_args, names)  # registry problems are configuration errors (exit 2)
    adapter = load_renderer() if load_renderer is not None else None

    failed, train_with_p, train_loaded = [], 0, []
    for attr in attrs:
        try:
            loaded = load_dataset(attr, data_args.max_samples)
        except ConfigError as err:
            print(f"{attr.name}: cannot load: {err}", file=out)
            failed.append(attr.name)
            continue
        is_train = attr.name in train_names
        bad, with_p = _check_dataset(loaded, is_train, config, adapter, require_privilege, out)
        if bad:
            failed.append(attr.name)
        if is_train:
            train_loaded.append(attr.name)
            train_with_p += with_p
    limit = data_args.max_invalid_fraction
    if require_privilege and train_loaded and not train_with_p:
        print(f"check-data: {no_privilege_error(train_loaded, require_privilege)}", file=out)
        failed += [n for n in train_loaded if n not in failed]
    if failed:
        print(f"check-data: FAILED for {', '.join(dict.fromkeys(failed))}: the reasons are above "
              f"(invalid samples count against max_invalid_fraction={limit})", file=out)
        return 1
    print(f"check-data: OK ({len(attrs)} dataset(s), max_invalid_fraction={limit})", file=out)
    return 0


def _check_dataset(loaded: Any, is_train: bool, config: DOPDConfig, adapter: Optional[PromptRenderer],
                   require_privilege: Optional[str], out: TextIO) -> tuple[bool, int]:
    """Validate (and, with an adapter, render) one loaded dataset and print its report. Returns (whether it fails,
    how many of its valid samples carry p when it is a training dataset, else 0)."""
    data_args = config.data
    report: DatasetReport = validate_dataset(loaded)
    stats = None
    if adapter is not None:
        stats, render_issues = render_prompts(valid_samples(loaded, report), adapter, data_args)
        report.issues = sorted(report.issues + render_issues, key=lambda i: i.index)
    print(report.summary(), file=out)
    print(_privilege_line(loaded.samples), file=out)
    failed = False
    if loaded.column_problem and require_privilege and is_train:
        print(f"  error: {loaded.column_problem}", file=out)
        failed = True
    elif loaded.column_problem:
        print(f"  warning: {loaded.column_problem}", file=out)
    with_p = 0
    if is_train:
        valid = valid_samples(loaded, report)
        with_p = sum(has_privilege(s, data_args) for s in valid)
        warning = privilege_warning(valid, data_args)
        if warning:
            print(f"  warning: {warning}", file=out)
    if stats is not None:
        print(f"  prompts ({config.model.model_name_or_path}, cutoff_len {data_args.cutoff_len}): "
              f"{stats['with_privilege']} with privilege, {stats['truncated']} truncated", file=out)
        print(_lengths_line("x  ", stats["plain"]), file=out)
        print(_lengths_line("x+p", stats["privileged"]), file=out)
    if report.invalid_fraction > data_args.max_invalid_fraction:
        failed = True
    return failed, with_p
