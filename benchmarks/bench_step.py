"""One training step of `dopd`, `vanilla_opd` and `sft` on the same model and batch, split into rollout, scoring and
update (issue 8, part 2). Target: a DOPD step costs at most 1.3x a vanilla OPD step.

What runs: the real `DOPDTrainer`, constructed as `dopd.train.workflow.run_train` constructs it, on a small in-memory
dataset (text: a hint as p; VLM: one image + two labelled boxes as p), with a Qwen2 (text) or Qwen2-VL (VLM) student
and teacher built from config (random init, real Qwen2 tokenizer and 151,936-row vocabulary). Each stage gets a fresh
student with the same initial weights and the same batches (same seed); one warm-up step, then `--steps` timed steps.

Equal work: every rollout generates exactly `--max-new-tokens` tokens per answer (`min_new_tokens = max_new_tokens`
is added to the rollout's generation kwargs, so no stop token can end an answer early); `sft` trains on reference
answers of the same length, one per prompt (it has no rollout, so `batch` sequences, not `batch x G`).
`vanilla_opd` runs as the paper's main baseline: the teacher scores the plain prompt x (`teacher_sees_privileged:
false`); `dopd`'s teacher and privileged student score x+p.

Stages, per step (seconds; CUDA synchronised at each boundary):
  rollout : `DOPDTrainer.rollout` (the trainer's `time/rollout_s`)
  scoring : the three (dopd) / two (vanilla_opd) / one (sft) forward passes + the objective (`time/scoring_s`;
            for sft: the forward + cross-entropy)
  update  : the rest of the optimizer step: backward, optimizer step, zero_grad (step wall time - rollout - scoring)
  step    : wall time of the whole optimizer step (TrainerCallback on_step_begin -> on_step_end)
Each figure is the median over the timed steps (robust to a step slowed by another process on a shared machine);
every step's times are in the JSON. Both rollouts do identical work (same initial weights, seed and answer length),
so the ratio is also given with their two rollout times pooled (averaged), which removes noise from another process
slowing one of them.

    python -m benchmarks.bench_step --out step.json                                  # GPU-size defaults
    python -m benchmarks.bench_step --device cuda --dtype bfloat16 --out step.json
    python -m benchmarks.bench_step --hidden 256 --layers 2 --teacher-hidden 384 --teacher-layers 2 \
        --batch 2 --num-generations 2 --max-new-tokens 16 --steps 2                  # small CPU run
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from typing import Any

from benchmarks.lib import cli, data, measure, models, report, trainers

STAGES = ("dopd", "vanilla_opd", "sft")
FAMILIES = {"text": "qwen2", "vlm": "qwen2_vl"}
TARGET = 1.3


def build_stage_trainer(args: argparse.Namespace, family: str, stage: str, teacher: Any, teacher_dir: str,
                        scope: str, cache: str) -> tuple[Any, Any, list[float]]:
    """A fresh student and its trainer for one stage, built as `run_train` builds them; for `sft` the loss is wrapped
    to time it (its scoring figure). Returns the trainer, the student and the list the sft timings go to."""
    from dopd.model import load_adapter  # heavy (torch): benchmarks import it where used, so --help stays light

    student, student_dir, _, _ = cli.build_pair(args, family, need_teacher=False)
    gc.collect()
    measure.reset_peak_rss()
    max_steps = args.warmup + args.steps
    extra: dict[str, Any] = {"loss_chunk_size": args.chunk_size, "gradient_accumulation_steps": args.accumulation,
                             "routing_scope": scope, "step_score_cache": cache}
    if stage == "vanilla_opd":
        extra["teacher_sees_privileged"] = False
    cfg = trainers.dopd_config(args, stage, student_dir, None if stage == "sft" else teacher_dir, args.batch,
                             args.num_generations, args.max_new_tokens, max_steps, **extra)
    tok = load_adapter(student_dir).tokenizer
    response = data.response_text(tok, args.max_new_tokens)
    samples = data.make_samples(family, args.batch * args.accumulation * max_steps, args.prompt_words,
                                  args.hint_words, response,
                                  image_dir=os.path.join(cli.workdir(args), "images"))
    trainer = trainers.make_dopd_trainer(cfg, student, None if stage == "sft" else teacher, samples)
    if not args.free_length:
        trainers.fixed_length_rollouts(trainer.adapter)
    # CUDA: synchronise at the end of each timed phase, so the trainer's own timers include the GPU work
    sft_times: list[float] = []
    if stage != "sft":
        trainer._distill_loss = measure.synchronised(trainer._distill_loss, args.device)
    else:
        inner = trainer._sft_loss

        def timed_sft(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            out = inner(*a, **kw)
            measure.sync(args.device)
            sft_times.append(time.perf_counter() - start)
            return out

        trainer._sft_loss = timed_sft
    return trainer, student, sft_times


def run_stage(args: argparse.Namespace, family: str, stage: str, teacher: Any, teacher_dir: str,
              scope: str = "step", cache: str = "device") -> dict[str, Any]:
    import torch

    trainer, student, sft_times = build_stage_trainer(args, family, stage, teacher, teacher_dir, scope, cache)
    timer = measure.step_timer(args.device)
    trainer.add_callback(timer)
    trainers.quiet(trainer)
    trainer.train()

    result = stage_timings(args, stage, trainer.state.log_history, timer.times, sft_times)
    result = {"family": family, "stage": stage, "scope": scope, "score_cache": cache, **result,
              "params_student": models.count_params(student)}
    result["peak_rss_bytes"] = measure.peak_rss()  # since this stage's models were built (VmHWM reset there)
    if args.device.startswith("cuda"):
        result["cuda_max_memory_allocated"] = int(torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()
    del trainer, student
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def stage_timings(args: argparse.Namespace, stage: str, log_history: list[dict[str, Any]], step_times: list[float],
                  sft_times: list[float]) -> dict[str, Any]:
    """Median rollout / scoring / update / step seconds over the timed steps (after the warm-up), with every step's."""
    logs = [e for e in log_history if "time/update_s" in e][args.warmup:]
    steps = step_times[args.warmup:]
    if stage == "sft":
        rollout = [0.0] * len(steps)
        scoring = sft_times[args.warmup:]
        tokens = [float(args.max_new_tokens)] * len(steps)
    else:
        rollout = [e["time/rollout_s"] for e in logs]
        scoring = [e["time/scoring_s"] for e in logs]
        tokens = [e["rollout/response_length"] for e in logs]
    backward = [e["time/update_s"] for e in logs]
    return {
        "steps": len(steps),
        "sequences": args.batch * args.accumulation * (1 if stage == "sft" else args.num_generations),
        "response_length": measure.mean(tokens),
        "rollout_s": measure.median(rollout), "scoring_s": measure.median(scoring),
        "update_s": measure.median([s - r - c for s, r, c in zip(steps, rollout, scoring)]),
        "backward_s": measure.median(backward), "step_s": measure.median(steps), "step_times_s": steps,
        "rollout_times_s": rollout, "scoring_times_s": scoring,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(parser)
    parser.add_argument("--families", default="text,vlm", help="comma-separated: text (Qwen2), vlm (Qwen2-VL)")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages")
    parser.add_argument("--batch", type=int, default=4, help="prompts per micro-batch (per_device_train_batch_size)")
    parser.add_argument("--accumulation", type=int, default=1, help="gradient_accumulation_steps (micro-batches/step)")
    parser.add_argument("--scopes", default="step",
                        help="comma-separated routing_scope values to run each distillation stage with "
                             "(step | micro_batch); the first one is used for the ratios")
    parser.add_argument("--score-caches", default="device",
                        help="comma-separated step_score_cache values (device | cpu | none) for dopd, scope step")
    parser.add_argument("--num-generations", type=int, default=4, help="answers per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length (every answer, see above)")
    parser.add_argument("--prompt-words", type=int, default=48, help="words of each prompt")
    parser.add_argument("--hint-words", type=int, default=32, help="words of the privileged hint (text)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="loss_chunk_size of the objective")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per stage")
    parser.add_argument("--free-length", action="store_true",
                        help="let answers stop at a stop token (default: exactly --max-new-tokens tokens)")
    return parser.parse_args(argv)


def variants(stages: list[str], scopes: list[str], caches: list[str]) -> list[tuple[str, str, str]]:
    """(stage, routing scope, score cache) runs: every scope for the distillation stages, every cache for dopd at step
    scope, the first of each otherwise."""
    out = []
    for stage in stages:
        for scope in (scopes if stage != "sft" else scopes[:1]):
            for cache in (caches if (stage == "dopd" and scope == "step") else caches[:1]):
                out.append((stage, scope, cache))
    return out


def family_ratios(results: list[dict[str, Any]], family: str) -> dict[str, dict[str, float]]:
    """The ratios of one model family's runs (DOPD against vanilla OPD, step against micro-batch scope, SFT)."""
    by_stage = {r["variant"]: r for r in results if r["family"] == family}
    ratios: dict[str, dict[str, float]] = {}
    if "dopd" in by_stage and "dopd [micro_batch, cache device]" in by_stage:
        ratios.setdefault(family, {})["dopd step / micro_batch scope, step_s"] = (
            by_stage["dopd"]["step_s"] / by_stage["dopd [micro_batch, cache device]"]["step_s"])
        ratios[family]["dopd step / micro_batch scope, rollout_s"] = (
            by_stage["dopd"]["rollout_s"] / by_stage["dopd [micro_batch, cache device]"]["rollout_s"])
    if "dopd" in by_stage and "vanilla_opd" in by_stage:
        d, v = by_stage["dopd"], by_stage["vanilla_opd"]
        ratios.setdefault(family, {}).update({f"dopd/vanilla_opd {k}": d[k] / v[k] for k in (
            "step_s", "rollout_s", "scoring_s", "update_s") if v[k] > 0})
        # both rollouts do identical work (same weights, seed and fixed length): pooling their times removes the
        # noise a shared machine adds to one of them
        pooled = 0.5 * (d["rollout_s"] + v["rollout_s"])
        ratios[family]["dopd/vanilla_opd step_s, rollout pooled"] = (
            (pooled + d["scoring_s"] + d["update_s"]) / (pooled + v["scoring_s"] + v["update_s"]))
    if "sft" in by_stage and "vanilla_opd" in by_stage:
        ratios.setdefault(family, {})["sft/vanilla_opd step_s"] = by_stage["sft"]["step_s"] / \
            by_stage["vanilla_opd"]["step_s"]
    return ratios


def print_tables(results: list[dict[str, Any]], ratios: dict[str, dict[str, float]]) -> tuple[str, str]:
    headers = ["model", "stage", "seqs", "resp len", "rollout s", "scoring s", "update s", "step s",
               "rollout %", "scoring %", "update %", "peak RSS MiB"]
    rows = []
    for r in results:
        total = r["step_s"]
        rows.append([r["family"], r["variant"], r["sequences"], r["response_length"], r["rollout_s"], r["scoring_s"],
                     r["update_s"], r["step_s"], 100 * r["rollout_s"] / total, 100 * r["scoring_s"] / total,
                     100 * r["update_s"] / total, r["peak_rss_bytes"] / 2**20])
    table = report.print_table(headers, rows, title="seconds per step (median of the timed steps) and the split")
    ratio_rows = []
    for family, rs in ratios.items():
        for name, value in rs.items():
            target = TARGET if name.startswith("dopd/vanilla_opd step_s") else None
            ratio_rows.append([family, name, value, target,
                               report.verdict(value, target) if target is not None else ""])
    ratio_table = report.print_table(["model", "ratio", "value", "target", "verdict"], ratio_rows,
                                     title="ratios (same run, same model and batch)")
    return table, ratio_table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli.setup_torch(args)

    families = [FAMILIES.get(f, f) for f in args.families.split(",") if f]
    stages = [s for s in args.stages.split(",") if s]
    env = report.environment(args)
    print(f"bench_step on {env.get('gpu') or env['cpu']} ({env['cpu_count']} cores), torch {env['torch']}, "
          f"transformers {env['transformers']}, {args.dtype}", flush=True)
    results: list[dict[str, Any]] = []
    ratios: dict[str, dict[str, float]] = {}
    for family in families:
        _, _, teacher, teacher_dir = cli.build_pair(args, family, need_teacher=True)
        scopes = [x for x in args.scopes.split(",") if x]
        caches = [x for x in args.score_caches.split(",") if x]
        for stage, scope, cache in variants(stages, scopes, caches):
            started = time.perf_counter()
            res = run_stage(args, family, stage, teacher, teacher_dir, scope, cache)
            res["wall_s"] = time.perf_counter() - started
            res["variant"] = stage if (scope, cache) == (scopes[0], caches[0]) else f"{stage} [{scope}, cache {cache}]"
            results.append(res)
            report.row_done(args.out, f"  {family} {res['variant']}: {res['step_s']:.3f} s/step "
                            f"({res['wall_s']:.0f} s incl. setup)", res)
        del teacher
        gc.collect()
        ratios.update(family_ratios(results, family))
    table, ratio_table = print_tables(results, ratios)
    report.write_json(args.out, {"benchmark": "bench_step", "environment": env, "args": {
        k: v for k, v in vars(args).items() if not k.startswith("_")}, "results": results, "ratios": ratios,
        "target": {"dopd/vanilla_opd step_s": TARGET}, "table": table, "ratio_table": ratio_table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
