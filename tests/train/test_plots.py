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


def _drawn_figures(monkeypatch, history, tmp_path):
    """plot_log_history's figures, drawn, keyed by file name (captured at savefig)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figures = {}
    original = Figure.savefig

    def capture(fig, path, *args, **kwargs):
        fig.canvas.draw()
        figures[str(path).rsplit("/", 1)[-1]] = fig
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    plot_log_history(history, str(tmp_path))
    return figures


def _near_flat_history():
    """The issue's case: entropy at 6.407 moving by 1e-4, which an offset axis draws as a trend."""
    out = _history(6)
    for i, rec in enumerate(r for r in out if "loss" in r):
        rec["dopd/student_entropy"] = 6.4071 + 1e-4 * (i % 3)
    return out


def test_no_axis_uses_offset_notation_and_flat_lines_look_flat(monkeypatch, tmp_path):
    figures = _drawn_figures(monkeypatch, _near_flat_history(), tmp_path)
    for name, fig in figures.items():
        for ax in fig.axes:
            if ax.get_visible():
                assert ax.yaxis.get_major_formatter().get_offset() == "", name
    low, high = figures["training_entropy.png"].axes[0].get_ylim()
    assert high - low > 0.05  # 1e-4 of movement fills less than a fiftieth of the axis


def test_legends_name_things_for_people_and_stay_off_the_lines(monkeypatch, tmp_path):
    figures = _drawn_figures(monkeypatch, _history(), tmp_path)
    for name, fig in figures.items():
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        for legend in legends:
            labels = [t.get_text() for t in legend.get_texts()]
            assert labels and not any("/" in label or "_" in label for label in labels), (name, labels)
            box = legend.get_window_extent()
            for ax in fig.axes:
                if ax.get_visible():
                    assert not box.overlaps(ax.get_window_extent()), (name, labels)


def test_diagnostics_show_the_good_values(monkeypatch, tmp_path):
    fig = _drawn_figures(monkeypatch, _history(), tmp_path)["training_diagnostics.png"]
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert "good: 0" in texts and "> 0: p helps" in texts
    width, height = fig.get_size_inches() * fig.dpi
    assert width / height < 3  # not a 2000 x 360 strip
