"""`python -m benchmarks.privilege_illusion [--task text|vlm] [--quick] [--out DIR] [--report-dir DIR] ...`
(from the repo root).

Default: the text task's full testbed (3 seeds), work files under saves/testbed, the page written to
docs/testbed.md and docs/testbed_curves.png. `--task vlm`: the VLM task (tiny Qwen2-VL, shape images, p = the
labelled box), work files under saves/testbed_vlm, page docs/testbed_vlm.md and docs/testbed_vlm_curves.png. `--quick`: a pipeline check on a handful of samples (one seed, a couple of steps per stage);
its page goes to <out>/report, never to docs/.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from .pipeline import (CONFIRM_METHODS, METHODS, TestbedConfig, confirm_config, premise_config, quick_config, run_all,
                       vlm_config)
from .report import (accuracy_table, compact_results, write_confirm_section, write_page,
                     write_premise_section)
from ..paths import REPO, TESTBED_CONFIRM as CONFIRM_RESULTS, TESTBED_SFT_PROBE as SFT_PROBE_RESULTS


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.privilege_illusion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("text", "vlm"), default="text",
                   help="text: three-digit addition with a hint (default); vlm: shape images with a labelled box")
    p.add_argument("--variant", choices=("default", "premise", "confirm"), default="default",
                   help="premise: a teacher trained on x and x+p, the distillation lr chosen on a validation split "
                        "(text task; its own section at the end of docs/testbed.md; work files saves/testbed_premise); "
                        "confirm: the premise variant on fresh seeds 3, 4, 5 with the mechanism-check methods of "
                        "issue 24 (its own section; work files saves/testbed_confirm; numbers also in "
                        "results/testbed_confirm.json); with --task vlm: the VLM page's configuration and "
                        "seeds with those methods (a section of docs/testbed_vlm.md)")
    p.add_argument("--quick", action="store_true", help="pipeline check (< 2 min): tiny data, 1 seed, 1-2 steps")
    p.add_argument("--out", default=None, help="work folder (data, runs, results.json); default saves/testbed, "
                                               "or a temp folder with --quick")
    p.add_argument("--report-dir", default=None, help="where testbed.md and the PNG go; default docs/ "
                                                      "(<out>/report with --quick)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (one seed each)")
    p.add_argument("--methods", default=None, help="comma list of " + ", ".join(m.name for m in METHODS))
    p.add_argument("--distill-steps", type=int, default=None)
    p.add_argument("--distill-lr", type=float, default=None, help="learning rate of every distillation run")
    p.add_argument("--student-data", choices=("mixed", "plain"), default=None,
                   help="student's brief SFT on x and x+p (mixed, default) or on x only (plain)")
    p.add_argument("--report-only", action="store_true", help="rewrite the page from <out>/results.json")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> TestbedConfig:
    work = "testbed" if args.task == "text" else f"testbed_{args.task}"
    if args.variant == "premise" and args.task != "text":
        raise SystemExit("--variant premise is implemented for the text task")
    if args.variant != "default":
        work = f"testbed_{args.variant}" + ("" if args.task == "text" else f"_{args.task}")
    out = args.out or (tempfile.mkdtemp(prefix=f"{work}_quick_") if args.quick else str(REPO / "saves" / work))
    if args.variant == "premise":
        cfg = premise_config(out, quick=args.quick)
    elif args.variant == "confirm" and args.task == "vlm":
        # the VLM page's own configuration and seeds (no hypothesis was drawn from this task), the confirmation's
        # methods
        base = quick_config(out, "vlm") if args.quick else vlm_config(out)
        cfg = replace(base, variant="confirm", methods=CONFIRM_METHODS)
    elif args.variant == "confirm":
        cfg = confirm_config(out, quick=args.quick)
    elif args.quick:
        cfg = quick_config(out, args.task)
    else:
        cfg = vlm_config(out) if args.task == "vlm" else TestbedConfig(out_dir=out)
    if args.seeds:
        cfg.seeds = tuple(int(s) for s in args.seeds.split(","))
    if args.jobs:
        cfg.jobs = args.jobs
    if args.methods:
        cfg.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.student_data:
        cfg.student_data = args.student_data
    if args.distill_lr:
        cfg.distill_lr = args.distill_lr
    if args.distill_steps:
        cfg.distill_steps = args.distill_steps
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("dopd.testbed").setLevel(logging.INFO)
    cfg = build_config(args)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = ("python -m benchmarks.privilege_illusion " + " ".join(shlex.quote(a) for a in argv)).strip()
    if args.report_only:
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
        command = results.get("command", command)  # the page names the command that produced the numbers
    else:
        results = run_all(cfg)
        results["command"] = command
        (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    report_dir = Path(args.report_dir) if args.report_dir else (out / "report" if cfg.quick else REPO / "docs")
    if args.variant == "confirm":
        if not cfg.quick and not args.report_only:
            keep = (CONFIRM_RESULTS if args.task == "text"
                    else CONFIRM_RESULTS.with_name(f"testbed_confirm_{args.task}.json"))
            keep.write_text(json.dumps(compact_results(results), indent=1), encoding="utf-8")
        paths = write_confirm_section(results, report_dir, command)
    elif args.variant == "premise":
        probe_rows = None
        if not cfg.quick and SFT_PROBE_RESULTS.is_file():
            probe_rows = [json.loads(line) for line in SFT_PROBE_RESULTS.read_text(encoding="utf-8").splitlines()
                          if line.strip()]
        paths = write_premise_section(results, report_dir, command, probe_rows)
    else:
        paths = write_page(results, report_dir, command)
    for row in accuracy_table(results):
        print(" | ".join(row))
    print(f"\nresults: {out / 'results.json'}\npage:    {paths['markdown']}\ncurves:  {paths['curves']}")
    print(f"runtime: {results['runtime_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
