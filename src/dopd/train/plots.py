"""PNG plots of a run's log history: loss, regime fractions, entropy, privilege-illusion diagnostics.

Each plot is meant to be read at a glance: human labels instead of logged keys, legends outside the lines, no
offset notation on an axis (a near-flat series is drawn on a span that shows it flat), and a dotted reference line where
a statistic has a good value (docs/objective.md, "Diagnostics").
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

DIAG_STATS = ("teacher_rejected_frac", "priv_top_differs_frac", "priv_logp_gain", "grad_agrees_teacher_frac",
              "rejected_raised_frac")  # as in dopd.distill.diagnostics (not imported: plotting needs no torch)
_DIAG_GROUPS = ("HT", "HS", "LH", "LL", "all")

GROUP_LABELS = {"HT": "HT (high gap, teacher ahead)", "HS": "HS (high gap, priv. student ahead)",
                "LH": "LH (low gap, confident)", "LL": "LL (low gap, unsure)", "all": "all tokens"}
STAT_TITLES = {
    "teacher_rejected_frac": "tokens the teacher rejects",
    "priv_top_differs_frac": "priv. student would say another token",
    "priv_logp_gain": "log-prob gain from p (priv. student)",
    "grad_agrees_teacher_frac": "step moves the token the teacher's way",
    "rejected_raised_frac": "teacher-rejected tokens the step raises",
}
# statistic -> (reference value, what it means); drawn as a dashed line
STAT_REFERENCES = {
    "teacher_rejected_frac": (0.0, "good: 0"),
    "priv_logp_gain": (0.0, "> 0: p helps"),
    "grad_agrees_teacher_frac": (1.0, "good: 1"),
    "rejected_raised_frac": (0.0, "good: 0"),
}
KEY_LABELS = {"loss": "training loss", "student_entropy": "student entropy (nats)"}
MIN_SPAN = 0.02  # a near-flat series gets at least this share of its magnitude as its y-range (half each side)


def label_of(key: str) -> str:
    """The name a person reads for a logged key (`dopd/HS/token_frac` -> `HS (high gap, ...)`)."""
    bare = key[len("dopd/"):] if key.startswith("dopd/") and key.count("/") == 1 else key
    if bare in KEY_LABELS:
        return KEY_LABELS[bare]
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "dopd" and parts[1] in GROUP_LABELS:
        return GROUP_LABELS[parts[1]] if parts[2] == "token_frac" else f"{parts[1]}: {parts[2].replace('_', ' ')}"
    return key.split("/")[-1].replace("_", " ")


def _is_diagnostic(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 3 and parts[0] == "dopd" and parts[1] in _DIAG_GROUPS and parts[2] in DIAG_STATS


PLOTS = {
    "training_loss.png": ("loss", lambda k: k == "loss"),
    "training_regime_fractions.png": ("share of tokens per regime",
                                      lambda k: k.startswith("dopd/") and k.endswith("/token_frac")),
    "training_entropy.png": ("student entropy", lambda k: "entropy" in k),
    # one panel per statistic, one line per regime (see docs/objective.md, "Diagnostics")
    "training_diagnostics.png": ("privilege-illusion diagnostics (dotted line: the good value)", _is_diagnostic),
}


def plot_groups(log_history: Iterable[dict]) -> dict[str, list[str]]:
    """PNG file name -> the logged keys it plots (sorted); files with no key are left out."""
    records = [r for r in log_history if "step" in r]
    groups = {}
    for filename, (_, wanted) in PLOTS.items():
        keys = sorted({k for r in records for k in r if wanted(k)})
        if keys:
            groups[filename] = keys
    return groups


def _points(records: list[dict], key: str) -> list[tuple]:
    return [(r["step"], r[key]) for r in records if key in r and isinstance(r[key], (int, float))
            and r[key] == r[key]]  # NaN (an empty regime) is not a point


def _color(key: str) -> Optional[str]:
    """One colour per regime in every plot; None (matplotlib's cycle) for other keys."""
    parts = key.split("/")
    return f"C{_DIAG_GROUPS.index(parts[1])}" if len(parts) == 3 and parts[1] in _DIAG_GROUPS else None


def _readable_axis(ax, values: list[float], reference: Optional[float] = None) -> None:
    """Plain tick labels (no `+6.407` offset) and, for a near-flat series, a y-range that shows it flat."""
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    if not values:
        return
    low, high = min(values), max(values)
    if reference is not None:
        low, high = min(low, reference), max(high, reference)
    span = MIN_SPAN * max(abs(low), abs(high))
    if 0 < span and high - low < span:
        mid = (low + high) / 2
        ax.set_ylim(mid - span, mid + span)


def _plot_diagnostics(plt, records: list[dict], keys: list[str]):
    stats = [s for s in DIAG_STATS if any(k.endswith("/" + s) for k in keys)]
    cols = min(3, len(stats))
    rows = -(-len(stats) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 2.6, 3.2 * rows), squeeze=False)
    handles = {}
    for ax, stat in zip(axes.flat, stats):
        values = []
        for group in _DIAG_GROUPS:
            key = f"dopd/{group}/{stat}"
            points = _points(records, key) if key in keys else []
            if points:
                (line,) = ax.plot(*zip(*points), marker="o", markersize=2, label=GROUP_LABELS[group],
                                  linestyle="--" if group == "all" else "-", color=_color(key))
                handles.setdefault(GROUP_LABELS[group], line)
                values += [v for _, v in points]
        reference = STAT_REFERENCES.get(stat)
        if reference is not None:
            ax.axhline(reference[0], color="black", linewidth=0.8, linestyle=":")
            ax.text(0.99, 0.02, reference[1], transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
                    color="black")
        _readable_axis(ax, values, reference[0] if reference else None)
        ax.set_xlabel("step")
        ax.set_title(STAT_TITLES[stat], fontsize=9)
    for ax in list(axes.flat)[len(stats):]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / fig.get_figwidth(), 0.95))
    return fig


def _plot_series(plt, records: list[dict], keys: list[str], title: str):
    many = len(keys) > 1
    fig, ax = plt.subplots(figsize=(8.5 if many else 6, 4))
    values = []
    for key in keys:
        points = _points(records, key)
        if points:
            ax.plot(*zip(*points), marker="o", markersize=2, label=label_of(key), color=_color(key))
            values += [v for _, v in points]
    _readable_axis(ax, values)
    ax.set_xlabel("step")
    ax.set_ylabel(label_of(keys[0]) if not many else "")
    ax.set_title(title)
    if many:  # outside the axes, so it never covers a line
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_log_history(log_history: Iterable[dict], output_dir: str) -> list[str]:
    """Write one PNG per group of keys that the history holds; return the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in log_history if "step" in r]
    written = []
    for filename, keys in plot_groups(records).items():
        title = PLOTS[filename][0]
        if filename == "training_diagnostics.png":
            fig = _plot_diagnostics(plt, records, keys)
            fig.suptitle(title, fontsize=10)
        else:
            fig = _plot_series(plt, records, keys, title)
        path = os.path.join(output_dir, filename)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
