"""PNG plots of a run's log history: loss, regime fractions, entropy."""

from __future__ import annotations

import os
from typing import Iterable

PLOTS = {
    "training_loss.png": ("loss", lambda k: k == "loss"),
    "training_regime_fractions.png": ("token fraction per regime", lambda k: k.startswith("dopd/") and "frac" in k),
    "training_entropy.png": ("student entropy", lambda k: "entropy" in k),
}


def plot_log_history(log_history: Iterable[dict], output_dir: str) -> list[str]:
    """Write one PNG per group of keys that the history holds; return the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in log_history if "step" in r]
    written = []
    for filename, (title, wanted) in PLOTS.items():
        keys = sorted({k for r in records for k in r if wanted(k)})
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r and isinstance(r[key], (int, float))]
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
