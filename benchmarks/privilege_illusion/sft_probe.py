"""`python -m benchmarks.privilege_illusion.sft_probe --role teacher|student --steps N [--priv-steps M]`

How the premise variant's SFT budgets (`pipeline.SFT_BUDGET_PREMISE`) were chosen: one SFT of the teacher or the
student of seed 0 on the premise variant's data, then its accuracy on the validation split (never the test split)
with p and without p. The premises alone decide (teacher better with p than without and above the student; the
student's privileged view at least as good as its plain one, with room left without p); no distillation runs here.

- teacher: `--steps` on the mixed set (x and x+p, plain prompts), as `teacher_data: mixed` trains it;
- student: `--priv-steps` on x+p alone (privileged view), then `--steps` on the mixed set, as `student_sft` does.

Each row is appended to results/testbed_premise_sft_probe.jsonl (work files: saves/testbed_sft_probe).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..paths import REPO, TESTBED_SFT_PROBE
from . import pipeline as pl

RESULTS = TESTBED_SFT_PROBE


def probe(out: Path, role: str, steps: int, priv_steps: int = 0, quick: bool = False) -> dict[str, Any]:
    """Train one SFT model as the premise variant would (seed 0) and score it on the validation split."""
    pl.limit_threads()
    from dopd.model.tiny import build_tiny_model

    from .task_text import DATASET_MIXED, TextTaskSpec, write_registry

    cfg = replace(pl.premise_config(str(out), quick=quick), teacher_steps=steps, student_steps=steps,
                  student_priv_steps=priv_steps)
    data = str(out / "data")
    if not Path(data, f"{pl.VAL_DATASET}.json").is_file():
        write_registry(data, TextTaskSpec(num_train=cfg.num_train, num_eval=cfg.num_eval,
                                          hidden_fraction=cfg.hidden_fraction, seed=cfg.task_seed))
        pl.write_val_split(cfg, data)
    seed = cfg.seeds[0]
    started = time.time()
    if role == "teacher":
        init = build_tiny_model(cfg.family, out / "init_teacher", size=cfg.teacher_size, tokenizer="bpe", seed=seed)
        model = pl.sft(cfg, data, seed, init, str(out / f"teacher_{steps}"), "plain", steps, cfg.teacher_lr,
                       DATASET_MIXED)
    else:
        init = build_tiny_model(cfg.family, out / "init_student", size=cfg.student_size, tokenizer="bpe",
                                seed=seed + 1000)
        model = pl.student_sft(cfg, data, seed, init, out / f"student_{priv_steps}_{steps}")
    row: dict[str, Any] = {"role": role, "priv_steps": priv_steps, "steps": steps, "seed": seed,
                           "split": pl.VAL_DATASET, "sft_s": round(time.time() - started, 1)}
    evaluate = pl.Evaluator(cfg, data, dataset=pl.VAL_DATASET)
    for view, with_p in (("x", False), ("x+p", True)):
        row[view] = {k: v for k, v in evaluate(model, with_privilege=with_p).items() if k != "example"}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.privilege_illusion.sft_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=("teacher", "student"), required=True)
    p.add_argument("--steps", type=int, required=True, help="SFT steps on the mixed set")
    p.add_argument("--priv-steps", type=int, default=0, help="student only: SFT steps on x+p before the mixed set")
    p.add_argument("--out", default=str(REPO / "saves" / "testbed_sft_probe"))
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--quick", action="store_true", help="pipeline check on a handful of samples")
    args = p.parse_args(argv)
    if args.role == "teacher" and args.priv_steps:
        p.error("--priv-steps is for the student")
    row = probe(Path(args.out), args.role, args.steps, args.priv_steps, quick=args.quick)
    print(json.dumps(row))
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
