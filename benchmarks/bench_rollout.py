"""Rollout throughput (generated tokens per second) versus batch size and `num_generations` (issue 8, part 3).

What runs: the real `DOPDTrainer.rollout` (the student samples G answers per prompt from the plain view x with HF
`generate`, KV cache, left-padded batch) on a Qwen2 (text) or Qwen2-VL (VLM) student built from config (random
init, real Qwen2 tokenizer and 151,936-row vocabulary). Every answer is exactly `--max-new-tokens` tokens long
(`min_new_tokens = max_new_tokens`; `--free-length` lets answers stop), so throughput compares equal work.
Per (batch, G): one warm-up rollout, then the median of `--repeats` timed rollouts.

  tokens/s     = batch x G x answer length / rollout seconds
  speedup      = tokens/s / tokens/s at the smallest batch x G of the sweep

    python -m benchmarks.bench_rollout --out rollout.json                          # GPU-size defaults
    python -m benchmarks.bench_rollout --device cuda --dtype bfloat16 --out rollout.json
    python -m benchmarks.bench_rollout --hidden 256 --layers 2 --batch-sizes 1,2,4 --num-generations 1,2,4 \
        --max-new-tokens 16 --repeats 2                                            # small CPU run

Issue 12 modes (instead of the sweep):
  --step-compare  one optimizer step's rollout (--micro-batches x --step-prompts prompts x G --step-generations)
                  per micro-batch (routing_scope micro_batch) vs once for the whole step (routing_scope step);
                  target: step >= 2x the tokens/s
  --hf-options    transformers' own batched-sampling options on that rollout: prompts repeated G times (the HF
                  engine), num_return_sequences, a static KV cache, with --compile also torch.compile
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from benchmarks.lib import cli, data, measure, report, trainers

FAMILIES = {"text": "qwen2", "vlm": "qwen2_vl"}


def sweep(args: argparse.Namespace, family: str) -> list[dict[str, Any]]:
    batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    generations = [int(x) for x in args.num_generations.split(",") if x]
    student, student_dir, _, _ = cli.build_pair(args, family, need_teacher=False)
    # stage opsd: a trainer with no teacher; only its rollout is used
    cfg = trainers.dopd_config(args, "opsd", student_dir, None, max(batch_sizes), max(generations),
                             args.max_new_tokens, 1)
    samples = data.make_samples(family, max(batch_sizes), args.prompt_words, 0, None,
                                  image_dir=os.path.join(cli.workdir(args), "images"))
    trainer = trainers.make_dopd_trainer(cfg, student, None, samples)
    if not args.free_length:
        trainers.fixed_length_rollouts(trainer.adapter)
    encoded = [trainer.train_dataset[i] for i in range(max(batch_sizes))]
    model = trainer.model
    results = []
    for batch in batch_sizes:
        for group in generations:
            trainer.rollout_args.num_generations = group
            runs: list[tuple[float, int]] = []
            for i in range(args.warmup + args.repeats):
                measure.sync(args.device)
                start = time.perf_counter()
                out = trainer.rollout(model, encoded[:batch])
                measure.sync(args.device)
                if i >= args.warmup:
                    runs.append((time.perf_counter() - start, out.num_tokens))
            seconds = measure.median([r[0] for r in runs])
            tokens = runs[0][1]
            res = {"family": family, "batch": batch, "num_generations": group, "sequences": batch * group,
                   "tokens": tokens, "answer_length": tokens / (batch * group), "seconds": seconds,
                   "tokens_per_s": tokens / seconds, "times_s": [r[0] for r in runs]}
            results.append(res)
            report.row_done(args.out, f"  {family} batch {batch} G {group}: {res['tokens_per_s']:.1f} tokens/s", res)
    base = min(results, key=lambda r: (r["sequences"], r["batch"]))["tokens_per_s"]
    for r in results:
        r["speedup"] = r["tokens_per_s"] / base
    return results


def step_versus_micro_batches(args: argparse.Namespace, family: str) -> list[dict[str, Any]]:
    """One optimizer step of `--micro-batches` micro-batches of `--step-prompts` prompts x G `--step-generations`:
    rolled out per micro-batch (`routing_scope: micro_batch`, one generate call each) against once for the whole
    step (`routing_scope: step`, one call, or calls of `rollout_batch_size` sequences). Same trainer, same prompts,
    same answer length; the modes alternate within each repeat so machine load hits them alike."""
    student, student_dir, _, _ = cli.build_pair(args, family, need_teacher=False)
    group, per_mb, mbs = args.step_generations, args.step_prompts, args.micro_batches
    cfg = trainers.dopd_config(args, "opsd", student_dir, None, per_mb, group, args.max_new_tokens, 1)
    samples = data.make_samples(family, per_mb * mbs, args.prompt_words, 0, None,
                                  image_dir=os.path.join(cli.workdir(args), "images"))
    trainer = trainers.make_dopd_trainer(cfg, student, None, samples)
    if not args.free_length:
        trainers.fixed_length_rollouts(trainer.adapter)
    encoded = [trainer.train_dataset[i] for i in range(per_mb * mbs)]
    model = trainer.model
    modes = {"micro_batch": None, "step": 0}
    if args.step_rollout_batch_size:
        modes[f"step, rollout_batch_size {args.step_rollout_batch_size}"] = args.step_rollout_batch_size
    times: dict[str, list[float]] = {m: [] for m in modes}
    tokens: dict[str, int] = {}
    for i in range(args.warmup + args.repeats):
        for mode, rbs in modes.items():
            measure.sync(args.device)
            start = time.perf_counter()
            if rbs is None:
                outs = [trainer.rollout(model, encoded[j * per_mb:(j + 1) * per_mb]) for j in range(mbs)]
            else:
                trainer.rollout_args.rollout_batch_size = rbs
                outs = [trainer.rollout(model, encoded)]
            measure.sync(args.device)
            if i >= args.warmup:
                times[mode].append(time.perf_counter() - start)
                tokens[mode] = sum(o.num_tokens for o in outs)
    results = []
    for mode, rbs in modes.items():
        seconds = measure.median(times[mode])
        calls = mbs if rbs is None else (-(-per_mb * mbs * group // rbs) if rbs else 1)
        results.append({"family": family, "mode": mode, "micro_batches": mbs, "prompts_per_micro_batch": per_mb,
                        "num_generations": group, "sequences": per_mb * mbs * group,
                        "sequences_per_generate": per_mb * mbs * group / calls, "tokens": tokens[mode],
                        "seconds": seconds, "tokens_per_s": tokens[mode] / seconds, "times_s": times[mode]})
        report.row_done(args.out, f"  {family} {mode}: {results[-1]['tokens_per_s']:.1f} tokens/s", results[-1])
    base = results[0]["tokens_per_s"]
    for r in results:
        r["ratio_to_micro_batch"] = r["tokens_per_s"] / base
    return results


def time_modes(args: argparse.Namespace, adapter: Any, model: Any, modes: dict[str, tuple[dict, dict]],
               base_kw: dict[str, Any]) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Seconds of each timed `generate` per mode (modes alternate within each repeat) and each mode's token count."""
    import torch

    model.eval()
    compiled_forward = None
    times: dict[str, list[float]] = {m: [] for m in modes}
    tokens: dict[str, int] = {}
    for i in range(args.warmup + args.repeats):
        for mode, (batch, extra) in modes.items():
            extra = dict(extra)
            original_forward = None
            if extra.pop("_compile", False):
                if compiled_forward is None:
                    compiled_forward = torch.compile(model.forward, mode="reduce-overhead", dynamic=False)
                original_forward, model.forward = model.forward, compiled_forward
            measure.sync(args.device)
            start = time.perf_counter()
            with torch.no_grad():
                out = adapter.generate(model, batch, **base_kw, **extra)
            measure.sync(args.device)
            if original_forward is not None:
                model.forward = original_forward
            if i >= args.warmup:
                times[mode].append(time.perf_counter() - start)
                tokens[mode] = sum(len(r) for r in out)
    return times, tokens


def hf_options(args: argparse.Namespace, family: str) -> list[dict[str, Any]]:
    """What transformers itself offers for batched sampling, on one step's rollout (`--step-prompts` x
    `--micro-batches` prompts x G): the adapter's `generate` on prompts repeated G times (what the HF engine does),
    `num_return_sequences=G` on each prompt once, a static KV cache, and (with --compile) a static cache plus
    `torch.compile` of the forward. Same answer length; modes alternate within each repeat."""
    student, student_dir, _, _ = cli.build_pair(args, family, need_teacher=False)
    group, prompts_n = args.step_generations, args.step_prompts * args.micro_batches
    cfg = trainers.dopd_config(args, "opsd", student_dir, None, prompts_n, group, args.max_new_tokens, 1)
    samples = data.make_samples(family, prompts_n, args.prompt_words, 0, None,
                                  image_dir=os.path.join(cli.workdir(args), "images"))
    trainer = trainers.make_dopd_trainer(cfg, student, None, samples)
    adapter = trainer.adapter
    plain = [trainer.train_dataset[i].plain for i in range(prompts_n)]
    repeated = {k: (v.to(args.device) if hasattr(v, "to") else v)
                for k, v in adapter.collate_prompts([p for p in plain for _ in range(group)]).items()}
    unique = {k: (v.to(args.device) if hasattr(v, "to") else v) for k, v in adapter.collate_prompts(plain).items()}
    from dopd.train.rollout import generation_kwargs

    base_kw = generation_kwargs(trainer.rollout_args)
    base_kw["min_new_tokens"] = args.max_new_tokens
    modes: dict[str, tuple[dict, dict]] = {
        "repeat prompts (HF engine)": (repeated, {}),
        "num_return_sequences": (unique, {"num_return_sequences": group}),
        "static cache": (repeated, {"cache_implementation": "static"}),
    }
    if args.compile:
        modes["static cache + torch.compile"] = (repeated, {"cache_implementation": "static", "_compile": True})
    times, tokens = time_modes(args, adapter, trainer.model, modes, base_kw)
    results = []
    for mode in modes:
        seconds = measure.median(times[mode])
        results.append({"family": family, "mode": mode, "sequences": prompts_n * group, "tokens": tokens[mode],
                        "seconds": seconds, "tokens_per_s": tokens[mode] / seconds, "times_s": times[mode]})
        report.row_done(args.out, f"  {family} {mode}: {results[-1]['tokens_per_s']:.1f} tokens/s", results[-1])
    for r in results:
        r["ratio"] = r["tokens_per_s"] / results[0]["tokens_per_s"]
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(parser)
    parser.add_argument("--families", default="text", help="comma-separated: text (Qwen2), vlm (Qwen2-VL)")
    parser.add_argument("--batch-sizes", default="1,4,16", help="prompts per rollout")
    parser.add_argument("--num-generations", default="1,4,8", help="answers per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length")
    parser.add_argument("--prompt-words", type=int, default=48, help="words of each prompt")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rollouts per point")
    parser.add_argument("--repeats", type=int, default=2, help="timed rollouts per point (median kept)")
    parser.add_argument("--free-length", action="store_true",
                        help="let answers stop at a stop token (default: exactly --max-new-tokens tokens)")
    parser.add_argument("--step-compare", action="store_true",
                        help="instead of the sweep: one step's rollout per micro-batch vs once for the whole step")
    parser.add_argument("--micro-batches", type=int, default=4, help="--step-compare: micro-batches per step")
    parser.add_argument("--step-prompts", type=int, default=4, help="--step-compare: prompts per micro-batch")
    parser.add_argument("--step-generations", type=int, default=4, help="--step-compare: G")
    parser.add_argument("--step-rollout-batch-size", type=int, default=0,
                        help="--step-compare: also time the step rollout with this rollout_batch_size")
    parser.add_argument("--hf-options", action="store_true",
                        help="instead of the sweep: transformers' batched-sampling options on one step's rollout")
    parser.add_argument("--compile", action="store_true", help="--hf-options: also static cache + torch.compile")
    return parser.parse_args(argv)


def run_hf_options(args: argparse.Namespace, env: dict[str, Any]) -> None:
    results = []
    for family in [FAMILIES.get(f, f) for f in args.families.split(",") if f]:
        results += hf_options(args, family)
    rows = [[r["family"], r["mode"], r["sequences"], r["seconds"], r["tokens_per_s"], r["ratio"]]
            for r in results]
    table = report.print_table(["model", "generate", "seqs", "seconds", "tokens/s", "x repeat prompts"], rows,
                               title="transformers' batched-sampling options, one step's rollout (median)")
    report.write_json(args.out, {"benchmark": "bench_rollout --hf-options", "environment": env, "args": {
        k: v for k, v in vars(args).items() if not k.startswith("_")}, "results": results, "table": table})


def run_step_compare(args: argparse.Namespace, env: dict[str, Any]) -> None:
    results = []
    for family in [FAMILIES.get(f, f) for f in args.families.split(",") if f]:
        results += step_versus_micro_batches(args, family)
    rows = [[r["family"], r["mode"], r["sequences"], r["sequences_per_generate"], r["seconds"],
             r["tokens_per_s"], r["ratio_to_micro_batch"], report.verdict(r["ratio_to_micro_batch"], 2.0, False)
             if r["mode"] == "step" else ""] for r in results]
    table = report.print_table(["model", "rollout", "seqs", "seqs/generate", "rollout s", "tokens/s",
                                "x micro_batch", "target >= 2x"], rows,
                               title="one step's rollout: per micro-batch vs the whole step (median)")
    report.write_json(args.out, {"benchmark": "bench_rollout --step-compare", "environment": env, "args": {
        k: v for k, v in vars(args).items() if not k.startswith("_")}, "results": results, "table": table})


def run_sweep(args: argparse.Namespace, env: dict[str, Any]) -> None:
    print(f"bench_rollout on {env.get('gpu') or env['cpu']} ({env['cpu_count']} cores), torch {env['torch']}, "
          f"transformers {env['transformers']}, {args.dtype}", flush=True)
    results: list[dict[str, Any]] = []
    for family in [FAMILIES.get(f, f) for f in args.families.split(",") if f]:
        results += sweep(args, family)
    rows = [[r["family"], r["batch"], r["num_generations"], r["sequences"], r["answer_length"], r["seconds"],
             r["tokens_per_s"], r["speedup"]] for r in results]
    table = report.print_table(["model", "batch", "G", "seqs", "answer len", "rollout s", "tokens/s", "speedup"],
                               rows, title="rollout throughput (median of the timed rollouts)")
    report.write_json(args.out, {"benchmark": "bench_rollout", "environment": env, "args": {
        k: v for k, v in vars(args).items() if not k.startswith("_")}, "results": results, "table": table})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli.setup_torch(args)
    env = report.environment(args)
    if args.hf_options:
        run_hf_options(args, env)
    elif args.step_compare:
        run_step_compare(args, env)
    else:
        run_sweep(args, env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
