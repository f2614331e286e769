"""PNG plots of a run's log history: loss, regime fractions, entropy, privilege-illusion diagnostics."""

from __future__ import annotations

import os
from typing import Iterable

DIAG_STATS = ("teacher_rejected_frac", "priv_top_differs_frac", "priv_logp_gain", "grad_agrees_teacher_frac",
              "rejected_raised_frac")  # as in dopd.distill.diagnostics (not imported: plotting needs no torch)
_DIAG_GROUPS = ("HT", "HS", "LH", "LL", "all")


def _is_diagnostic(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 3 and parts[0] == "dopd" and parts[1] in _DIAG_GROUPS and parts[2] in DIAG_STATS


PLOTS = {
    "training_loss.png": ("loss", lambda k: k == "loss"),
    "training_regime_fractions.png": ("token fraction per regime",
                                      lambda k: k.startswith("dopd/") and k.endswith("/token_frac")),
    "training_entropy.png": ("student entropy", lambda k: "entropy" in k),
    # one panel per statistic, one line per regime (see docs/objective.md, "Diagnostics")
    "training_diagnostics.png": ("privilege-illusion diagnostics", _is_diagnostic),
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
    return [(r["step"], r[key]) for r in records if key in r and isinstance(r[key], (int, float))]


def _plot_diagnostics(plt, records: list[dict], keys: list[str]):
    stats = [s for s in DIAG_STATS if any(k.endswith("/" + s) for k in keys)]
    fig, axes = plt.subplots(1, len(stats), figsize=(4 * len(stats), 3.6), squeeze=False)
    for ax, stat in zip(axes[0], stats):
        for group in _DIAG_GROUPS:
            key = f"dopd/{group}/{stat}"
            points = _points(records, key) if key in keys else []
            if points:
                ax.plot(*zip(*points), marker="o", markersize=2, label=group,
                        linestyle="--" if group == "all" else "-")
        ax.set_xlabel("step")
        ax.set_title(stat, fontsize=9)
        if stat == "priv_logp_gain":
            ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.legend(fontsize=7)
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
            fig, ax = plt.subplots(figsize=(6, 4))
            for key in keys:
                points = _points(records, key)
                if points:
                    ax.plot(*zip(*points), marker="o", markersize=2, label=key)
            ax.set_xlabel("step")
            ax.set_title(title)
            if len(keys) > 1:
                ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(output_dir, filename)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
