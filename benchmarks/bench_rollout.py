"""Rollout throughput (generated tokens per second) versus batch size and `num_generations` (issue 8, part 3).

What runs: the real `DOPDTrainer.rollout` (the student samples G answers per prompt from the plain view x with HF
`generate`, KV cache, left-padded batch) on a Qwen2 (text) or Qwen2-VL (VLM) student built from config (random
init, real Qwen2 tokenizer and 151,936-row vocabulary). Every answer is exactly `--max-new-tokens` tokens long
(`min_new_tokens = max_new_tokens`; `--free-length` lets answers stop), so throughput compares equal work.
Per (batch, G): one warm-up rollout, then the median of `--repeats` timed rollouts.

  tokens/s     = batch x G x answer length / rollout seconds
  speedup      = tokens/s / tokens/s at the smallest batch x G of the sweep

    python benchmarks/bench_rollout.py --out rollout.json                          # GPU-size defaults
    python benchmarks/bench_rollout.py --device cuda --dtype bfloat16 --out rollout.json
    python benchmarks/bench_rollout.py --hidden 256 --layers 2 --batch-sizes 1,2,4 --num-generations 1,2,4 \
        --max-new-tokens 16 --repeats 2                                            # small CPU run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FAMILIES = {"text": "qwen2", "vlm": "qwen2_vl"}


def sweep(args: argparse.Namespace, family: str) -> list[dict[str, Any]]:
    batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    generations = [int(x) for x in args.num_generations.split(",") if x]
    student, student_dir, _, _ = common.build_pair(args, family, need_teacher=False)
    # stage opsd: a trainer with no teacher; only its rollout is used
    cfg = common.dopd_config(args, "opsd", student_dir, None, max(batch_sizes), max(generations),
                             args.max_new_tokens, 1)
    samples = common.make_samples(family, max(batch_sizes), args.prompt_words, 0, None,
                                  image_dir=os.path.join(common.workdir(args), "images"))
    trainer = common.make_dopd_trainer(cfg, student, None, samples)
    if not args.free_length:
        common.fixed_length_rollouts(trainer.adapter)
    encoded = [trainer.train_dataset[i] for i in range(max(batch_sizes))]
    model = trainer.model
    results = []
    for batch in batch_sizes:
        for group in generations:
            trainer.rollout_args.num_generations = group
            runs: list[tuple[float, int]] = []
            for i in range(args.warmup + args.repeats):
                common.sync(args.device)
                start = time.perf_counter()
                out = trainer.rollout(model, encoded[:batch])
                common.sync(args.device)
                if i >= args.warmup:
                    runs.append((time.perf_counter() - start, out.num_tokens))
            seconds = common.median([r[0] for r in runs])
            tokens = runs[0][1]
            res = {"family": family, "batch": batch, "num_generations": group, "sequences": batch * group,
                   "tokens": tokens, "answer_length": tokens / (batch * group), "seconds": seconds,
                   "tokens_per_s": tokens / seconds, "times_s": [r[0] for r in runs]}
            results.append(res)
            print(f"  {family} batch {batch} G {group}: {res['tokens_per_s']:.1f} tokens/s", flush=True)
    base = min(results, key=lambda r: (r["sequences"], r["batch"]))["tokens_per_s"]
    for r in results:
        r["speedup"] = r["tokens_per_s"] / base
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--families", default="text", help="comma-separated: text (Qwen2), vlm (Qwen2-VL)")
    parser.add_argument("--batch-sizes", default="1,4,16", help="prompts per rollout")
    parser.add_argument("--num-generations", default="1,4,8", help="answers per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length")
    parser.add_argument("--prompt-words", type=int, default=48, help="words of each prompt")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rollouts per point")
    parser.add_argument("--repeats", type=int, default=2, help="timed rollouts per point (median kept)")
    parser.add_argument("--free-length", action="store_true",
                        help="let answers stop at a stop token (default: exactly --max-new-tokens tokens)")
    args = parser.parse_args(argv)
    common.setup_torch(args)
    env = common.environment(args)
    print(f"bench_rollout on {env.get('gpu') or env['cpu']} ({env['cpu_count']} cores), torch {env['torch']}, "
          f"transformers {env['transformers']}, {args.dtype}", flush=True)
    results: list[dict[str, Any]] = []
    for family in [FAMILIES.get(f, f) for f in args.families.split(",") if f]:
        results += sweep(args, family)
    rows = [[r["family"], r["batch"], r["num_generations"], r["sequences"], r["answer_length"], r["seconds"],
             r["tokens_per_s"], r["speedup"]] for r in results]
    table = common.print_table(["model", "batch", "G", "seqs", "answer len", "rollout s", "tokens/s", "speedup"],
                               rows, title="rollout throughput (median of the timed rollouts)")
    common.write_json(args.out, {"benchmark": "bench_rollout", "environment": env, "args": {
        k: v for k, v in vars(args).items() if not k.startswith("_")}, "results": results, "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
