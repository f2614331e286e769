"""docs/real_pair.md (and its curves PNG) from the records of results/real_pair.jsonl.

The page states what the records hold, nothing else: stages without a record are listed as not run, with their
command. Accuracies carry binomial 95% intervals (Wilson score).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Optional

from benchmarks.paths import REAL_PAIR_PREDICTIONS

REGIMES = ("HT", "HS", "LH", "LL", "all")
DIAG = ("teacher_rejected_frac", "priv_top_differs_frac", "priv_logp_gain", "grad_agrees_teacher_frac",
        "rejected_raised_frac")
METHOD_LABELS = {"vanilla_opd": "vanilla OPD, teacher without p", "vanilla_opd_priv": "vanilla OPD, teacher with p",
                 "dopd": "DOPD", "dopd_veto": "DOPD + teacher veto",
                 "vanilla_opd_priv_full_rkl": "vanilla OPD, teacher with p, full reverse KL"}
STAGES = ("template", "reference", *METHOD_LABELS)
PREDICTIONS = REAL_PAIR_PREDICTIONS


NOTES = """- Precision: both models run in float32. On this machine (2 AVX2 cores, no bf16 instructions) a forward pass of
  the 0.5B on 4 x 256 tokens took 83 s in float32 and 330 s in bfloat16 (measured 2026-11-29 under load, same
  process, one after the other), and a pure-bf16 AdamW step rounds away updates of ~1e-5 on weights of ~1e-2 (bf16
  spacing there is ~1e-4), so training in bf16 would be both slower and mostly a no-op. Memory: ~8 GB for the
  1.5B teacher's evaluation, ~16 GB for a training run (student weights, gradients and AdamW moments in float32 plus
  the teacher).
- Runtime: the stages were run one at a time at the lowest priority (`nice -n 10`) on a 2-core machine shared with
  four other sessions (load average 7-12), so the seconds on this page are contended wall time, not the machine's
  speed. Stages listed as not run had not finished by the time this page was written; their commands are above.
- Sizing: steps and evaluation points were set from the uncontended figures in DESIGN.md (0.5B ~100 tokens/s for 8
  sequences, a 0.5B DOPD step with 8 answers of 128 tokens ~30 s). Under the load of 2026-11-29 the teacher's first
  validation evaluation (20 problems, greedy answers of ~730 characters, ~180 tokens) took 72 min of wall time, so
  nothing past the hint-template measurement finished that day; each later stage appends its numbers here when it
  ends (`--report-only` regenerates the page).
- Measured speed (2026-11-29, plain transformers `generate`, float32, the 0.5B, idle machine): 25 sequences decode
  at ~0.82 s per step (33 ms per token; 1 sequence 233 ms, 64 sequences 23.5 ms per token), and the prefill of 25
  prompts takes ~12 s. A greedy 200-problem evaluation (answers of ~800 characters, up to 256 tokens) is therefore
  ~30 min of both cores for the 0.5B and about three times that for the 1.5B, and the whole page (reference stage,
  then three methods with two evaluations each) about 7 hours of an otherwise idle 2-core CPU. The start's
  evaluation below took 7,668 s because it ran at low priority beside benchmarks and test runs for most of that
  time.
- One seed; the learning rate (1e-5, constant) was set before any run and not tuned. With 8 steps of 8 answers a
  method sees 16 of the training problems: a change of a few points on 200 held-out problems is within the
  intervals.
- Session of 2026-11-29, 19:48-22:45 UTC (the methods): run one at a time on the otherwise idle machine with
  `--eval-every 8 --eval-batch 100` (one held-out evaluation, after the last step; the start is the reference
  stage's `student/x`, same problems, template and greedy decoding). Batch size does not change greedy answers
  here: the 0.5B's answers to 8 held-out problems (96 new tokens) were identical at batch 8 and batch 1. A
  200-problem evaluation of the 0.5B took 1,074 s at batch 100 (against 1,959 s at batch 25 for the same model
  with p). A training run holds ~17.5 GB (resident memory of `vanilla_opd_priv` and `dopd` read during training:
  student in float32 with gradients and AdamW moments, the float32 teacher, the cached hidden states); the first `dopd` attempt was killed
  by the kernel's out-of-memory killer when a 3 GB check ran beside it on this 24 GB machine, and was run again
  alone (same loss at step 1: the run is deterministic).
- Vanilla OPD lowered the student's held-out accuracy from 67.0% to 33.0% in 8 steps. Its loss (the sampled
  reverse-KL estimate, log s(y) - log t(y) averaged over the sampled tokens) rose from 0.12 at step 1 to 0.27-0.38
  at steps 6-8, and the gradient norm was 14-36 before clipping to 1: with 8 answers per step and AdamW's first
  steps moving every weight by about the learning rate, these steps moved the student away from the teacher on its
  own samples. Rollouts were cut at 128 tokens (every one reached the cap; held-out answers run to ~200 tokens), so
  the end of an answer, where the number is written, is never trained on. The learning rate was not chosen on the
  validation split (issue 14 asks that for the testbed); a smaller one (the paper uses 5e-6 with 512 answers per
  step) or larger steps are the next run, not made here.
- DOPD, same steps, data and learning rate, fell further: 1.0% (2/200). Its diagnostics show the privilege
  illusion of the testbed again: p does not raise the privileged student's log-probability of the sampled token
  (gain -0.02 nats overall), the teacher rejects 34% of the tokens routed to HS (target: the privileged student,
  17% of tokens), and on those the step raised log s(y) in 55% of cases. The trained weights are deleted after
  each run (only numbers are kept) and the in-training evaluation keeps no answers, so what the collapsed student
  writes was not inspected; no implementation cause was looked for or excluded in this session.
  `vanilla_opd_priv` was stopped by hand after 2 of its 8 steps to give the CPU to DOPD (its record is kept as
  `stopped`), and the teacher's held-out evaluations have not run.
- Session of 2026-12-04 (why lr 1e-5 collapsed; the runs at 3e-6). The probe section above checks the trainer on
  these weights: its chunked loss has exactly the gradient of a plain full-logits reference (cosine 1.000000), a
  small step against that gradient lowers the full-vocabulary reverse KL at the sampled positions and a step along
  it raises it. So the objective points the right way; the step size does not. AdamW's first step moves each of the
  630M trained parameters by about lr, an L2 norm of lr x 25,103: 0.25 at lr 1e-5, ten times the 0.02 step along
  the gradient that still helped. After that one step the full KL rose by 86% while the sampled estimate (the logged
  loss) fell to -0.33: the update piles mass on the tokens that were sampled instead of moving toward the teacher,
  which matches the falling entropy (0.25 -> 0.11-0.15) and rising loss of the 1e-5 run. The rule "largest full-KL
  decrease after one AdamW step, on the first training batch" picked 3e-6 (1e-6 was next); it was fixed before any
  run at 3e-6 and uses no validation or test problem (issue 14 asks for a validation split; 20 validation problems
  could not separate these rates, and one sweep run per rate did not fit this session: said so, not done). The
  rate was read off a first run of the probe at 14:58 UTC, before it became the committed script; the committed
  script, run again at 15:58, printed the same numbers to the last digit.
  At 3e-6 vanilla OPD no longer collapses (66.0% against the start's 67.0%, loss 0.12 -> 0.03 over the 8 steps),
  and it does not improve the student either: 8 steps of 8 answers are too few to move a 200-problem accuracy, or
  the teacher's token-level preferences on these problems do not carry its higher accuracy; this run cannot tell
  which. **DOPD at the same 3e-6 still collapses: 11.0% (22/200).** Its answers show how: 137 of 200 now solve
  the problem by writing a Python block followed by an invented "```output" block (21 of those 137 right), a style
  that none of vanilla OPD's 200 answers at 3e-6 uses; the 63 answers without code are right once. (Counted in the
  kept predictions: an answer "has code" when it contains "```python".) The diagnostics look as at 1e-5: the
  privileged student gains nothing from p (-0.02 nats), the teacher rejects 29% of the HS tokens and the step
  raises log s(y) on 60% of them. **Vanilla OPD with the privileged teacher at 3e-6: 48.0% (96/200)**, 19 points
  below the start with the same sampled-token objective that kept 66.0% when the teacher did not see p. Its answers
  write no code (5 of 200 contain a Python block) but run longer: 50 of 200 reach the 256-token evaluation cap
  (vanilla OPD 16, DOPD 4). So a teacher that sees p already pulls this student down here, and DOPD, whose HS and LL
  terms target the privileged student instead of the teacher and whose HT term is a full-vocabulary JS, falls much
  further and changes style; which of those terms brings the code was not isolated (a run per routing-table variant,
  e.g. `prune_mode`, would). The held-out answers of each run at 3e-6 are kept (`predictions` in the records; copies in
  `results/real_pair_predictions/`). The runs took ~110 s per step and ~570 s per evaluation on the
  otherwise idle machine.
- Session of 2026-12-04, 17:37-19:07 UTC: the teacher's held-out evaluations (`--method reference --eval-batch
  100`, same 200 problems, template and greedy decoding as the start). **Teacher without p 80.5% (161/200), with p
  74.0% (148/200).** On the test split p lowers the 1.5B's accuracy by 6.5 points (the intervals overlap), although
  it answered 17 of 20 validation problems with p and the issue's 40-problem check with plain transformers and
  another prompt found 95% with p against 82.5% without. So in this pair the teacher is better than the student
  (80.5% against 67.0%) but not better with p: the paper's premise "a teacher helped by p" does not hold on this
  split with this template. That fits the ranking at 3e-6: the methods whose target sees p (vanilla OPD with the
  privileged teacher 48.0%, DOPD 11.0%) end below the one whose teacher does not (66.0%). The teacher's x+p
  evaluation took 3,531 s while other jobs shared the CPU; x took 1,802 s alone.
- Session of 2026-12-05, 12:20-13:40 UTC: the first attempts at issue 24's setting 3 were killed by the kernel's
  out-of-memory killer on a machine shared with other sessions (a run needs ~18 GB and both cores); nothing was
  measured then.
- Session of 2026-12-05, 14:15-16:05 UTC (issue 24, setting 3; methods fixed by the issue before any run, one run
  each, lr 3e-6, 8 steps, seed 0, everything else as the runs above; the machine otherwise idle except for short test
  runs): **DOPD + teacher veto 43.5% [36.8, 50.4] (87/200); vanilla OPD with the privileged teacher and the
  full-vocabulary reverse KL 43.5% [36.8, 50.4] (87/200).** The equal counts are a coincidence: the two runs' 200
  answers differ everywhere (no answer identical) and 60 problems are right in both. Against DOPD at the same lr
  (11.0%, 22/200) the veto's interval is clear of DOPD's; both new runs are still 23.5 points below the start (67.0%)
  and 4.5 below vanilla OPD with the privileged teacher and the sampled-token estimator (48.0%; intervals overlap).
  Python blocks in the held-out answers: 14 of 200 with the veto (DOPD 137), 1 of 200 with the full reverse KL
  (sampled-token: 5). With the veto the tokens the teacher rejects sit in HT (27.6% of HT's tokens, HS 0.0%), and the
  step raised log s(y) on 19.3% of them, against 60.1% of DOPD's rejected HS tokens. The first three answer tokens of
  the training rollouts: veto HT 37%, HS 29%, LH 24%, LL 10%; full reverse KL (regimes computed for the diagnostics
  only; vanilla OPD does not route) HT 29%, HS 30%, LH 23%, LL 19%. DOPD's runs predate that metric. Wall time:
  38 min and 35 min (204 and 176 s per step, held-out evaluation ~10 min each)."""


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def acc_cell(correct: Optional[int], n: Optional[int]) -> str:
    if correct is None or not n:
        return "–"
    lo, hi = wilson(int(correct), int(n))
    return f"{100 * correct / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def latest(records: list[dict[str, Any]], stage: str, part: Optional[str] = None) -> Optional[dict[str, Any]]:
    for rec in reversed(records):
        if rec.get("stage") == stage and (part is None or rec.get("part") == part):
            return rec
    return None


def method_runs(records: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The latest finished run of each method at each learning rate: [(method, record)], methods in the page's
    order, larger learning rates first."""
    found: dict[tuple[str, float], dict[str, Any]] = {}
    for rec in records:
        if rec.get("stage") in METHOD_LABELS and rec.get("part") == "method":
            found[(rec["stage"], float(rec["config"]["lr"]))] = rec
    order = list(METHOD_LABELS)
    return [(m, rec) for (m, lr), rec in sorted(found.items(), key=lambda kv: (order.index(kv[0][0]), -kv[0][1]))]


def run_name(method: str, run: dict[str, Any]) -> str:
    return f"{method} lr {run['config']['lr']:g}"


def _probe_section(probe: dict[str, Any]) -> list[str]:
    """The one-step probe of benchmarks/real_pair_lr_probe.py (the gradient check and what one step does)."""
    b_full, b_s = probe["kl_full_before"], probe["kl_sampled_before"]
    rows = [["step", "L2 norm of the step", "full reverse KL", "change", "sampled estimate (the loss)", "change"]]
    for r in probe["direction"]:
        rows.append([f"{r['step']} along the gradient", f"{r['l2']:g}", f"{r['kl_full']:.4f}",
                     f"{r['kl_full'] - b_full:+.4f}", f"{r['kl_sampled']:.4f}", f"{r['kl_sampled'] - b_s:+.4f}"])
    for r in probe["adam_first_step"]:
        rows.append([f"AdamW first step, lr {r['lr']:g}", f"{r['l2']:.4f}", f"{r['kl_full']:.4f}",
                     f"{r['kl_full'] - b_full:+.4f}", f"{r['kl_sampled']:.4f}", f"{r['kl_sampled'] - b_s:+.4f}"])
    return [
        "## One step on real weights (`python -m benchmarks.real_pair_lr_probe`)", "",
        f"The first training batch ({probe['batch']} prompts x {probe['num_generations']} rollouts of "
        f"{probe['max_new_tokens']} tokens, {probe['sampled_tokens']} sampled tokens), `{probe['method']}`'s loss "
        f"through the trainer, {probe['trained_parameters'] / 1e6:.0f}M trained parameters (this checkpoint's "
        f"lm_head is not tied to its embeddings). Gradient of the trainer's chunked loss against a plain full-logits "
        f"reference of the sampled-token reverse KL: norms {probe['grad_norm_trainer']:.4g} and "
        f"{probe['grad_norm_reference']:.4g}, cosine {probe['grad_cosine']:.6f}. Before the step: full-vocabulary "
        f"reverse KL(s || t) at the sampled positions {b_full:.4f}, its sampled estimate {b_s:.4f}. An AdamW first "
        "step moves every parameter by lr x sign(gradient): an L2 norm of lr x sqrt(parameters), whatever the "
        "gradient's scale.", "", table(rows), "",
        f"Suggested learning rate (largest full-KL decrease after one AdamW step, a rule on this training batch "
        f"only): {probe['suggested_lr']} ({probe['finished']}).", ""]


def python_answers(method: str, run: dict[str, Any], predictions_dir: Path = PREDICTIONS
                   ) -> Optional[tuple[int, int]]:
    """(answers holding a Python block, answers) in the run's last held-out evaluation, from the kept copy of its
    answers (`<method>-lr<lr>-step<N>.jsonl`); None when no copy is kept. "Holds a Python block": contains
    "```python"."""
    if not run.get("curve"):
        return None
    path = predictions_dir / f"{method}-lr{run['config']['lr']:g}-step{run['curve'][-1]['step']}.jsonl"
    if not path.is_file():
        return None
    import json

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sum("```python" in str(r["predictions"][0]) for r in rows), len(rows)


def first_tokens_cells(run: dict[str, Any]) -> list[str]:
    """Per regime, the share of the first three tokens of each training rollout routed there (mean over steps of
    `dopd/<R>/first3_frac`); "–" when the run did not log it."""
    log = run.get("log", [])
    cells = []
    for regime in REGIMES[:4]:
        vals = [r[f"dopd/{regime}/first3_frac"] for r in log if f"dopd/{regime}/first3_frac" in r]
        cells.append(f"{100 * statistics.fmean(vals):.0f}%" if vals else "–")
    return cells


def mechanism_section(runs: list[tuple[str, dict[str, Any]]], predictions_dir: Path = PREDICTIONS) -> list[str]:
    """The runs at 3e-6 side by side: accuracy, answers with a Python block, the regimes of the first answer tokens."""
    rows = [["run (lr 3e-6, step 8)", "accuracy % [95% CI]", "answers with a Python block",
             *[f"first 3 tokens in {r}" for r in REGIMES[:4]]]]
    for name, run in runs:
        if float(run["config"]["lr"]) != 3e-6 or not run.get("curve"):
            continue
        final = run["curve"][-1]
        n = int(final.get("n") or 0)
        counted = python_answers(name, run, predictions_dir)
        rows.append([f"{METHOD_LABELS[name]} (`{name}`)", acc_cell(round(final["accuracy"] * n), n),
                     f"{counted[0]} of {counted[1]}" if counted else "–", *first_tokens_cells(run)])
    if len(rows) == 1:
        return []
    return ["## Mechanism check (issue 24)", "",
            "The runs at lr 3e-6 side by side. \"Answers with a Python block\": held-out answers (last evaluation) "
            "containing \"```python\", counted in the kept answers (`results/real_pair_predictions/`). "
            "\"First 3 tokens in R\": the share of the first three tokens of each training rollout that the routing "
            "put in regime R (`dopd/<R>/first3_frac`, mean over the 8 steps; with the veto, after it); \"–\" for runs "
            "made before the metric existed or that score no privileged policy.", "", table(rows), ""]


def _diag_table(run: dict[str, Any]) -> Optional[str]:
    log = run.get("log", [])
    rows = [["regime", "token share (%)", *DIAG]]
    any_value = False
    for regime in REGIMES:
        cells = [regime]
        frac = [r[f"dopd/{regime}/token_frac"] for r in log if f"dopd/{regime}/token_frac" in r]
        cells.append(f"{100 * statistics.fmean(frac):.1f}" if frac else ("100" if regime == "all" else "–"))
        for stat in DIAG:
            vals = [r[f"dopd/{regime}/{stat}"] for r in log if f"dopd/{regime}/{stat}" in r]
            any_value |= bool(vals)
            if not vals:
                cells.append("–")
            elif stat == "priv_logp_gain":
                cells.append(f"{statistics.fmean(vals):+.2f}")
            else:
                cells.append(f"{100 * statistics.fmean(vals):.1f}%")
        rows.append(cells)
    return table(rows) if any_value else None


def plot(records: list[dict[str, Any]], start: Optional[dict[str, Any]], path: Path) -> Optional[str]:
    runs = {run_name(m, r): r for m, r in method_runs(records)}
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_diag) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, run in runs.items():
        pts = ([(0, start["accuracy"])] if start else []) + [(p["step"], p["accuracy"]) for p in run["curve"]]
        if pts:
            ax_acc.plot([s for s, _ in pts], [100 * a for _, a in pts], marker="o", label=name)
        log = run.get("log", [])
        for regime, style in (("HS", "-"), ("all", "--")):
            key = f"dopd/{regime}/rejected_raised_frac"
            dp = [(r["step"], r[key]) for r in log if key in r]
            if dp:
                ax_diag.plot([s for s, _ in dp], [100 * v for _, v in dp], style, marker=".", label=f"{name} {regime}")
    ax_acc.set(xlabel="step", ylabel="held-out accuracy without p (%)", title="accuracy (greedy, held-out)")
    ax_diag.set(xlabel="step", ylabel="%", title="teacher-rejected tokens whose step raises log s(y)")
    ax_acc.legend(fontsize=8)
    if ax_diag.lines:
        ax_diag.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
    return path.name


def eval_every_text(records: list[dict[str, Any]], cfg: dict[str, Any]) -> str:
    """The methods' own evaluation interval(s), from their records (a reference record's config has the default)."""
    every = sorted({r["config"]["eval_every"] for r in records
                    if r.get("stage") in METHOD_LABELS and r.get("curve") and "eval_every" in r.get("config", {})})
    return " / ".join(str(e) for e in every) if every else str(cfg.get("eval_every"))


def _status_section(records: list[dict[str, Any]]) -> list[str]:
    done = {s: latest(records, s, "done" if s in ("template", "reference") else "method") is not None for s in STAGES}
    return ["## Status", "", table([["stage", "status", "command"]] + [
        [s, "finished" if done[s] else ("partial" if latest(records, s) else "**not run yet**"),
         f"`python -m benchmarks.real_pair --method {s}`"] for s in STAGES]), ""]


def _task_section(records: list[dict[str, Any]], cfg: dict[str, Any], task: dict[str, Any]) -> list[str]:
    ex = task.get("example")
    lines = ["## Task and settings", "",
             "Two-step arithmetic word problems generated on the fly (`benchmarks/real_pair.py`, `make_problem`: "
             "four kinds, a product then a sum, difference or remainder). p = a step hint: the first step worked "
             "out, never the final answer. Splits are disjoint: "
             f"{task.get('num_rp_train', '?')} training-stream, {task.get('num_rp_val', '?')} validation, "
             f"{task.get('num_rp_eval', '?')} held-out test problems (task seed {cfg.get('task_seed')}).", ""]
    if ex:
        lines += [table([["", "first training problem"], ["x", f"`{ex['messages'][0]['content']}`"],
                         ["p", f"`{ex['privileged']}`"], ["answer", f"`{ex['meta']['answer']}`"]]), ""]
    return lines + [
        f"Student `{Path(cfg.get('student') or 'tiny').name}`, teacher `{Path(cfg.get('teacher') or 'tiny').name}` "
        f"(real checkpoints from `fetch_real_qwen.sh`, Q4_K_M dequantised: not the published models' scores), both "
        f"in {cfg.get('student_dtype')} / {cfg.get('teacher_dtype')}. Evaluation: `dopd.eval.evaluate_samples`, greedy, "
        f"{cfg.get('eval_max_new_tokens')} new tokens, `number` extractor, numeric metric, the model's own chat "
        "template (default system prompt), no answer-format instruction.",
        f"Training (each method from the same student, same data order, seed {cfg.get('seed')}): "
        f"`dopd.train.workflow.run_train` with the config keys in the records, {cfg.get('steps')} steps of "
        f"{cfg.get('batch')} prompts × {cfg.get('num_generations')} rollouts (temperature 1, top-p 1, no top-k, "
        f"{cfg.get('max_new_tokens')} new tokens), AdamW at the constant learning rate in each row, everything else at "
        f"the repo defaults (K 128, beta_l 0.6, beta_w 0.3, trim 5%); held-out accuracy without p every "
        f"{eval_every_text(records, cfg)} steps. Learning rates: 1e-5 was set before any run; 3e-6 is what the one-step "
        "probe below suggested on a training batch, chosen before any run at it (no validation or test problem was "
        "used to choose it). One seed.", ""]


def _template_section(records: list[dict[str, Any]]) -> list[str]:
    tmpl = [r for r in records if r.get("stage") == "template" and r.get("split") == "rp_val"]
    if not tmpl:
        return []
    chosen = latest(records, "template", "chosen")
    return ["## Hint template (validation split)", "",
            "How p is written into the prompt changes what it does; the candidates append the hint after the "
            "question (`[Privileged hint]` block, the repo default, or one `Hint:` line) and ask for nothing "
            "else. Rule, fixed before measuring: the template with the teacher's best accuracy with p.", "",
            table([["model / view", "accuracy % [95% CI]", "n", "seconds"]] + [
                [r["part"], acc_cell(r["correct"], r["n"]), str(r["n"]), f"{r['seconds']:.0f}"] for r in tmpl]),
            "",
            f"Chosen: **{chosen['chosen']}** ({chosen['rule']})." if chosen else
            "No template chosen yet (the teacher's validation runs did not finish).", ""]


def _accuracy_rows(refs: dict[str, dict[str, Any]], runs: list[tuple[str, dict[str, Any]]],
                   cfg: dict[str, Any]) -> list[list[str]]:
    """The held-out table: start and teacher with and without p, then each method's last evaluation."""
    start = refs.get("student/x")
    rows = [["run", "eval view", "accuracy % [95% CI]", "n", "gain vs start (pts)", "time"]]
    for key, label, view in (("student/x", "student (start)", "x"), ("student/x+p", "student", "x+p"),
                             ("teacher/x", "teacher", "x"), ("teacher/x+p", "teacher", "x+p")):
        r = refs.get(key)
        rows.append([label, view, acc_cell(r["correct"], r["n"]) if r else "not run yet", str(r["n"]) if r else "–",
                     "", f"eval {r['seconds']:.0f} s" if r else ""])
    for name, label in METHOD_LABELS.items():
        if not any(m == name and r["curve"] for m, r in runs):
            rows.append([f"{label} (`{name}`)", "x", "not run yet", "–", "", ""])
    for name, run in runs:
        label = METHOD_LABELS[name]
        if not run["curve"]:
            continue
        final = run["curve"][-1]
        n = int(final.get("n") or cfg.get("num_eval") or 0)
        correct = round(final["accuracy"] * n)
        gain = f"{100 * (final['accuracy'] - start['accuracy']):+.1f}" if start else "–"
        rows.append([f"{label} (`{name}`), lr {run['config']['lr']:g}, step {final['step']}", "x",
                     acc_cell(correct, n), str(n), gain,
                     f"{run['mean_step_s'] or 0:.1f} s/step, train {run['train_s'] / 60:.0f} min (evals incl.)"])
    return rows


def _curve_lines(runs: list[tuple[str, dict[str, Any]]], start: Optional[dict[str, Any]]) -> list[str]:
    curves = []
    for name, run in runs:
        pts = " → ".join(f"step {p['step']}: {100 * p['accuracy']:.1f}%" for p in run["curve"])
        losses = ", ".join(f"{r['loss']:.3f}" for r in run.get("log", []) if "loss" in r)
        tag = f"`{run_name(name, run)}`"
        curves.append((f"- {tag}: start {100 * start['accuracy']:.1f}% → {pts}" if start else f"- {tag}: {pts}")
                      + (f"; loss by step: {losses}" if losses else ""))
    return ["Held-out accuracy without p during training:", "", *curves, ""] if curves else []


def _diagnostics_section(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    diag_parts = []
    for name, run in runs:
        t = _diag_table(run)
        if t:
            diag_parts += [f"### {METHOD_LABELS[name]} (`{name}`, lr {run['config']['lr']:g})", "", t, ""]
    if not diag_parts:
        return []
    return ["## Diagnostics (docs/objective.md, \"Diagnostics\"): mean over training steps", "",
            "`vanilla_opd` (teacher without p) scores no privileged policy, so it has none. For "
            "`vanilla_opd_priv` the privileged student is scored only to log these (`prune_mode: top` with "
            "`prune_fraction: 0` drops nothing); its loss is unchanged.", "", *diag_parts]


def _commands_section(records: list[dict[str, Any]]) -> list[str]:
    ran = {s: (latest(records, s) or {}).get("command") for s in STAGES}  # as run, flags included
    return ["## Commands", "", "```bash",
            "bash ../shared/tools/fetch_real_qwen.sh 0.5b && bash ../shared/tools/fetch_real_qwen.sh 1.5b",
            *[ran[s] or f"python -m benchmarks.real_pair --method {s}" for s in STAGES],
            "python -m benchmarks.real_pair --report-only", "```", ""]


def write_page(records: list[dict[str, Any]], report_dir: Any, quick: bool = False,
               probe: Optional[dict[str, Any]] = None) -> dict[str, str]:
    """docs/real_pair.md (and its PNG) from the records: one section per helper above, in page order."""
    records = [r for r in records if bool(r.get("quick")) == quick]
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    md_path, png_path = report_dir / "real_pair.md", report_dir / "real_pair_curves.png"
    cfg = records[-1]["config"] if records else {}
    task = records[-1]["task"] if records else {}
    lines = ["# Real weights: Qwen2.5-Coder-1.5B-Instruct → 0.5B-Instruct (CPU)", "",
             "*Written by `python -m benchmarks.real_pair --report-only` from `results/real_pair.jsonl`; "
             "do not edit by hand.*", ""]
    if quick:
        lines += ["**Quick mode**: tiny random-init models, a handful of problems; checks the pipeline, not the outcome.",
                  ""]
    lines += _status_section(records) + _task_section(records, cfg, task) + _template_section(records)
    refs = {r["part"]: r for r in records if r.get("stage") == "reference" and r.get("split") == "rp_eval"}
    start = refs.get("student/x")
    runs = method_runs(records)
    lines += ["## Held-out accuracy", "", table(_accuracy_rows(refs, runs, cfg)), "",
              "Intervals: Wilson score, 95%. A difference between two rows of 200 problems needs roughly 9-10 points "
              "to clear both intervals.", ""]
    lines += _curve_lines(runs, start)
    png = plot(records, start, png_path)
    if png:
        lines += [f"![accuracy and diagnostics]({png})", ""]
    lines += _diagnostics_section(runs) + mechanism_section(runs)
    if probe:
        lines += _probe_section(probe)
    lines += ["## Notes", "", NOTES, ""] + _commands_section(records)
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return {"markdown": str(md_path), "curves": str(png_path) if png else ""}
