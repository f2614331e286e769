"""Our on-policy distillation step against TRL's (issue 8, part 4): seconds per step and peak memory.

The peer: `trl.DistillationTrainer` (TRL >= 1.x; the stable successor of `GKDTrainer`, which now lives in
`trl.experimental.gkd`). It is always on-policy (the student generates every completion: GKD's `lmbda = 1`) and
minimises the generalized JSD with `beta` in TRL's convention: beta 1 = reverse KL(student || teacher) over the full
vocabulary, which is what we run (chunked over tokens, from hidden states, like ours).

Ours, the same `DOPDTrainer` that `dopd-cli train` builds:
  vanilla_opd           the paper's baseline: sampled-token reverse KL, teacher sees x (the issue's comparison)
  vanilla_opd_full_rkl  full-vocabulary reverse KL, teacher sees x: the same objective as TRL's beta = 1
  dopd                  DOPD (teacher and privileged student see x+p, a hint): target <= 1.3x TRL's step
  vanilla_opd_full_rkl_fp32_master   our default for a bf16 checkpoint without `pure_bf16`: fp32 master weights
                        and AdamW states, bf16 autocast (the price of not losing small updates; not equal work)

Like with like: the same Qwen2 student and teacher (built from config, random init, same seed, real Qwen2 tokenizer
and 151,936-row vocabulary), the same prompts and chat template, the same number of sequences per step (ours:
`batch` prompts x G answers; TRL has no G, so `batch x G` prompts, each prompt repeated G times), the same answer
length (both generate exactly `--max-new-tokens` tokens: `min_new_tokens = max_new_tokens`), sampling at temperature
1 with no top-k/top-p, the same weight dtype and no autocast (`bf16=False`; under `--dtype bfloat16` ours runs with
`pure_bf16`, as TRL trains the bf16 weights themselves), no gradient checkpointing (TRL's default
is on; ours off), AdamW, lr 1e-5. Differences that remain: TRL's loss runs over all 151,936 logit rows, ours over the
tokenizer's 151,665 (the padding rows are never sampled); TRL stops on eos + pad ids, ours on the chat template's stop
tokens (irrelevant with fixed-length answers); TRL pads prompts left for scoring, ours right; on CUDA TRL's chunked
loss uses Triton kernels when `triton` is installed.

Each framework runs in a fresh subprocess (peak RSS there is that framework's alone). One warm-up step, then the
median of `--steps` timed steps (TrainerCallback on_step_begin -> on_step_end, CUDA synchronised).
Memory: CPU peak RSS of the child process (ru_maxrss) and its growth after both models were built; CUDA
torch.cuda.max_memory_allocated() and its growth after the models were built.

    python -m benchmarks.bench_trl --out trl.json                                   # GPU-size defaults
    python -m benchmarks.bench_trl --device cuda --dtype bfloat16 --out trl.json
    python -m benchmarks.bench_trl --hidden 256 --layers 2 --teacher-hidden 384 --teacher-layers 2 \
        --batch 2 --num-generations 2 --max-new-tokens 16 --steps 2                 # small CPU run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from benchmarks.lib import cli, data, measure, report, trainers

FRAMEWORKS = ("trl", "vanilla_opd", "vanilla_opd_full_rkl", "dopd", "vanilla_opd_full_rkl_fp32_master")
MASTER_SUFFIX = "_fp32_master"  # our default under a bf16 torch_dtype: fp32 master weights, bf16 autocast
TARGETS = {  # (numerator, denominator, quantity, target): numerator / denominator <= target
    "vanilla_opd/trl step_s": ("vanilla_opd", "trl", "step_s", 1.0),
    "vanilla_opd/trl peak_bytes": ("vanilla_opd", "trl", "peak_bytes", 1.0),
    "vanilla_opd/trl peak_extra_bytes": ("vanilla_opd", "trl", "peak_extra_bytes", 1.0),
    "vanilla_opd_full_rkl/trl step_s": ("vanilla_opd_full_rkl", "trl", "step_s", 1.0),
    "vanilla_opd_full_rkl/trl peak_bytes": ("vanilla_opd_full_rkl", "trl", "peak_bytes", 1.0),
    "vanilla_opd_full_rkl/trl peak_extra_bytes": ("vanilla_opd_full_rkl", "trl", "peak_extra_bytes", 1.0),
    "dopd/trl step_s": ("dopd", "trl", "step_s", 1.3),
}


def run_ours(args: argparse.Namespace, stage: str, student: Any, student_dir: str, teacher: Any, teacher_dir: str,
             probe: measure.MemoryProbe) -> dict[str, Any]:
    total = args.warmup + args.steps
    extra: dict[str, Any] = {}
    if stage.endswith(MASTER_SUFFIX):
        stage = stage[: -len(MASTER_SUFFIX)]
    elif args.dtype == "bfloat16":
        extra["pure_bf16"] = True  # TRL trains the bf16 weights themselves: so do we, for equal work
    if stage != "dopd":
        extra["teacher_sees_privileged"] = False
    if args.loss_chunk_size is not None:
        extra["loss_chunk_size"] = args.loss_chunk_size
    cfg = trainers.dopd_config(args, stage, student_dir, teacher_dir, args.batch, args.num_generations,
                             args.max_new_tokens, total, **extra)
    samples = data.make_samples("qwen2", args.batch * total, args.prompt_words, args.hint_words, None)
    probe.start()
    trainer = trainers.make_dopd_trainer(cfg, student, teacher, samples)
    if not args.free_length:
        trainers.fixed_length_rollouts(trainer.adapter)
    trainer._distill_loss = measure.synchronised(trainer._distill_loss, args.device)
    timer = measure.step_timer(args.device)
    trainer.add_callback(timer)
    trainers.quiet(trainer)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "time/rollout_s" in e][args.warmup:]
    return {"step_times_s": timer.times[args.warmup:], "rollout_times_s": [e["time/rollout_s"] for e in logs],
            "answer_length": measure.mean([e["rollout/response_length"] for e in logs]),
            "sequences": args.batch * args.num_generations}


def run_trl(args: argparse.Namespace, student: Any, student_dir: str, teacher: Any,
            probe: measure.MemoryProbe) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DistillationConfig, DistillationTrainer

    total = args.warmup + args.steps
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    group = args.num_generations
    rows = [{"prompt": [{"role": "user", "content": data.question(i, args.prompt_words)}]}
            for i in range(args.batch * total) for _ in range(group)]
    config = DistillationConfig(
        output_dir=os.path.join(cli.workdir(args), "out-trl"), per_device_train_batch_size=args.batch * group,
        max_steps=total, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=not args.device.startswith("cuda"), bf16=False, fp16=False, gradient_checkpointing=False,
        learning_rate=1e-5, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        beta=1.0, generation_kwargs=None if args.free_length else {"min_new_tokens": args.max_new_tokens},
        disable_tqdm=True, seed=args.seed, dataloader_num_workers=0, log_completions=False,
    )
    probe.start()
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=config,
                                  train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    rollout_times: list[float] = []
    lengths: list[float] = []
    inner = trainer._generate_single_turn

    def timed_generate(*a: Any, **kw: Any) -> Any:
        measure.sync(args.device)
        start = time.perf_counter()
        out = inner(*a, **kw)
        measure.sync(args.device)
        rollout_times.append(time.perf_counter() - start)
        lengths.append(sum(len(c) for c in out) / max(len(out), 1))
        return out

    trainer._generate_single_turn = timed_generate
    timer = measure.step_timer(args.device)
    trainer.add_callback(timer)
    trainers.quiet(trainer)
    trainer.train()
    return {"step_times_s": timer.times[args.warmup:], "rollout_times_s": rollout_times[args.warmup:],
            "answer_length": measure.mean(lengths[args.warmup:]), "sequences": args.batch * group}


def child(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    cli.setup_torch(args)
    student, student_dir, teacher, teacher_dir = cli.build_pair(args, "qwen2", need_teacher=True)
    probe = measure.MemoryProbe(args.device)
    if framework == "trl":
        res = run_trl(args, student, student_dir, teacher, probe)
    else:
        res = run_ours(args, framework, student, student_dir, teacher, teacher_dir, probe)
    res.update(probe.result())
    res["framework"] = framework
    res["step_s"] = measure.median(res["step_times_s"])
    res["rollout_s"] = measure.median(res["rollout_times_s"])
    res["rest_s"] = measure.median([s - r for s, r in zip(res["step_times_s"], res["rollout_times_s"])])
    return res


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(parser)
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated: " + ", ".join(FRAMEWORKS))
    parser.add_argument("--batch", type=int, default=4, help="prompts per step (ours; TRL gets batch x G prompts)")
    parser.add_argument("--num-generations", type=int, default=4, help="answers per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length (both frameworks)")
    parser.add_argument("--prompt-words", type=int, default=48, help="words of each prompt")
    parser.add_argument("--hint-words", type=int, default=32, help="words of the privileged hint (dopd)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per framework")
    parser.add_argument("--loss-chunk-size", type=int, default=None,
                        help="ours: tokens per chunk of the hidden-state loss (default: the trainer's, 256)")
    parser.add_argument("--free-length", action="store_true",
                        help="let answers stop at a stop token (default: exactly --max-new-tokens tokens)")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def print_tables(args: argparse.Namespace, ok: dict[str, dict[str, Any]]) -> tuple[str, str, dict[str, float]]:
    """The per-framework table and the target ratios, from the frameworks that finished."""
    mib = 2**20
    rows = [[k, v["sequences"], v["answer_length"], v["rollout_s"], v["rest_s"], v["step_s"], v["peak_bytes"] / mib,
             v["peak_extra_bytes"] / mib] for k, v in ok.items()]
    table = report.print_table(["framework", "seqs", "answer len", "rollout s", "score+update s", "step s",
                                "peak MiB", "peak growth MiB"], rows,
                               title="seconds per step (median) and peak memory (" +
                               ("torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else
                                "peak RSS of a fresh process") + ")")
    ratios: dict[str, float] = {}
    ratio_rows = []
    for name, (num, den, key, target) in TARGETS.items():
        if num in ok and den in ok and ok[den][key] > 0:
            ratios[name] = ok[num][key] / ok[den][key]
            ratio_rows.append([name, ratios[name], target, report.verdict(ratios[name], target)])
    ratio_table = report.print_table(["ratio", "value", "target (<=)", "verdict"], ratio_rows,
                                     title="ratios (same run, same models, data, batch, answer length and dtype)")
    return table, ratio_table, ratios


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._child:  # one framework in this fresh process; JSON on the last line of stdout
        print(json.dumps(child(args, args._child)))
        return 0

    env = report.environment(args)
    print(f"bench_trl on {env.get('gpu') or env['cpu']} ({env['cpu_count']} cores), torch {env['torch']}, "
          f"transformers {env['transformers']}, trl {env['trl']}, {args.dtype}", flush=True)
    if env["trl"] is None:
        raise SystemExit("trl is not installed: pip install -r benchmarks/requirements.txt")
    argv_child = [a for a in (argv if argv is not None else sys.argv[1:])]
    if "--workdir" not in argv_child:
        argv_child += ["--workdir", cli.workdir(args)]
    results: dict[str, dict[str, Any]] = {}
    for framework in [f for f in args.frameworks.split(",") if f]:
        started = time.perf_counter()
        res = measure.run_child("benchmarks.bench_trl", [*argv_child, "--_child", framework])
        res["wall_s"] = time.perf_counter() - started
        results[framework] = res
        if "error" in res:
            print(f"  {framework}: FAILED\n{res['error']}", flush=True)
        else:
            report.row_done(args.out, f"  {framework}: {res['step_s']:.3f} s/step, peak "
                            f"{res['peak_bytes'] / 2**20:.0f} MiB ({res['wall_s']:.0f} s incl. setup)",
                            {"framework": framework, **res})

    ok = {k: v for k, v in results.items() if "error" not in v}
    table, ratio_table, ratios = print_tables(args, ok)
    report.write_json(args.out, {"benchmark": "bench_trl", "environment": env, "args": {
        k: v for k, v in vars(args).items() if not k.startswith("_")}, "results": results, "ratios": ratios,
        "targets": {k: v[3] for k, v in TARGETS.items()}, "table": table, "ratio_table": ratio_table})
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
