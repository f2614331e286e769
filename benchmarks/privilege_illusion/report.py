"""Turn the testbed's per-seed results into the table, the curves (PNG) and the markdown page.

The page states the numbers as they came out; the verdict sentences are computed from them, not written by hand.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Iterable, Optional

from .pipeline import METHODS

REGIMES = ("HT", "HS", "LH", "LL")
REFERENCE_ROWS = (
    ("student_before", "student before distillation (brief SFT on x)", "x"),
    ("student_before_with_p", "student before, evaluated with p (not deployable)", "x+p"),
    ("teacher_with_p", "teacher (SFT on x+p), evaluated with p", "x+p"),
    ("teacher_without_p", "teacher (SFT on x+p), evaluated without p", "x"),
)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt(values: Iterable[float], scale: float = 100.0, digits: int = 1) -> str:
    m, s = mean_std(values)
    if math.isnan(m):
        return "–"
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def _method_labels() -> dict[str, str]:
    return {m.name: m.label for m in METHODS}


def _final_entropy(run: dict[str, Any], last: int = 5) -> Optional[float]:
    values = [r["dopd/student_entropy"] for r in run["log"] if "dopd/student_entropy" in r]
    return statistics.fmean(values[-last:]) if values else None


def accuracy_table(results: dict[str, Any]) -> list[list[str]]:
    """Rows: name, view at eval, accuracy, on visible-operand questions, on hidden-operand questions,
    gain over the start, final student entropy."""
    seeds = results["seeds"]
    rows = [["run", "eval view", "accuracy (%)", "visible-operand q. (%)", "hidden-operand q. (%)",
             "gain vs start (pts)", "final entropy (nats)"]]
    for key, label, view in REFERENCE_ROWS:
        refs = [s["reference"][key] for s in seeds if key in s["reference"]]
        if not refs:
            continue
        rows.append([label, view, fmt(r["accuracy"] for r in refs), fmt(r["accuracy_visible"] for r in refs),
                     fmt(r["accuracy_hidden"] for r in refs), "", ""])
    labels = _method_labels()
    for name in results["config"]["methods"]:
        runs = [(s["methods"][name], s["reference"]["student_before"]) for s in seeds if name in s["methods"]]
        if not runs:
            continue
        finals = [r["final"] for r, _ in runs]
        gains = [r["final"]["accuracy"] - start["accuracy"] for r, start in runs]
        rows.append([f"{labels.get(name, name)} (`{name}`)", "x", fmt(f["accuracy"] for f in finals),
                     fmt(f["accuracy_visible"] for f in finals), fmt(f["accuracy_hidden"] for f in finals),
                     fmt(gains), fmt((_final_entropy(r) for r, _ in runs), scale=1.0, digits=3)])
    return rows


def regime_table(results: dict[str, Any], names: tuple[str, ...] = ("dopd", "uniform_dual")) -> list[list[str]]:
    """Per-regime token fractions (mean over logged steps, then mean ± std over seeds)."""
    rows = [["run"] + [f"{r} fraction" for r in REGIMES] + [f"{r} mean A" for r in REGIMES]]
    for name in names:
        per_seed = [s["methods"][name]["log"] for s in results["seeds"] if name in s["methods"]]
        if not per_seed:
            continue
        cells = [name]
        for stat in ("token_frac", "mean_gap"):
            for regime in REGIMES:
                key = f"dopd/{regime}/{stat}"
                vals = [statistics.fmean([r[key] for r in log if key in r]) for log in per_seed
                        if any(key in r for r in log)]
                cells.append(fmt(vals, scale=100.0 if stat == "token_frac" else 1.0,
                                 digits=1 if stat == "token_frac" else 2))
        rows.append(cells)
    return rows


def probe_table(results: dict[str, Any], base: str = "vanilla_opd_priv") -> list[list[str]]:
    """Gain of each pruned run relative to the unpruned base, and the share of the base's gain it removed."""
    rows = [["run", "gain vs start (pts)", "share of the base gain removed"]]
    seeds = results["seeds"]
    base_gains = [s["methods"][base]["final"]["accuracy"] - s["reference"]["student_before"]["accuracy"]
                  for s in seeds if base in s["methods"]]
    if not base_gains:
        return []
    rows.append([f"`{base}` (no pruning)", fmt(base_gains), "–"])
    base_mean = statistics.fmean(base_gains)
    for name in ("probe_top", "probe_bottom", "probe_random"):
        gains = [s["methods"][name]["final"]["accuracy"] - s["reference"]["student_before"]["accuracy"]
                 for s in seeds if name in s["methods"]]
        if not gains:
            continue
        removed = "undefined (base gain ≤ 0)" if base_mean <= 0 else f"{100 * (1 - statistics.fmean(gains) / base_mean):.0f}%"
        rows.append([f"`{name}`", fmt(gains), removed])
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    if not rows:
        return "(no data)"
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------- curves
def plot_curves(results: dict[str, Any], path: str | Path) -> str:
    """Accuracy (held-out, without p) and student entropy over distillation steps; mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _method_labels()
    fig, (ax_acc, ax_ent) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in results["config"]["methods"]:
        runs = [s["methods"][name] for s in results["seeds"] if name in s["methods"]]
        if not runs:
            continue
        style = "--" if name.startswith("probe_") else "-"
        steps = sorted({p["step"] for r in runs for p in r["curve"]})
        acc = [statistics.fmean([p["accuracy"] for r in runs for p in r["curve"] if p["step"] == st]) for st in steps]
        ax_acc.plot(steps, [100 * a for a in acc], style, marker="o", ms=3, label=name)
        ent_steps = sorted({e["step"] for r in runs for e in r["log"] if "dopd/student_entropy" in e})
        ent = [statistics.fmean([e["dopd/student_entropy"] for r in runs for e in r["log"]
                                 if e["step"] == st and "dopd/student_entropy" in e]) for st in ent_steps]
        ax_ent.plot(ent_steps, _smooth(ent), style, label=name)
    ax_acc.set_xlabel("distillation step")
    ax_acc.set_ylabel("held-out accuracy without p (%)")
    ax_acc.set_title("accuracy (mean over seeds)")
    ax_ent.set_xlabel("distillation step")
    ax_ent.set_ylabel("student entropy on its rollouts (nats)")
    ax_ent.set_title("student entropy (mean over seeds, smoothed)")
    ax_acc.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
    del labels
    return str(path)


def _smooth(values: list[float], window: int = 5) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


# ------------------------------------------------------------------------------------------------- page
def _acc(results: dict[str, Any], name: str) -> tuple[float, float]:
    return mean_std(s["methods"][name]["final"]["accuracy"] for s in results["seeds"] if name in s["methods"])


def verdict(results: dict[str, Any]) -> list[str]:
    """Sentences computed from the numbers: DOPD against each vanilla OPD flavour, and the probe."""
    lines = []
    names = set(results["config"]["methods"])
    if "dopd" in names:
        d_m, d_s = _acc(results, "dopd")
        for base, what in (("vanilla_opd", "vanilla OPD with a teacher without p"),
                           ("vanilla_opd_priv", "vanilla OPD with a teacher with p")):
            if base not in names:
                continue
            b_m, b_s = _acc(results, base)
            diff = 100 * (d_m - b_m)
            noise = 100 * max(d_s, b_s)
            if abs(diff) <= noise:
                word = "does not separate from"
            else:
                word = "beats" if diff > 0 else "is below"
            lines.append(f"- DOPD ({100 * d_m:.1f}%) {word} {what} ({100 * b_m:.1f}%): difference {diff:+.1f} "
                         f"points, largest seed std {noise:.1f} points.")
    start = mean_std(s["reference"]["student_before"]["accuracy"] for s in results["seeds"])[0]
    ranked = sorted(((_acc(results, n)[0], n) for n in results["config"]["methods"]), reverse=True)
    if ranked:
        lines.append(f"- Ranking by mean final accuracy (start {100 * start:.1f}%): "
                     + ", ".join(f"`{n}` {100 * a:.1f}%" for a, n in ranked) + ".")
    probe = probe_table(results)
    if len(probe) > 2:
        lines.append("- Pruning probe (on `vanilla_opd_priv`): "
                     + "; ".join(f"{r[0]} gain {r[1]}, removed {r[2]}" for r in probe[2:]) + ".")
    return lines


def write_page(results: dict[str, Any], report_dir: str | Path, command: str, notes: str = "") -> dict[str, str]:
    """Write testbed.md and testbed_curves.png into `report_dir`; returns their paths."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    png = plot_curves(results, report_dir / "testbed_curves.png")
    cfg = results["config"]
    task = results["task"]
    ex = task["example"]
    seeds = ", ".join(str(s) for s in cfg["seeds"])
    timings = {s["seed"]: s["timings"] for s in results["seeds"]}
    page = f"""# Privilege-illusion testbed

*This page is written by `benchmarks/privilege_illusion` itself; do not edit it by hand: re-run the command.*

```bash
{command}
```

Seeds: {seeds} (task data seed {cfg['task_seed']}); wall time {results['runtime_s'] / 60:.1f} min on this machine
({cfg['jobs']} worker process(es), one torch thread each). {'**Quick mode: a pipeline check, the numbers mean nothing.**' if cfg['quick'] else ''}

## The task (text, generated on the fly)

Each question names two objects of a small scene; the answer is a short chain (operands, sum, final answer).
The privileged information p is a step-wise hint: the operands' values, never the sum. In a share of questions
({100 * cfg['hidden_fraction']:.0f}%) the second operand is "the hidden one", which only p identifies: that part of
p's help is an information gap no training can recover from x; looking operands up in the scene and adding are
learnable from x.

| | example (first training row) |
|---|---|
| x | `{ex['messages'][0]['content']}` |
| p | `{ex['privileged']}` |
| y | `{ex['messages'][1]['content']}` |

{task['num_train']} training rows, {task['num_eval']} held-out rows ({100 * task['hidden_fraction_eval']:.0f}% hidden-operand
questions). Best held-out accuracy without p if visible operands are always right and the hidden one is guessed
among the other objects: about {100 * task['accuracy_ceiling_without_p']:.0f}%. Held-out evaluation: greedy, without p
(`dopd.eval.evaluate_samples`, `answer` extractor, numeric metric).

## Pipeline (same start for every method)

1. Teacher: tiny `{cfg['family']}` `{cfg['teacher_size']}` model (random init, seed k), `stage: sft`,
   `sft_view: privileged`, {cfg['teacher_steps']} steps, batch {cfg['sft_batch']}, lr {cfg['teacher_lr']}.
2. Student: tiny `{cfg['family']}` `{cfg['student_size']}` model (seed 1000 + k), `stage: sft` on x only,
   {cfg['student_steps']} steps, lr {cfg['student_lr']} (a weak start).
3. Each method from that student: {cfg['distill_steps']} steps, {cfg['distill_batch']} prompts × {cfg['num_generations']}
   rollouts per step, temperature 1, max {cfg['max_new_tokens']} new tokens, lr {cfg['distill_lr']} (constant),
   everything else at the repo defaults (K = 128 > vocabulary, beta_l 0.6, beta_w 0.3, trim 5%).
   Held-out accuracy every {cfg['eval_every']} steps.

## Held-out accuracy (mean ± std over seeds {seeds})

{markdown_table(accuracy_table(results))}

"visible-operand" / "hidden-operand": accuracy on the held-out questions whose second operand is named in x / only
in p. Final entropy: mean student entropy on its own rollouts over the last 5 logged steps.

## What came out

{chr(10).join(verdict(results))}

## Token-pruning probe

Vanilla OPD with the privileged teacher, dropping 20% of the tokens from the loss by the privilege advantage gap A
(largest, smallest, random). The probe runs on the teacher-with-p flavour because A = |log T(y|x,p) − log S(y|x,p)|
needs the teacher's scoring of x+p, and the trainer gives the teacher one view per run (`teacher_sees_privileged`);
with a teacher without p, A would compare T(y|x) with S(y|x,p). The privileged-student pass that A needs is run by
the trainer for `vanilla_opd` whenever `prune_mode` is `top` or `bottom` (`DOPDLossConfig.needs_gap`).

{markdown_table(probe_table(results))}

## DOPD routing: per-regime token fractions

Mean over logged steps, then mean ± std over seeds (`uniform_dual` scores both privileged policies too, so its
regimes are computed for the log although its loss ignores them).

{markdown_table(regime_table(results))}

## Curves

![accuracy and entropy over steps]({Path(png).name})

{notes}

## Runtime per seed (s)

{markdown_table([["seed", "teacher SFT", "student SFT", "total"]] + [[str(k), str(v.get('teacher_sft')), str(v.get('student_sft')), str(v.get('total'))] for k, v in timings.items()])}
"""
    md = report_dir / "testbed.md"
    md.write_text(page, encoding="utf-8")
    return {"markdown": str(md), "curves": png}
