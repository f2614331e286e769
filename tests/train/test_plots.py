"""plots.py: which logged keys go into which PNG, and that the diagnostics figure is written."""

from dopd.distill.diagnostics import DIAG_STATS
from dopd.train.plots import plot_groups, plot_log_history


def _history(steps=3):
    out = []
    for step in range(1, steps + 1):
        rec = {"step": step, "loss": 1.0 / step, "dopd/student_entropy": 0.5, "dopd/pruned_frac": 0.2}
        for regime in ("HT", "HS", "LH", "LL"):
            rec[f"dopd/{regime}/token_frac"] = 0.25
            rec[f"dopd/{regime}/mean_gap"] = 1.0
        for regime in ("HT", "HS", "LH", "LL", "all"):
            for stat in DIAG_STATS:
                rec[f"dopd/{regime}/{stat}"] = 0.1 * step
        out.append(rec)
    out.append({"step": steps, "eval/average/accuracy": 0.5})
    return out


def test_groups_keep_diagnostics_out_of_the_regime_fractions():
    groups = plot_groups(_history())
    assert groups["training_regime_fractions.png"] == [f"dopd/{r}/token_frac" for r in ("HS", "HT", "LH", "LL")]
    diag = groups["training_diagnostics.png"]
    assert len(diag) == 5 * len(DIAG_STATS)
    assert "dopd/HS/teacher_rejected_frac" in diag and "dopd/all/rejected_raised_frac" in diag
    assert groups["training_entropy.png"] == ["dopd/student_entropy"]


def test_diagnostics_png_is_written(tmp_path):
    written = plot_log_history(_history(), str(tmp_path))
    names = sorted(p.rsplit("/", 1)[-1] for p in written)
    assert "training_diagnostics.png" in names and "training_regime_fractions.png" in names
    assert (tmp_path / "training_diagnostics.png").stat().st_size > 0


def test_no_diagnostics_png_without_diagnostics(tmp_path):
    history = [{"step": 1, "loss": 1.0, "dopd/HS/token_frac": 0.3}]
    assert "training_diagnostics.png" not in plot_groups(history)
    written = plot_log_history(history, str(tmp_path))
    assert not (tmp_path / "training_diagnostics.png").exists() and written


def test_plot_statistics_match_the_objective():
    from dopd.train import plots

    assert plots.DIAG_STATS == DIAG_STATS
