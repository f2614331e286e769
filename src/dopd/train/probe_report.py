"""The probe's verdict and its outputs: probe_report.json (the contract scripts read), probe_report.md, one plot."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

from dopd.distill.routing import REGIMES

NAMES = {"student_x": "student on x", "student_xp": "student on x+p", "teacher_x": "teacher on x",
         "teacher_xp": "teacher on x+p"}


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _compare(acc: dict, better: str, worse: str, check: str) -> dict[str, Any]:
    a, b = acc[better], acc[worse]
    diff = a["accuracy"] - b["accuracy"]
    separate = a["low"] > b["high"] or b["low"] > a["high"]
    detail = (f"{NAMES[better]} {_pct(a['accuracy'])}% [{_pct(a['low'])}, {_pct(a['high'])}] vs {NAMES[worse]} "
              f"{_pct(b['accuracy'])}% [{_pct(b['low'])}, {_pct(b['high'])}] (n={a['n']}): "
              f"{100 * diff:+.1f} points; the 95% intervals {'separate' if separate else 'overlap'}")
    return {"check": check, "holds": diff > 0, "detail": detail, "difference": diff, "intervals_separate": separate}


def verdict(report: dict[str, Any], teacher_sees_privileged: bool = True) -> list[dict[str, Any]]:
    """The four checks; each "holds" when its difference is positive (None: not measured, with the reason)."""
    checks: list[dict[str, Any]] = []
    acc = report.get("accuracy")
    if acc:
        checks.append(_compare(acc, "teacher_xp", "teacher_x", "p_helps_teacher"))
        checks.append(_compare(acc, "student_xp", "student_x", "p_helps_student"))
        teacher = "teacher_xp" if teacher_sees_privileged else "teacher_x"
        checks.append(_compare(acc, teacher, "student_x", "teacher_better_than_student"))
    else:
        reason = report.get("accuracy_skipped") or "accuracy not measured"
        for name in ("p_helps_teacher", "p_helps_student", "teacher_better_than_student"):
            checks.append({"check": name, "holds": None, "detail": f"skipped: {reason}"})
    tokens = report.get("tokens") or {}
    to_teacher, to_self = tokens.get("rejected_to_teacher"), tokens.get("rejected_to_self")
    if to_teacher is None:
        checks.append({"check": "rejected_tokens_reach_teacher", "holds": None,
                       "detail": "not measured: no teacher-rejected token, or the method scores no privileged "
                                 "student (no routing diagnostics)"})
    else:
        diff = to_teacher - to_self
        checks.append({"check": "rejected_tokens_reach_teacher", "holds": diff > 0, "difference": diff,
                       "detail": f"{100 * to_teacher:.1f}% of the teacher-rejected tokens are routed to the teacher, "
                                 f"{100 * to_self:.1f}% to a self target (all/teacher_rejected_frac "
                                 f"{_pct(tokens['all']['teacher_rejected_frac'])}%)"})
    return checks


def _clean(value: Any) -> Any:
    """JSON without NaN: NaN -> None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _num(value: Optional[float], fmt: str = "{:.3f}") -> str:
    return "–" if value is None else fmt.format(value)


def format_summary(report: dict[str, Any]) -> str:
    """The short table printed at the end of `dopd-cli probe`."""
    lines = ["", "DOPD probe: " + ", ".join(f"{k} {v}" for k, v in report["config"].items()), ""]
    acc = report.get("accuracy")
    if acc:
        lines.append(f"{'accuracy':<16}{'%':>7}  95% interval   n")
        for view, entry in acc.items():
            lines.append(f"{NAMES[view]:<16}{_pct(entry['accuracy']):>7}  [{_pct(entry['low'])}, "
                         f"{_pct(entry['high'])}]  {entry['n']}")
    else:
        lines.append(f"accuracy: {report.get('accuracy_skipped')}")
    tokens = report["tokens"]
    lines += ["", f"{'regime':<8}{'share':>7}{'rejected':>10}{'p gain':>9}"]
    for regime in (*REGIMES, "all"):
        t = tokens[regime]
        lines.append(f"{regime:<8}{_pct(t['share']):>7}{_pct(t['teacher_rejected_frac']):>10}"
                     f"{_num(t['priv_logp_gain'], '{:+.3f}'):>9}")
    lr = report["lr"]
    if lr["grid"]:
        lines += ["", "lr        KL change (held-back rollouts, one step)"]
        lines += [f"{r['lr']:<10.3g}{r['kl_change']:+.5f}" for r in lr["grid"]]
        lines.append(f"suggested lr (from one batch): {lr['suggested'] if lr['suggested'] is not None else 'none'}")
    lines += ["", "verdict:"]
    for check in report["verdict"]:
        mark = {True: "holds ", False: "FAILS ", None: "n/a   "}[check["holds"]]
        lines.append(f"  {mark} {check['check']}: {check['detail']}")
    lines.append(f"\n({report['seconds']['total']:.0f} s)")
    return "\n".join(lines)


def format_markdown(report: dict[str, Any]) -> str:
    lines = ["# DOPD probe", "", ", ".join(f"{k}: `{v}`" for k, v in report["config"].items()), "",
             "| check | holds | detail |", "|---|---|---|"]
    for check in report["verdict"]:
        mark = {True: "yes", False: "**no**", None: "–"}[check["holds"]]
        lines.append(f"| `{check['check']}` | {mark} | {check['detail']} |")
    acc = report.get("accuracy")
    if acc:
        lines += ["", "| model / view | accuracy % [95% CI] | n |", "|---|---|---|"]
        lines += [f"| {NAMES[v]} | {_pct(e['accuracy'])} [{_pct(e['low'])}, {_pct(e['high'])}] | {e['n']} |"
                  for v, e in acc.items()]
    tokens = report["tokens"]
    lines += ["", "| regime | token share % | teacher_rejected_frac % | priv_logp_gain |", "|---|---|---|---|"]
    for regime in (*REGIMES, "all"):
        t = tokens[regime]
        lines.append(f"| {regime} | {_pct(t['share'])} | {_pct(t['teacher_rejected_frac'])} | "
                     f"{_num(t['priv_logp_gain'], '{:+.3f}')} |")
    lr = report["lr"]
    if lr["grid"]:
        lines += ["", "| lr | KL change |", "|---|---|"]
        lines += [f"| {r['lr']:.3g} | {r['kl_change']:+.5f} |" for r in lr["grid"]]
        lines += ["", f"Suggested lr (the largest that lowers the KL; a suggestion from one batch): "
                      f"{lr['suggested'] if lr['suggested'] is not None else 'none lowers it'}"]
    lines += ["", f"Seconds: {report['seconds']}", "",
              "What each check means and what to do when it fails: docs/before_you_train.md"]
    return "\n".join(lines) + "\n"


def plot_report(report: dict[str, Any], path: str) -> Optional[str]:
    """Accuracy with intervals, token shares, and KL change per lr, side by side."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    acc = report.get("accuracy")
    if acc:
        views = list(acc)
        values = [100 * acc[v]["accuracy"] for v in views]
        errors = [[values[i] - 100 * acc[v]["low"] for i, v in enumerate(views)],
                  [100 * acc[v]["high"] - values[i] for i, v in enumerate(views)]]
        axes[0].bar([NAMES[v] for v in views], values, yerr=errors, capsize=4, color="#4c72b0")
        axes[0].tick_params(axis="x", labelrotation=20)
    axes[0].set_title("greedy accuracy % (95% CI)")
    tokens = report["tokens"]
    shares = [100 * (tokens[r]["share"] or 0.0) for r in REGIMES]
    rejected = [shares[i] * (tokens[r]["teacher_rejected_frac"] or 0.0) for i, r in enumerate(REGIMES)]
    axes[1].bar(REGIMES, shares, color="#bbbbbb", label="tokens")
    axes[1].bar(REGIMES, rejected, color="#c44e52", label="teacher-rejected")
    axes[1].legend()
    axes[1].set_title("token share % per regime")
    grid = report["lr"]["grid"]
    if grid:
        axes[2].plot([r["lr"] for r in grid], [r["kl_change"] for r in grid], "o-")
        axes[2].axhline(0.0, color="k", lw=0.6)
        axes[2].set_xscale("log")
    axes[2].set_title("KL change after one step, per lr")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


PARTIAL_REPORT = "probe_report.partial.json"


def _write_json(report: dict[str, Any], path: str) -> None:
    """Write through a temporary file, so that a crash while writing leaves the previous file whole."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(_clean(report), fh, indent=2)
    os.replace(tmp, path)


def write_partial_report(report: dict[str, Any], out_dir: str) -> str:
    """The report so far (the parts in `parts_done`) as probe_report.partial.json; `write_report` removes it."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, PARTIAL_REPORT)
    _write_json(report, path)
    return path


def write_report(report: dict[str, Any], out_dir: str) -> list[str]:
    """probe_report.json, probe_report.md and probe_report.png in `out_dir` (the partial report removed); returns
    the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "probe_report.json")
    _write_json(report, json_path)
    md_path = os.path.join(out_dir, "probe_report.md")
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write(format_markdown(report))
    paths = [json_path, md_path]
    plot = plot_report(report, os.path.join(out_dir, "probe_report.png"))
    if plot:
        paths.append(plot)
    partial = os.path.join(out_dir, PARTIAL_REPORT)
    if os.path.exists(partial):
        os.remove(partial)
    return paths
