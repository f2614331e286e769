"""Turn the testbed's per-seed results into the table, the curves (PNG) and the markdown page.

The page states the numbers as they came out; the verdict sentences are computed from them, not written by hand.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Iterable, Optional

from ..paths import TESTBED_GRADIENT_PROBE
from .pipeline import METHODS

REGIMES = ("HT", "HS", "LH", "LL")
# per task: the column names of held-out questions whose answer-relevant fact is in x / only in p
KIND_LABELS = {"text": ("visible-operand", "hidden-operand"), "vlm": ("visible-shape", "covered-shape")}
PAGE_NAMES = {"text": ("testbed.md", "testbed_curves.png"), "vlm": ("testbed_vlm.md", "testbed_vlm_curves.png")}
REFERENCE_ROWS = (
    ("student_before", "student before distillation (the common start)", "x"),
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
    visible, hidden = KIND_LABELS[results["config"].get("task", "text")]
    rows = [["run", "eval view", "accuracy (%)", f"{visible} q. (%)", f"{hidden} q. (%)",
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
    """Each pruned run against the unpruned base: its gain over the start, its difference from the base's final
    accuracy (defined whatever the sign of the base's gain), and the share of the base's gain it removed."""
    rows = [["run", "gain vs start (pts)", "vs unpruned run (pts)", "share of the base gain removed"]]
    seeds = [s for s in results["seeds"] if base in s["methods"]]
    if not seeds:
        return []

    def gain(s: dict[str, Any], name: str) -> float:
        return s["methods"][name]["final"]["accuracy"] - s["reference"]["student_before"]["accuracy"]

    base_gains = [gain(s, base) for s in seeds]
    rows.append([f"`{base}` (no pruning)", fmt(base_gains), "–", "–"])
    base_mean = statistics.fmean(base_gains)
    for name in ("probe_top", "probe_bottom", "probe_random"):
        with_probe = [s for s in seeds if name in s["methods"]]
        if not with_probe:
            continue
        gains = [gain(s, name) for s in with_probe]
        diffs = [gain(s, name) - gain(s, base) for s in with_probe]
        removed = ("undefined (base gain ≤ 0)" if base_mean <= 0
                   else f"{100 * (1 - statistics.fmean(gains) / base_mean):.0f}%")
        rows.append([f"`{name}`", fmt(gains), fmt(diffs), removed])
    return rows


def entropy_change(results: dict[str, Any], name: str, window: int = 5) -> tuple[float, float]:
    """Seed-mean student entropy over the first and over the last `window` logged steps."""
    first, last = [], []
    for s in results["seeds"]:
        if name not in s["methods"]:
            continue
        values = [e["dopd/student_entropy"] for e in s["methods"][name]["log"] if "dopd/student_entropy" in e]
        if values:
            first.append(statistics.fmean(values[:window]))
            last.append(statistics.fmean(values[-window:]))
    return mean_std(first)[0], mean_std(last)[0]


def markdown_table(rows: list[list[str]]) -> str:
    if not rows:
        return "(no data)"
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------- curves
def _mean_by_step(runs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps = sorted({e["step"] for r in runs for e in r["log"] if key in e})
    values = [statistics.fmean([e[key] for r in runs for e in r["log"] if e["step"] == st and key in e])
              for st in steps]
    return steps, values


def plot_curves(results: dict[str, Any], path: str | Path) -> str:
    """Held-out accuracy (without p), student entropy and rollout length over distillation steps; seed means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_ent, ax_len) = plt.subplots(1, 3, figsize=(16, 4.5))
    for name in results["config"]["methods"]:
        runs = [s["methods"][name] for s in results["seeds"] if name in s["methods"]]
        if not runs:
            continue
        style = "--" if name.startswith("probe_") else "-"
        steps = sorted({p["step"] for r in runs for p in r["curve"]})
        acc = [statistics.fmean([p["accuracy"] for r in runs for p in r["curve"] if p["step"] == st]) for st in steps]
        ax_acc.plot(steps, [100 * a for a in acc], style, marker="o", ms=3, label=name)
        ent_steps, ent = _mean_by_step(runs, "dopd/student_entropy")
        ax_ent.plot(ent_steps, _smooth(ent), style, label=name)
        len_steps, length = _mean_by_step(runs, "rollout/response_length")
        if len_steps:
            ax_len.plot(len_steps, _smooth(length), style, label=name)
    ax_acc.set(xlabel="distillation step", ylabel="held-out accuracy without p (%)", title="accuracy (mean over seeds)")
    ax_ent.set(xlabel="distillation step", ylabel="nats", title="student entropy on its rollouts (seed mean, smoothed)")
    ax_len.set(xlabel="distillation step", ylabel="tokens", title="rollout length (seed mean, smoothed)")
    ax_acc.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
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


def constant_answer_lines(results: dict[str, Any], tol: float = 0.005) -> list[str]:
    """(VLM task) How many evaluated students score exactly what a constant answer would (the held-out share of one
    answer, or 0), and the majority-answer baseline: a gain over the start can be a shift of a constant answer."""
    shares = results["task"].get("answer_shares_eval")
    if not shares:
        return []
    majority = max(shares.values())
    accs = [(s["seed"], f"`{n}`", m["final"]["accuracy"]) for s in results["seeds"] for n, m in s["methods"].items()]
    accs += [(s["seed"], k, s["reference"][k]["accuracy"]) for s in results["seeds"]
             for k in ("student_before", "teacher_without_p") if k in s["reference"]]
    constant = [a for a in accs if any(abs(a[2] - v) <= tol for v in [0.0, *shares.values()])]
    above = [a for a in accs if a[2] > majority + tol]
    return [
        f"- Always giving one answer scores {', '.join(f'{100 * v:.0f}% (answer {k})' for k, v in shares.items())} "
        f"on the held-out set; the majority-answer baseline is {100 * majority:.0f}%. {len(constant)} of the "
        f"{len(accs)} evaluations without p (per seed: every final method, the start, the teacher without p) score "
        f"exactly a constant answer's accuracy (or 0%); {len(above)} score above the majority baseline"
        + (": " + ", ".join(f"seed {sd} {n} {100 * a:.0f}%" for sd, n, a in above) if above else "") + ".",
    ]


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
    starts = [s["reference"]["student_before"]["accuracy"] for s in results["seeds"]]
    above = [n for a, n in ranked if a > start]
    lines.append(f"- Methods whose mean final accuracy is above the start: {', '.join(f'`{n}`' for n in above) or 'none'} "
                 f"(per-seed starts: {', '.join(f'{100 * v:.1f}%' for v in starts)}).")
    probe = probe_table(results)
    if len(probe) > 2:
        lines.append("- Pruning probe (on `vanilla_opd_priv`), final accuracy minus the unpruned run's: "
                     + "; ".join(f"{r[0]} {r[2]} points" for r in probe[2:]) + ".")
    lines += constant_answer_lines(results)
    changes = [(n, *entropy_change(results, n)) for n in results["config"]["methods"]]
    lines.append("- Student entropy, first → last 5 logged steps (seed mean, nats): "
                 + ", ".join(f"`{n}` {a:.2f} → {b:.2f}" for n, a, b in changes if not math.isnan(a)) + ".")
    return lines


EXPLORATION_NOTES = """## What was tried before this configuration

Earlier runs, not regenerated by this command (their settings are reachable with the options named):

1. **A scene-lookup task** (`Scene: cat 3, dog 7, box 5, fox 2. Question: cat plus dog?`, p = the two operands'
   values; seed 0). The tiny student never learned the lookup from x within budget (plain SFT 150 / 300 / 600 steps:
   10.5 / 14 / 16% held-out), the teacher trained on x+p scored 13.5% without p, and from that start every method
   lost accuracy; replaced by the three-digit addition chain above.
2. **Student SFT on x only** (`--student-data plain`, 150 SFT steps then; seed 0, distillation lr 1e-3 and 2e-4). Its privileged view was
   out of distribution (3.5% held-out with p vs 21.5% without). At lr 1e-3 every method lost accuracy in 120 steps
   (vanilla OPD: teacher without p 1%, with p 11%; OPSD 0%; uniform dual 0.5%; DOPD 0%; probe_top 6%); at lr 2e-4
   vanilla OPD with p held 22% while DOPD and OPSD went to 0% with the student's entropy rising from 1.0 to 4.5-5.5
   nats (near uniform over the 614-token vocabulary). Hence the default `student_data: mixed`.
3. **Distillation lr 2e-4** with the mixed student (this command with `--distill-lr 2e-4`, 3 seeds, 10.4 min): every
   method ended below the start (38.5 ± 14.5%): vanilla OPD teacher without p 1.2 ± 0.3, with p 28.5 ± 8.0, OPSD
   0.0 ± 0.0, uniform dual 23.5 ± 8.8, DOPD 6.0 ± 5.3, probe top / bottom / random 8.7 ± 4.5 / 31.0 ± 7.3 /
   22.7 ± 1.4. DOPD's regimes there: HT 4.9%, HS 26.4%, LH 63.3%, LL 5.3% of tokens. A single-seed check at lr 5e-5
   was the first setting where the main baseline (vanilla OPD, teacher with p) gained over its start (24.5 -> 35%
   at step 40), so 5e-5 became the default for every method alike; nothing else was changed after seeing results.
4. **A gradient leak into the privileged-student target was ruled out**: on random tensors, the hidden-state loss
   path's gradients (lm_head weight and hidden states) equal those of the logits path with detached targets to
   1e-8 for `opsd`, `dopd`, `vanilla_opd`, `uniform_dual`.
5. **Diagnostics on this configuration, per token** (docs/objective.md, "Diagnostics";
   `python -m benchmarks.privilege_illusion.diagnostics_probe --seed 0 --steps 20`, numbers in
   `results/testbed_diagnostics_seed0.json`: seed 0's teacher and student rebuilt as above, the first 20
   steps of DOPD and of vanilla OPD with the privileged teacher). At the first step the teacher rejects (q_T < 0.1 and
   not its top choice) 25.0% of the student's sampled tokens (23.1% over 20 steps); HS holds 24.6% of the tokens and
   94.9% of them are rejected, so 93% of the rejected tokens are routed to the privileged student. There the
   privileged student's top choice differs from the sampled token on 65% of the tokens and log q_S − log s(y)
   averages −0.35 nats: p makes the student less sure of its sample, yet S(y|x,p) stays above T(y|x,p) (that is what
   put the token in HS). DOPD's per-token gradient raises log s(y) on 48.0% of the rejected tokens (HS 48.0%, LL 50%)
   and goes the teacher's way on 51.9% of HS tokens (84.8% of all tokens); vanilla OPD with the privileged teacher
   raises it on 0.0% of them at the first step (0.8% over 20 steps) and follows the teacher on every token, as its
   sampled-token gradient must.

Reading of the numbers (an interpretation, not a measurement): in this testbed the student reads p badly (its x+p
accuracy is below its x accuracy), so S(.|x,p) is a weak target. OPSD, whose only target it is, collapses to near 0%
(at lr 2e-4 its rollouts shrank to a couple of tokens; at 5e-5 they shorten and its entropy rises). DOPD's entropy
falls steadily (unlike the paper's slight rise then plateau) and its accuracy with it. DOPD's HS regime (high gap and q_T < q_S) takes about a quarter of the
tokens with the largest gaps (mean A ≈ 4.5 nats); item 5 measures it per token: they are mostly tokens the teacher rejects, tokens the student
sampled wrongly and its privileged copy rates above the teacher (though below the student's own probability), which DOPD sends to S(.|x,p) instead of letting the teacher correct them. The paper's premise, a
privileged student at least as good as the plain one, does not hold in this tiny setting. Likewise the teacher
was trained on x+p only (as specified), so "vanilla OPD, teacher without p" distils from a teacher that is near 0%
on x, unlike the paper's general-purpose teacher.
"""


def _page_head(results: dict[str, Any], command: str) -> str:
    """The title, the command that produced `results`, seeds and wall time."""
    cfg = results["config"]
    seeds = ", ".join(str(s) for s in cfg["seeds"])
    return f"""# Privilege-illusion testbed

*This page is written by `benchmarks/privilege_illusion` itself; do not edit it by hand: re-run the command.*

```bash
{command}
```

Seeds: {seeds} (task data seed {cfg['task_seed']}); wall time {results['runtime_s'] / 60:.1f} min on this machine
({cfg['jobs']} worker process(es), one torch thread each). {'**Quick mode: a pipeline check, the numbers mean nothing.**' if cfg['quick'] else ''}

"""


def _text_task_part(results: dict[str, Any]) -> str:
    """The text task, with the first training row as its example."""
    cfg, task = results["config"], results["task"]
    ex = task["example"]
    return f"""## The task (text, generated on the fly)

Add three digits with a short chain (first partial sum, second sum, final answer). The privileged information p is
a step-wise hint: the first partial sum, never the answer. In a share of questions
({100 * cfg['hidden_fraction']:.0f}%) the third operand is "the hidden one", which only p names: that part of p's help is
an information gap no training can recover from x. The first partial sum is learnable from x but is a pure copy
with p (a shortcut the deployed student never has); the second sum is capability p does not contain.

| | example (first training row) |
|---|---|
| x | `{ex['messages'][0]['content']}` |
| p | `{ex['privileged']}` |
| y | `{ex['messages'][1]['content']}` |

{task['num_train']} training rows, {task['num_eval']} held-out rows ({100 * task['hidden_fraction_eval']:.0f}% hidden-operand
questions; held-out questions are independent draws and may repeat a training question's text: the space is
1,100 questions). Best held-out accuracy without p if every sum is right and the hidden digit is guessed: {100 * task['accuracy_ceiling_without_p']:.0f}%. Held-out evaluation: greedy, without p
(`dopd.eval.evaluate_samples`, `answer` extractor, numeric metric).

"""


def _pipeline_part(cfg: dict[str, Any]) -> str:
    """How the teacher, the student and every method's run are made."""
    student_data = ("x and x+p (each training row twice, `pi_text_train_mixed`), so that the privileged student "
                    "S(.|x,p) has seen p" if cfg.get("student_data", "mixed") == "mixed" else "x only")
    return f"""## Pipeline (same start for every method)

1. Teacher: tiny `{cfg['family']}` `{cfg['teacher_size']}` model (random init, seed k), `stage: sft`,
   `sft_view: privileged`, {cfg['teacher_steps']} steps, batch {cfg['sft_batch']}, lr {cfg['teacher_lr']}.
2. Student: tiny `{cfg['family']}` `{cfg['student_size']}` model (seed 1000 + k), `stage: sft`,
   {cfg['student_steps']} steps, lr {cfg['student_lr']} (a weak start), on {student_data}.
3. Each method from that student: {cfg['distill_steps']} steps, {cfg['distill_batch']} prompts × {cfg['num_generations']}
   rollouts per step, temperature 1, max {cfg['max_new_tokens']} new tokens, lr {cfg['distill_lr']} (constant),
   everything else at the repo defaults (K = 128 of the 614-token vocabulary, beta_l 0.6, beta_w 0.3,
   trim 5%, per-sequence token mean).
   Held-out accuracy every {cfg['eval_every']} steps.

"""


def _outcome_part(results: dict[str, Any]) -> str:
    """Accuracy, the verdict, the pruning probe and the routing fractions."""
    seeds = ", ".join(str(s) for s in results["config"]["seeds"])
    return f"""## Held-out accuracy (mean ± std over seeds {seeds})

{markdown_table(accuracy_table(results))}

"visible-operand" / "hidden-operand": accuracy on the held-out questions whose third operand is written in x / only
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

"""


def _curves_and_runtime_part(results: dict[str, Any], png: str, notes: str) -> str:
    """The curves PNG, the notes (what was tried) and the runtime per seed."""
    timings = {s["seed"]: s["timings"] for s in results["seeds"]}
    return f"""## Curves

![accuracy and entropy over steps]({Path(png).name})

{notes or EXPLORATION_NOTES}

## Runtime per seed (s)

{markdown_table([["seed", "teacher SFT", "student SFT", "total"]] + [[str(k), str(v.get('teacher_sft')), str(v.get('student_sft')), str(v.get('total'))] for k, v in timings.items()])}
"""


def write_page(results: dict[str, Any], report_dir: str | Path, command: str, notes: str = "") -> dict[str, str]:
    """Write testbed.md (testbed_vlm.md for the VLM task) and its curves PNG into `report_dir`; returns their paths.
    `command` is the one that produced `results` (stored in results.json by the run)."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    kind = results["config"].get("task", "text")
    md_name, png_name = PAGE_NAMES[kind]
    png = plot_curves(results, report_dir / png_name)
    page = (_page_head(results, command) + _text_task_part(results) + _pipeline_part(results["config"])
            + _outcome_part(results) + _curves_and_runtime_part(results, png, notes))
    if kind == "vlm":
        page = _vlm_page(page, results, notes)
    else:
        page = page.replace("\n## The task (text, generated on the fly)", "\nThe VLM variant of this testbed (shape images, "
                            "p = the labelled box of the queried object; `--task vlm`): [testbed_vlm.md](testbed_vlm.md)."
                            "\n\n## The task (text, generated on the fly)", 1)
    md = report_dir / md_name
    page = keep_premise_section(md, page)
    md.write_text(page, encoding="utf-8")
    return {"markdown": str(md), "curves": png}


VLM_NOTES = """## What was tried

This page is the first complete run of the VLM task at its default size (`--task vlm`); nothing was tuned after
seeing its accuracies. The configuration (sizes, steps, learning rates) was chosen before the run, for runtime: the
text task's distillation lr (5e-5) and student-data choice (`mixed`) were carried over unchanged.

One earlier launch was stopped part-way: its answer chain (`It is a triangle. A triangle has 3 corners. Answer: 3`,
29 tokens with the tiny BPE tokenizer) was longer than the 24 new tokens allowed in rollouts and evaluation, so no
generation could reach `Answer:` and every distilled run read 0.0% held-out accuracy. The chain was shortened to the
one above (16 tokens); nothing else changed.

Reading of this run's numbers (an interpretation, not a measurement): no student learned to read the shape from
the image. Visible-shape and covered-shape accuracies are about equal in every row, most evaluations without p score
exactly what one constant answer scores (see "What came out"), and none beats the majority answer. The gains over
the start therefore measure which constant answer a method drifts to (the majority answer "3" pays most), not
learned capability, and say nothing yet about privilege illusion. Both privileged views work (teacher with p 100%,
student with p ~98%: copying the box label is easy), which leaves the x-only path, shape recognition from 4
vision tokens of a tiny randomly initialised vision tower in 150-300 SFT steps, as the missing piece. Not tried yet
(each changes the task, so it would be a new run of this page): larger images (84-112 px, 9-16 vision tokens), more
student SFT steps, a balanced answer distribution.
"""


def _vlm_task_section(results: dict[str, Any]) -> str:
    cfg, task = results["config"], results["task"]
    ex = task["example"]
    size = task.get("image_size", cfg.get("image_size"))
    return f"""## The task (VLM, generated on the fly)

A {size}x{size} px image (each image is {(size // 28) ** 2} vision tokens for Qwen2-VL: patch 14, merge 2; images are
not resized: `image_min_pixels` = `image_max_pixels` = {size}²) holds two or three shapes (circle, triangle,
square) in distinct colours, one per quadrant. The question names one shape by its colour and asks for its number of
corners; the answer is a short chain (the shape, its corner count, the answer). p = the labelled box of the queried
object (`privileged.boxes`, processor `boxes_text`, written in Qwen2-VL's grounding convention, 0-1000 coordinates).
The shape word is learnable from x (look at the shape of that colour) but with p it is a copy of the box label (a
shortcut the deployed student never has); the corner count is capability p does not contain. In a share of the
questions ({100 * cfg['hidden_fraction']:.0f}%) the queried shape is under a grey cover and the question asks about
"the shape under the grey cover": only p's label names it, an information gap no training recovers from x.

| | example (first training row) |
|---|---|
| x | image `{ex['images'][0]}` + `{ex['messages'][0]['content']}` |
| p | `{ex['privileged_text'].replace(chr(10), ' ')}` |
| y | `{ex['messages'][1]['content']}` |

{task['num_train']} training rows, {task['num_eval']} held-out rows (new images; {100 * task['hidden_fraction_eval']:.0f}%
covered-shape questions). Best held-out accuracy without p if every visible shape is recognised and the covered one
is guessed: {100 * task['accuracy_ceiling_without_p']:.0f}%. Held-out evaluation: greedy, without p
(`dopd.eval.evaluate_samples`, `answer` extractor, numeric metric).
"""


def _vlm_page(page: str, results: dict[str, Any], notes: str) -> str:
    """The text page's layout with the VLM task's title, task section, data names and notes."""
    cfg = results["config"]
    head, rest = page.split("## The task (text, generated on the fly)", 1)
    _, pipeline = rest.split("## Pipeline", 1)
    head = head.replace("# Privilege-illusion testbed", "# Privilege-illusion testbed: VLM task", 1)
    head = head.replace("re-run the command.*", "re-run the command. The text task: [testbed.md](testbed.md).*", 1)
    pipeline = pipeline.replace("`pi_text_train_mixed`", "`pi_vlm_train_mixed`, the boxes text written into the prompt")
    pipeline = pipeline.replace("`sft_view: privileged`,", "`sft_view: privileged`,", 1)
    extra = ", ".join(f"`{k}: {v}`" for k, v in cfg.get("sft_extra", {}).items())
    if extra:
        pipeline = pipeline.replace("3. Each method from that student:",
                                    f"   Both SFT runs also set {extra} (random-init tiny models: the vision tower is "
                                    "trained with them; distillation keeps the repo default, frozen).\n"
                                    "3. Each method from that student:", 1)
    pipeline = pipeline.replace('"visible-operand" / "hidden-operand": accuracy on the held-out questions whose third '
                                "operand is written in x / only\nin p.",
                                '"visible-shape" / "covered-shape": accuracy on the held-out questions whose queried '
                                "shape is drawn / under the grey cover\n(only p names it).")
    pipeline = pipeline.replace(EXPLORATION_NOTES, notes or VLM_NOTES)
    return head + _vlm_task_section(results) + "\n## Pipeline" + pipeline


# ------------------------------------------------------------------------------------------------- premise variant
PREMISE_START = "<!-- premise-variant:start (written by --variant premise) -->"
PREMISE_END = "<!-- premise-variant:end -->"
DIAG_STATS = ("teacher_rejected_frac", "priv_top_differs_frac", "priv_logp_gain", "grad_agrees_teacher_frac",
              "rejected_raised_frac")


def diagnostics_table(results: dict[str, Any], name: str) -> list[list[str]]:
    """Per regime: each diagnostic's mean over logged steps, then mean ± std over seeds (empty if never logged)."""
    per_seed = [s["methods"][name]["log"] for s in results["seeds"] if name in s["methods"]]
    rows = [["regime", *DIAG_STATS]]
    found = False
    for regime in (*REGIMES, "all"):
        cells = [regime]
        for stat in DIAG_STATS:
            key = f"dopd/{regime}/{stat}"
            vals = [statistics.fmean([r[key] for r in log if key in r]) for log in per_seed if any(key in r for r in log)]
            found |= bool(vals)
            cells.append(fmt(vals, scale=1.0 if stat == "priv_logp_gain" else 100.0,
                             digits=2 if stat == "priv_logp_gain" else 1))
        rows.append(cells)
    return rows if found else []


def premise_checks(results: dict[str, Any]) -> list[str]:
    """The paper's premises and the field's basic result, each stated from the numbers (per seed where it matters)."""
    seeds = results["seeds"]
    ref = {k: [s["reference"][k]["accuracy"] for s in seeds if k in s["reference"]] for k, _, _ in REFERENCE_ROWS}

    def pct(vals: list[float]) -> str:
        m, s = mean_std(vals)
        return f"{100 * m:.1f} ± {100 * s:.1f}%"

    lines = []
    tx, tp = ref["teacher_without_p"], ref["teacher_with_p"]
    sx, sp = ref["student_before"], ref["student_before_with_p"]
    better = sum(b > a for a, b in zip(tx, tp))
    lines.append(f"- Teacher better with p than without: {'yes' if better == len(tp) else 'no'} ({better} of "
                 f"{len(tp)} seeds; with p {pct(tp)}, without p {pct(tx)}).")
    above = sum(t > s for t, s in zip(tx, sx))
    lines.append(f"- Teacher without p above the student's start: {above} of {len(tx)} seeds "
                 f"(teacher {pct(tx)}, student {pct(sx)}).")
    ok = sum(b >= a for a, b in zip(sx, sp))
    lines.append(f"- Student's privileged view at least as good as its plain one (the paper's premise): "
                 f"{'yes' if ok == len(sp) else 'no'} ({ok} of {len(sp)} seeds; with p {pct(sp)}, without p {pct(sx)}).")
    if "vanilla_opd" in results["config"]["methods"]:
        gains = [s["methods"]["vanilla_opd"]["final"]["accuracy"] - s["reference"]["student_before"]["accuracy"]
                 for s in seeds if "vanilla_opd" in s["methods"]]
        up = sum(g > 0 for g in gains)
        m, sd = mean_std(gains)
        status = ("reached in every seed" if up == len(gains) else "reached in the mean only" if m > 0
                  else "NOT reached")
        lines.append(f"- The field's basic result on the test split (vanilla OPD, teacher without p, improves the "
                     f"start): {status}: {100 * m:+.1f} ± {100 * sd:.1f} points, "
                     f"above the start in {up} of {len(gains)} seeds.")
    return lines


def sft_probe_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The SFT budget probe's rows (`sft_probe`, validation split), one line per SFT run."""
    table = [["model", "SFT", "validation accuracy with p (%)", "without p (%)", "hidden-operand q. with p (%)"]]
    for r in rows:
        if r["role"] == "teacher":
            sft = f"{r['steps']} steps on x and x+p"
        else:
            sft = " then ".join(part for part in (
                f"{r['priv_steps']} steps on x+p" if r["priv_steps"] else "",
                f"{r['steps']} steps on x and x+p" if r["steps"] else "") if part)
        table.append([r["role"], sft, f"{100 * r['x+p']['accuracy']:.0f}", f"{100 * r['x']['accuracy']:.0f}",
                      f"{100 * r['x+p']['accuracy_hidden']:.0f}"])
    return table


def premise_section(results: dict[str, Any], png_name: str, command: str,
                    sft_probe: Optional[list[dict[str, Any]]] = None) -> str:
    cfg = results["config"]
    sel = results.get("lr_selection")
    labels_fix = ("teacher (SFT on x+p)", "teacher (SFT on x and x+p)") if cfg.get("teacher_data") == "mixed" else None
    acc_rows = accuracy_table(results)
    if labels_fix:
        acc_rows = [[c.replace(*labels_fix) for c in row] for row in acc_rows]
    parts = [PREMISE_START, "", "## Premise variant: a teacher good without p, a student that reads p, the lr chosen "
             "on validation", "",
             "```bash", command, "```", "",
             f"{'**Quick mode: a pipeline check, the numbers mean nothing.** ' if cfg['quick'] else ''}"
             f"Same task and methods as above, except: the teacher's SFT sees x and x+p "
             f"(`{cfg.get('teacher_data')}`: each training row twice, {cfg['teacher_steps']} steps), meant to make it "
             f"good without p and better with it; {student_line(cfg)} (both checked below); "
             f"a validation split ({cfg.get('num_val')} independent rows, `pi_text_val`) on which the distillation lr "
             f"is chosen among {', '.join(f'{lr:g}' for lr in cfg.get('lr_grid', ()))} by the field's basic result "
             f"(`{sel['method'] if sel else cfg.get('lr_select_method')}` from the common start, seed "
             f"{sel['seed'] if sel else cfg['seeds'][0]}, final validation accuracy without p; ties: the smaller lr), "
             f"then used for every method alike. Seeds {', '.join(str(s) for s in cfg['seeds'])}; wall time "
             f"{results['runtime_s'] / 60:.1f} min. Two things changed after earlier runs of this variant (listed at "
             "the end of this section): the SFT budgets, chosen by the premises on the validation split, and the lr "
             "grid, extended upward after a run whose choice sat at the grid's edge (there vanilla OPD was still "
             "rising at its last step on seed 0). Nothing was changed toward a ranking of the methods.", ""]
    if sft_probe:
        parts += ["### SFT budgets (validation split)", "",
                  "Chosen before any distillation run, on the validation split with seed 0's models, by the premises "
                  "alone (`python -m benchmarks.privilege_illusion.sft_probe`; rows in "
                  "`results/testbed_premise_sft_probe.jsonl`). The first premise run used 300 teacher "
                  "steps and 250 student steps on x and x+p: its teacher was worse with p than without and its "
                  "student read p badly.", "", markdown_table(sft_probe_table(sft_probe)), ""]
    if sel:
        parts += ["### Learning rate (validation split)", "",
                  markdown_table([["lr", "validation accuracy without p (%)"]] + [
                      ["start (no distillation)" if r["lr"] == 0 else f"{r['lr']:g}", f"{100 * r['accuracy']:.1f}"]
                      for r in sel["rows"]]), "",
                  f"Chosen: {sel['chosen_lr']:g}{grid_edge_note(sel)}; the basic result on validation "
                  f"{'is reached' if sel['improves_start_on_val'] else 'is NOT reached (no lr improved the start)'}.",
                  ""]
    parts += ["### Premises and the basic result", "", *premise_checks(results), "",
              "### Held-out accuracy (mean ± std over seeds)", "", markdown_table(acc_rows), "",
              "### What came out", "", *verdict(results), "",
              "### Token-pruning probe", "", markdown_table(probe_table(results)), "",
              "### DOPD routing", "", markdown_table(regime_table(results)), ""]
    diag = [(n, diagnostics_table(results, n)) for n in results["config"]["methods"]]
    diag = [(n, rows) for n, rows in diag if rows]
    if diag:
        parts += ["### Diagnostics (docs/objective.md): mean over logged steps, mean ± std over seeds", "",
                  "Percentages except `priv_logp_gain` (nats). Runs that score both privileged policies only.", ""]
        for name, rows in diag:
            parts += [f"`{name}`:", "", markdown_table(rows), ""]
    parts += [f"![premise variant: accuracy and entropy]({png_name})", ""]
    if not cfg["quick"]:
        parts += ["### Earlier runs", "", PREMISE_HISTORY]
    parts += [PREMISE_END]
    return "\n".join(parts)


PREMISE_HISTORY = """\
Earlier runs of this variant, not regenerated by this command:

1. **SFT budgets of the default page** (teacher 300 steps on x and x+p, student 250 steps on x and x+p; lr grid
   2e-5, 5e-5, 2e-4, chosen 2e-4; 3 seeds, 30 min): the premises failed. The teacher was better *without* p
   (71.7 ± 3.6 % vs 47.5 ± 30.6 % with p) and the student's privileged view worse than its plain one (14.8 ± 1.9 %
   vs 38.7 ± 9.6 %). Vanilla OPD (teacher without p) ended 4.5 ± 11.7 points below the start; DOPD 4.7 ± 3.5 %.
   This led to the SFT budget probe above.
2. **These SFT budgets, lr grid 2e-5, 5e-5, 2e-4** (3 seeds, 22 min with the SFT runs, which the run above reused
   from this one's work folder, so its wall time leaves them out): the lr search chose 2e-4, the grid's largest
   (validation 11 % -> 20 %). Teacher better with p in 2 of 3 seeds (83.2 ± 11.7 % vs 75.2 ± 0.8 %), the student's
   privileged view better than its plain one in 3 of 3 (65.7 ± 13.7 % vs 18.8 ± 15.8 %). On the test split vanilla
   OPD ended -0.3 ± 6.8 points from the start (18.8 %; seed 0 rose 9.0 -> 16.5 % and was still rising at the last
   step, seeds 1 and 2 fell), `uniform_dual` +16.8 ± 14.6, DOPD -4.3 ± 4.3, OPSD 0.0 %. Per-seed numbers:
   `results/testbed_premise_lr_grid_to_2e-4.json`. Because the choice sat at the grid's edge, the grid was
   extended upward (`LR_GRID_PREMISE`) and the variant re-run; nothing else changed.
"""


def grid_edge_note(sel: dict[str, Any]) -> str:
    """A choice at the edge of the grid says that the best lr may lie outside it."""
    lrs = [r["lr"] for r in sel["rows"] if r["lr"]]
    if len(lrs) > 1 and sel["chosen_lr"] == max(lrs):
        return " (the largest of the grid: larger rates were not tried)"
    if len(lrs) > 1 and sel["chosen_lr"] == min(lrs):
        return " (the smallest of the grid: smaller rates were not tried)"
    return ""


def student_line(cfg: dict[str, Any]) -> str:
    if cfg.get("student_priv_steps"):
        return (f"the student first reads p ({cfg['student_priv_steps']} steps on x+p alone, privileged view), then "
                f"{cfg['student_steps']} steps on x and x+p, so that its privileged view is at least as good as its "
                "plain one with room left without p")
    return f"the student as above ({cfg['student_steps']} steps on x and x+p)"


def write_premise_section(results: dict[str, Any], report_dir: str | Path, command: str,
                          sft_probe: Optional[list[dict[str, Any]]] = None) -> dict[str, str]:
    """Write (or replace) the premise variant's section at the end of testbed.md in `report_dir`, and its PNG;
    `sft_probe`: the rows that chose the SFT budgets (`sft_probe.py`)."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    png = plot_curves(results, report_dir / "testbed_premise_curves.png")
    md = report_dir / "testbed.md"
    page = md.read_text(encoding="utf-8") if md.is_file() else "# Privilege-illusion testbed\n"
    section = premise_section(results, Path(png).name, command, sft_probe)
    if PREMISE_START in page and PREMISE_END in page:
        head, rest = page.split(PREMISE_START, 1)
        page = head + section + rest.split(PREMISE_END, 1)[1]
    else:
        page = page.rstrip("\n") + "\n\n" + section + "\n"
    md.write_text(page, encoding="utf-8")
    return {"markdown": str(md), "curves": png}


def keep_premise_section(md: Path, new_page: str) -> str:
    """The default page, regenerated, keeps the premise variant's and the confirmation's sections the old page
    held."""
    if not md.is_file():
        return new_page
    old = md.read_text(encoding="utf-8")
    for start, end in ((PREMISE_START, PREMISE_END), (CONFIRM_START, CONFIRM_END)):
        if start in old and end in old:
            section = start + old.split(start, 1)[1].split(end, 1)[0] + end
            new_page = new_page.rstrip("\n") + "\n\n" + section + "\n"
    return new_page


# ------------------------------------------------------------------------------------------------- confirmation
CONFIRM_START = "<!-- confirm-variant:start (written by --variant confirm) -->"
CONFIRM_END = "<!-- confirm-variant:end -->"
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and two-sided 95% Student-t interval over seeds (NaN bounds with one value)."""
    m, s = mean_std(values)
    n = len(values)
    if n < 2:
        return m, float("nan"), float("nan")
    half = _T975.get(n - 1, 1.96) * s / math.sqrt(n)
    return m, m - half, m + half


def _ci(values: list[float]) -> str:
    m, lo, hi = t_interval(values)
    if math.isnan(m):
        return "–"
    return f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if not math.isnan(lo) else f"{100 * m:.1f}"


def per_seed_table(results: dict[str, Any], base: str = "dopd") -> list[list[str]]:
    """Final held-out accuracy per seed, the seed mean with its 95% t-interval, and the paired difference from
    `base` (same seed, same start) with its interval."""
    seeds = results["seeds"]
    labels = _method_labels()
    rows = [["run", *[f"seed {s['seed']}" for s in seeds], "mean [95% CI over seeds]",
             f"minus `{base}`, paired [95% CI] (pts)"]]
    starts = [s["reference"]["student_before"]["accuracy"] for s in seeds]
    base_acc = {s["seed"]: s["methods"][base]["final"]["accuracy"] for s in seeds if base in s["methods"]}
    rows.append(["start (no distillation)", *[f"{100 * a:.1f}" for a in starts], _ci(starts),
                 _ci([a - base_acc[s["seed"]] for s, a in zip(seeds, starts) if s["seed"] in base_acc])])
    for name in results["config"]["methods"]:
        accs = [s["methods"][name]["final"]["accuracy"] if name in s["methods"] else None for s in seeds]
        done = [a for a in accs if a is not None]
        if not done:
            continue
        diffs = [a - base_acc[s["seed"]] for s, a in zip(seeds, accs) if a is not None and s["seed"] in base_acc]
        rows.append([f"{labels.get(name, name)} (`{name}`)", *["–" if a is None else f"{100 * a:.1f}" for a in accs],
                     _ci(done), "" if name == base else _ci(diffs)])
    return rows


def confirm_lines(results: dict[str, Any], base: str = "dopd") -> list[str]:
    """Sentences computed from the numbers: each method against the start and against `base`, paired by seed."""
    seeds = results["seeds"]
    lines = []
    for name in results["config"]["methods"]:
        pairs = [(s["methods"][name]["final"]["accuracy"], s["reference"]["student_before"]["accuracy"],
                  s["methods"][base]["final"]["accuracy"] if base in s["methods"] else None)
                 for s in seeds if name in s["methods"]]
        if not pairs:
            continue
        vs_start = [a - st for a, st, _ in pairs]
        m, lo, hi = t_interval(vs_start)
        above = sum(v > 0 for v in vs_start)

        def interval(lo: float, hi: float) -> str:
            return f" [95% CI {100 * lo:+.1f}, {100 * hi:+.1f}]" if not math.isnan(lo) else " (one seed: no interval)"

        text = (f"- `{name}`: {100 * m:+.1f} points vs the start{interval(lo, hi)}, above it "
                f"in {above} of {len(pairs)} seeds")
        if name != base and all(b is not None for _, _, b in pairs):
            d = [a - b for a, _, b in pairs]
            dm, dlo, dhi = t_interval(d)
            sep = ("" if math.isnan(dlo) else
                   "the interval excludes 0; " if (dlo > 0 or dhi < 0) else "the interval includes 0; ")
            text += (f"; vs `{base}` {100 * dm:+.1f}{interval(dlo, dhi)} ({sep}higher in "
                     f"{sum(v > 0 for v in d)} of {len(d)} seeds)")
        lines.append(text + ".")
    return lines


def confirm_section(results: dict[str, Any], png_name: str, command: str) -> str:
    cfg = results["config"]
    sel = results.get("lr_selection")
    acc_rows = accuracy_table(results)
    if cfg.get("teacher_data") == "mixed":
        acc_rows = [[c.replace("teacher (SFT on x+p)", "teacher (SFT on x and x+p)") for c in row] for row in acc_rows]
    dopd_like = tuple(n for n in cfg["methods"] if n.startswith("dopd"))
    setting = ("The premise variant above (same task, SFT budgets, lr grid and lr rule) on seeds "
               f"{', '.join(str(s) for s in cfg['seeds'])}, which no hypothesis was drawn from (the hypotheses of "
               "docs/objective.md, 'When DOPD hurts, and why', came from seeds 0-2 of the default text page). "
               if cfg.get("task", "text") == "text" else
               "This page's task, models and settings (lr "
               f"{cfg['distill_lr']:g}, as above) on seed(s) {', '.join(str(s) for s in cfg['seeds'])}, with the "
               "methods of the text testbed's mechanism check; no hypothesis was drawn from this task. ")
    parts = [CONFIRM_START, "", "## Mechanism check (issue 24)", "",
             "```bash", command, "```", "",
             f"{'**Quick mode: a pipeline check, the numbers mean nothing.** ' if cfg['quick'] else ''}"
             f"{setting}The methods "
             "were fixed before any run: the start, vanilla OPD with the privileged teacher (sampled-token), the same "
             "with the full-vocabulary reverse KL (`vanilla_opd_full_rkl`: separates the estimator from the routing), "
             "DOPD, DOPD + `teacher_veto`, DOPD + `routing_statistic: top1`, and DOPD with HS's target the teacher "
             "(`dopd_hs_teacher`). Each is a preset or a config key; everything else is the repo default. "
             f"{cfg['distill_steps']} steps, {cfg['distill_batch']} prompts × {cfg['num_generations']} rollouts, "
             f"held-out accuracy without p on {cfg['num_eval']} questions. Wall time "
             f"{results['runtime_s'] / 60:.1f} min.", ""]
    if sel:
        parts += ["### Learning rate (validation split, as in the premise variant)", "",
                  markdown_table([["lr", "validation accuracy without p (%)"]] + [
                      ["start (no distillation)" if r["lr"] == 0 else f"{r['lr']:g}", f"{100 * r['accuracy']:.1f}"]
                      for r in sel["rows"]]), "",
                  f"`{sel['method']}` (teacher without p) on seed {sel['seed']}; chosen: {sel['chosen_lr']:g}"
                  f"{grid_edge_note(sel)}, used for every method; the basic result on validation "
                  f"{'is reached' if sel['improves_start_on_val'] else 'is NOT reached (no lr improved the start)'}.",
                  ""]
    parts += ["### Premises", "", *premise_checks(results), "",
              "### Held-out accuracy", "", markdown_table(per_seed_table(results)), "",
              f"Intervals: Student t over the {len(cfg['seeds'])} seed(s) (none with one seed); the paired column "
              "compares each method with DOPD on the same seed (same teacher, start and data). One held-out accuracy "
              f"of {cfg['num_eval']} questions has a binomial 95% interval of about "
              f"±{100 * 1.96 * math.sqrt(0.25 / max(cfg['num_eval'], 1)):.0f} points at most by itself.", "",
              markdown_table(acc_rows), "",
              "### What came out (computed from the numbers)", "", *confirm_lines(results),
              *constant_answer_lines(results), "",
              "### Routing of the DOPD variants (mean over logged steps, mean ± std over seeds)", "",
              markdown_table(regime_table(results, dopd_like)), ""]
    diag = [(n, diagnostics_table(results, n)) for n in dopd_like]
    diag = [(n, rows) for n, rows in diag if rows]
    if diag:
        parts += ["### Diagnostics (docs/objective.md): mean over logged steps, mean ± std over seeds", "",
                  "Percentages except `priv_logp_gain` (nats).", ""]
        for name, rows in diag:
            parts += [f"`{name}`:", "", markdown_table(rows), ""]
    parts += gradient_probe_part(results)
    parts += [f"![mechanism check: accuracy and entropy]({png_name})", "", CONFIRM_END]
    return "\n".join(parts)


GRADIENT_PROBE = TESTBED_GRADIENT_PROBE


def gradient_probe_part(results: dict[str, Any], path: Path = GRADIENT_PROBE) -> list[str]:
    """The per-token gradient probe (`gradient_probe.py`) on this section's seeds, when its JSON holds them."""
    import json

    if not path.is_file() or results["config"].get("task", "text") != "text":
        return []
    probe = json.loads(path.read_text(encoding="utf-8"))
    seeds = [str(s) for s in results["config"]["seeds"] if str(s) in probe["seeds"]]
    if not seeds:
        return []
    rows = [["seed", "tokens (HT / rejected HS)", "HT: gradient norm of JS(s, T)", "HT: of KL(s ‖ T)",
             "rejected HS: Δ log s(y), HS term (S_p)", "same term to T", "vanilla sampled term to T"]]
    for k in seeds:
        r = probe["seeds"][k]
        c, g, d = r["counts"], r["ht_grad_norm"], r["rejected_hs_dlogp"]
        rows.append([k, f"{c['tokens']} ({c['ht']} / {c['hs_rejected']})", f"{g['js']['mean']:.3f}",
                     f"{g['rkl']['mean']:.3f}", f"{d['hs_term_to_priv']['mean']:+.3f}",
                     f"{d['same_term_to_teacher']['mean']:+.3f}", f"{d['vanilla_sampled_to_teacher']['mean']:+.3f}"])
    return ["### Per-token gradients at the start (`gradient_probe.py`)", "",
            f"`{probe['command']}`: the trainer runs {probe['steps']} DOPD steps at lr 0 from each seed's start "
            "(the student does not move; each step rolls out new answers) and each token's gradient is taken wrt its "
            "student logits. Means over tokens. HT: the L2 norm of the gradient of each full-vocabulary divergence "
            "to the teacher on the tokens DOPD routes to HT. Rejected HS tokens (q_T < 0.1, not the teacher's top "
            "choice): the first-order change of log s(y) per unit gradient-descent step (< 0: lowered) under the "
            "paper's HS term (0.6 × top-K reverse KL to S_p), the same term to the teacher, and vanilla OPD's "
            "sampled-token term to the teacher. Numbers: `results/testbed_gradient_probe.json`.", "",
            markdown_table(rows), ""]


def write_confirm_section(results: dict[str, Any], report_dir: str | Path, command: str) -> dict[str, str]:
    """Write (or replace) the confirmation's section at the end of testbed.md in `report_dir`, and its PNG."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    vlm = results["config"].get("task", "text") == "vlm"
    png_name = "testbed_confirm_vlm_curves.png" if vlm else "testbed_confirm_curves.png"
    png = plot_curves(results, report_dir / png_name)
    md = report_dir / ("testbed_vlm.md" if vlm else "testbed.md")
    page = md.read_text(encoding="utf-8") if md.is_file() else "# Privilege-illusion testbed\n"
    section = confirm_section(results, Path(png).name, command)
    if CONFIRM_START in page and CONFIRM_END in page:
        head, rest = page.split(CONFIRM_START, 1)
        page = head + section + rest.split(CONFIRM_END, 1)[1]
    else:
        page = page.rstrip("\n") + "\n\n" + section + "\n"
    md.write_text(page, encoding="utf-8")
    return {"markdown": str(md), "curves": png}


def compact_results(results: dict[str, Any], keep_every: int = 10) -> dict[str, Any]:
    """The results without most per-step logs (every `keep_every`-th logged step kept), for results/."""
    out = dict(results)
    out["seeds"] = []
    for s in results["seeds"]:
        s = dict(s)
        s["methods"] = {n: {**m, "log": [r for r in m["log"] if r.get("step", 0) % keep_every == 0]}
                        for n, m in s["methods"].items()}
        out["seeds"].append(s)
    return out
