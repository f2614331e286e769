"""Diagnostics (docs/objective.md) on the default text testbed: one seed's teacher (SFT on x+p) and mixed student
are rebuilt exactly as `run_seed` builds them, then the first `--steps` steps of DOPD and of vanilla OPD with the
privileged teacher are run (the privileged student is scored for vanilla OPD only to log the diagnostics:
`prune_mode: top`, `prune_fraction: 0` drops nothing), and their per-step diagnostics are written to a JSON file.

    python -m benchmarks.privilege_illusion.diagnostics_probe [--seed 0] [--steps 20] [--out DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from ..paths import REPO, testbed_diagnostics
from .pipeline import Method, TestbedConfig, distill, limit_threads, read_log, sft, task_module

METHODS = (
    Method("dopd", "dopd"),
    Method("vanilla_opd_priv", "vanilla_opd",
           (("teacher_sees_privileged", True), ("prune_mode", "top"), ("prune_fraction", 0.0))),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=str(REPO / "saves" / "testbed_diagnostics"))
    p.add_argument("--json", default=None, help="default results/testbed_diagnostics_seed<k>.json")
    p.add_argument("--quick", action="store_true", help="tiny data and 2 steps (pipeline check)")
    args = p.parse_args(argv)
    limit_threads()
    from dopd.model.tiny import build_tiny_model

    from .task_text import TextTaskSpec, write_registry

    out = Path(args.out)
    cfg = TestbedConfig(out_dir=str(out), distill_steps=args.steps, eval_every=10 ** 6)
    if args.quick:
        cfg = replace(cfg, num_train=48, num_eval=8, teacher_steps=2, student_steps=1, sft_batch=8, distill_steps=2,
                      distill_batch=2, num_generations=2, max_new_tokens=8)
    data = str(out / "data")
    write_registry(data, TextTaskSpec(num_train=cfg.num_train, num_eval=cfg.num_eval,
                                      hidden_fraction=cfg.hidden_fraction, seed=cfg.task_seed))
    started = time.time()
    k = args.seed
    t_init = build_tiny_model(cfg.family, out / "init_teacher", size=cfg.teacher_size, tokenizer="bpe", seed=k)
    s_init = build_tiny_model(cfg.family, out / "init_student", size=cfg.student_size, tokenizer="bpe", seed=k + 1000)
    teacher = sft(cfg, data, k, str(t_init), str(out / "teacher"), "privileged", cfg.teacher_steps, cfg.teacher_lr)
    student = sft(cfg, data, k, str(s_init), str(out / "student"), "plain", cfg.student_steps, cfg.student_lr,
                  task_module(cfg).DATASET_MIXED)
    logs = {}
    for method in METHODS:
        run = str(out / method.name)
        distill(cfg, data, k, method, student, teacher, run)
        logs[method.name] = [{key: v for key, v in r.items() if key.startswith("dopd/") or key == "step"}
                             for r in read_log(run) if "loss" in r]
    summary = {name: {which: {key: statistics.fmean([r[key] for r in rows if key in r])
                              for key in sorted({key for r in rows for key in r if key.startswith("dopd/")})}
                      for which, rows in (("step1", log[:1]), ("all_steps", log))} for name, log in logs.items()}
    result = {"seed": k, "steps": cfg.distill_steps, "config": cfg.to_json(), "summary": summary, "logs": logs,
              "runtime_s": round(time.time() - started, 1),
              "command": "python -m benchmarks.privilege_illusion.diagnostics_probe "
                         + " ".join(argv if argv is not None else __import__("sys").argv[1:])}
    path = Path(args.json) if args.json else testbed_diagnostics(k)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
