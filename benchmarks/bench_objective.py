"""Benchmark the DOPD objective: logits path versus the chunked hidden-state path (forward + backward).

Both paths start from the same inputs -- three [1, T, H] hidden states (student with grad), the student lm_head
weight [V, H] (with grad) and the teacher's -- and end with the gradients of the hidden states and the weight:

  logits  : logits = h @ W.T for the three models (targets under no_grad), dopd_loss, backward
  chunked : dopd_loss_from_hidden(..., chunk_size), backward

Peak memory is the extra memory of one forward + backward above what the inputs already hold:
  CPU : every case runs in a fresh subprocess; peak RSS (ru_maxrss) at the end minus the RSS measured right
        after the inputs were allocated (so imports and inputs are excluded, every torch CPU allocation counts)
  CUDA: torch.cuda.max_memory_allocated() minus memory_allocated() after the inputs.
Time is the best of --repeats forward+backward runs (the first one is included), as wall time and as the
process's CPU time (user + system, all threads; steadier than wall time when the machine is shared).

    python -m benchmarks.bench_objective --lengths 1024,4096 --out bench.json
    python -m benchmarks.bench_objective --device cuda --dtype bfloat16 --lengths 1024,4096,8192
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

from benchmarks.lib import measure

PATHS = ("logits", "chunked")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def predicted_extra_bytes(path: str, tokens: int, args: argparse.Namespace) -> int:
    """Rough model of the extra memory, used only to skip cases that cannot fit."""
    tv = tokens * args.vocab
    if path == "logits":
        # three logits tensors + one gradient row per token + the scaled gradient in backward, + one chunk
        return 5 * tv * DTYPE_BYTES[args.dtype] + 4 * args.chunk_size * args.vocab * 4
    return 6 * args.chunk_size * args.vocab * 4 + 2 * args.vocab * args.hidden * 4


def run_case(path: str, tokens: int, args: argparse.Namespace) -> dict[str, Any]:
    """One case in this process. Returns peak extra memory (bytes) and times (s)."""
    import torch

    from dopd.distill import DOPDLossConfig, dopd_loss, dopd_loss_from_hidden

    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    H, V = args.hidden, args.vocab
    scale = 3.0 / H**0.5  # logits with a std of ~3: peaked distributions, like a trained lm_head
    h_s = torch.randn(1, tokens, H, device=device, dtype=dtype)
    h_p = torch.randn(1, tokens, H, device=device, dtype=dtype)
    h_t = torch.randn(1, tokens, H, device=device, dtype=dtype)
    w_s = (torch.randn(V, H, device=device) * scale).to(dtype).requires_grad_(True)
    w_t = (torch.randn(V, H, device=device) * scale).to(dtype)
    labels = torch.randint(0, V, (1, tokens), device=device)
    cfg = DOPDLossConfig()

    def step() -> float:
        h = h_s.clone().requires_grad_(True)
        w_s.grad = None
        if path == "logits":
            logits_s = h @ w_s.T
            with torch.no_grad():
                logits_p, logits_t = h_p @ w_s.T, h_t @ w_t.T
            out = dopd_loss(logits_s, logits_p, logits_t, labels, cfg, chunk_size=args.chunk_size)
            del logits_p, logits_t
        else:
            out = dopd_loss_from_hidden(h, h_p, h_t, labels, w_s, w_t, config=cfg, chunk_size=args.chunk_size)
        out.loss.backward()
        assert h.grad is not None and w_s.grad is not None
        return float(out.loss)

    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = measure.rss_bytes()
    times, cpu_times, loss = [], [], None
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), measure.cpu_seconds()
        loss = step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(measure.cpu_seconds() - cpu_start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base  # ru_maxrss is KiB on Linux
    return {"path": path, "tokens": tokens, "peak_extra_bytes": int(peak), "time_s": min(times), "times_s": times,
            "cpu_s": min(cpu_times), "cpu_times_s": cpu_times, "loss": loss}


def _zero3_rank(rank: int, port: int, path: str, tokens: int, args: argparse.Namespace, out_dir: str) -> None:
    """One rank of a 2-process ZeRO-3 run (gloo, CPU): a student made of a body Linear(H, H) and the lm_head
    Linear(H, V), both partitioned by DeepSpeed; a frozen, replicated teacher head. One forward + backward of the
    objective: `logits` calls the head as a module (DeepSpeed gathers it in its hooks) and runs `dopd_loss` on
    [1, T, V] logits; `chunked` gathers each head once (`gathered_parameters`, held through the backward, as
    DOPDTrainer does) and runs `dopd_loss_from_hidden`. Peak extra memory: VmHWM reset after setup (engine, inputs)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import deepspeed
    import torch

    from dopd.distill import DOPDLossConfig, dopd_loss, dopd_loss_from_hidden
    from dopd.train.distributed import gathered_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    deepspeed.init_distributed(dist_backend="gloo")
    dtype = getattr(torch, args.dtype)
    H, V = args.hidden, args.vocab
    torch.manual_seed(0)
    student = torch.nn.Module()
    student.body = torch.nn.Linear(H, H, bias=False)
    student.lm_head = torch.nn.Linear(H, V, bias=False)
    teacher_head = torch.nn.Linear(H, V, bias=False).to(dtype).requires_grad_(False)
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
              "optimizer": {"type": "SGD", "params": {"lr": 0.0}}, "zero_allow_untested_optimizer": True}
    if args.dtype == "bfloat16":
        config["bf16"] = {"enabled": True}
    engine, *_ = deepspeed.initialize(model=student, model_parameters=student.parameters(), config=config)
    module = engine.module
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(1, tokens, H, generator=g).to(dtype)
    h_p = torch.randn(1, tokens, H, generator=g).to(dtype)
    h_t = torch.randn(1, tokens, H, generator=g).to(dtype)
    labels = torch.randint(0, V, (1, tokens), generator=g)
    cfg = DOPDLossConfig()
    import gc

    gc.collect()
    measure.reset_peak_rss()
    base = measure.peak_rss()
    start = time.perf_counter()
    hidden = module.body(x)
    if path == "logits":
        with torch.no_grad():
            logits_p, logits_t = module.lm_head(h_p), teacher_head(h_t)
        out = dopd_loss(module.lm_head(hidden), logits_p, logits_t, labels, cfg, chunk_size=args.chunk_size)
        del logits_p, logits_t
        engine.backward(out.loss)
    else:
        with gathered_parameters(module.lm_head):
            out = dopd_loss_from_hidden(hidden, h_p, h_t, labels, module.lm_head, teacher_head, config=cfg,
                                        chunk_size=args.chunk_size)
            engine.backward(out.loss)
    seconds = time.perf_counter() - start
    peak = measure.peak_rss() - base
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump({"peak_extra_bytes": peak, "time_s": seconds, "loss": float(out.loss)}, fh)


def run_zero3_case(path: str, tokens: int, args: argparse.Namespace) -> dict[str, Any]:
    import socket
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out_dir = tempfile.mkdtemp(prefix="dopd_z3_")
    mp.spawn(_zero3_rank, args=(port, path, tokens, args, out_dir), nprocs=2, join=True)
    ranks = [json.load(open(os.path.join(out_dir, f"rank{r}.json"))) for r in range(2)]
    return {"path": path, "tokens": tokens, "zero3_ranks": ranks,
            "peak_extra_bytes": max(r["peak_extra_bytes"] for r in ranks),
            "time_s": max(r["time_s"] for r in ranks), "cpu_s": max(r["time_s"] for r in ranks),
            "loss": ranks[0]["loss"]}


def run_in_subprocess(path: str, tokens: int, args: argparse.Namespace) -> dict[str, Any]:
    """One case in a fresh `python -m benchmarks.bench_objective` process (run from the repo root, as its parent)."""
    cmd = [sys.executable, "-m", "benchmarks.bench_objective", "--_case", f"{path}:{tokens}",
           "--vocab", str(args.vocab), "--hidden", str(args.hidden), "--chunk-size", str(args.chunk_size),
           "--device", args.device, "--dtype", args.dtype, "--repeats", str(args.repeats),
           "--threads", str(args.threads)]
    if args.zero3:
        cmd.append("--zero3")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"path": path, "tokens": tokens, "error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="1024,4096,8192", help="comma-separated response lengths (tokens)")
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPE_BYTES))
    parser.add_argument("--repeats", type=int, default=2, help="forward+backward runs per case (best time kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--paths", default=",".join(PATHS), help="logits,chunked")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--zero3", action="store_true",
                        help="DeepSpeed ZeRO-3, 2 processes on CPU (gloo): the logits path (head called as a module) "
                             "vs the chunked path with each head gathered once; peak extra memory = max over ranks")
    parser.add_argument("--_case", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def measure_cases(args: argparse.Namespace, lengths: list[int], paths: list[str]) -> list[dict[str, Any]]:
    """Every (path, length) case, each in a fresh process on CPU; a case predicted to exceed 85% of the available
    memory is skipped and says so."""
    results: list[dict[str, Any]] = []
    for tokens in lengths:
        for path in paths:
            need = predicted_extra_bytes(path, tokens, args)
            if args.device == "cpu":
                avail = measure.available_bytes()
                if need > 0.85 * avail:
                    reason = (f"skipped: predicted extra memory {need / 2**30:.1f} GiB exceeds 85% of the "
                              f"{avail / 2**30:.1f} GiB available")
                    print(f"{path:8s} T={tokens:6d}  {reason}", flush=True)
                    results.append({"path": path, "tokens": tokens, "skipped": reason})
                    continue
            res = run_in_subprocess(path, tokens, args) if args.device == "cpu" else run_case(path, tokens, args)
            results.append(res)
            if "error" in res:
                print(f"{path:8s} T={tokens:6d}  ERROR: {res['error'][-400:]}", flush=True)
            else:
                print(f"{path:8s} T={tokens:6d}  peak extra {res['peak_extra_bytes'] / 2**30:7.2f} GiB  "
                      f"time {res['time_s']:7.2f} s  cpu {res['cpu_s']:7.2f} s  loss {res['loss']:.4f}", flush=True)
    return results


def print_ratios(args: argparse.Namespace, lengths: list[int], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chunked path against the logits path per length (memory, wall and CPU time); returns the ratio rows."""
    print()
    print(f"V={args.vocab} H={args.hidden} chunk={args.chunk_size} device={args.device} dtype={args.dtype}")
    print(f"{'tokens':>7} | {'logits GiB':>10} {'chunked GiB':>11} {'mem ratio':>9} | "
          f"{'logits s':>8} {'chunked s':>9} {'time ratio':>10} | {'cpu ratio':>9}")
    ratios = []
    for tokens in lengths:
        by = {r["path"]: r for r in results if r["tokens"] == tokens and "peak_extra_bytes" in r}

        def cell(path: str, key: str, div: float = 1.0) -> str:
            return f"{by[path][key] / div:.2f}" if path in by else "-"

        row = {"tokens": tokens}
        if "logits" in by and "chunked" in by:
            row["memory_ratio"] = by["chunked"]["peak_extra_bytes"] / max(by["logits"]["peak_extra_bytes"], 1)
            row["time_ratio"] = by["chunked"]["time_s"] / by["logits"]["time_s"]
            row["cpu_time_ratio"] = by["chunked"]["cpu_s"] / by["logits"]["cpu_s"]
            ratios.append(row)
        mem_r = f"{row['memory_ratio']:.3f}" if "memory_ratio" in row else "-"
        time_r = f"{row['time_ratio']:.2f}" if "time_ratio" in row else "-"
        cpu_r = f"{row['cpu_time_ratio']:.2f}" if "cpu_time_ratio" in row else "-"
        print(f"{tokens:>7} | {cell('logits', 'peak_extra_bytes', 2**30):>10} "
              f"{cell('chunked', 'peak_extra_bytes', 2**30):>11} {mem_r:>9} | "
              f"{cell('logits', 'time_s'):>8} {cell('chunked', 'time_s'):>9} {time_r:>10} | {cpu_r:>9}")
    if args.zero3:
        print("ZeRO-3, 2 processes: peak extra memory = the larger rank's; target at 2,048 tokens: memory ratio <= 0.3")
    else:
        print("targets at 4k tokens: memory ratio <= 0.25, time ratio <= 1.5")
    return ratios


def write_json(args: argparse.Namespace, results: list[dict[str, Any]], ratios: list[dict[str, Any]]) -> None:
    import torch  # imported where used, as in run_case: on CPU the parent process runs every case in a child

    meta = {"zero3_two_processes": args.zero3, "vocab": args.vocab, "hidden": args.hidden, "chunk_size": args.chunk_size, "device": args.device,
            "dtype": args.dtype, "repeats": args.repeats, "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
            "memory_measure": "ru_maxrss of a fresh subprocess minus RSS after inputs" if args.device == "cpu"
            else "torch.cuda.max_memory_allocated minus memory_allocated after inputs"}
    with open(args.out, "w") as fh:
        json.dump({"meta": meta, "results": results, "ratios": ratios}, fh, indent=2)
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._case:  # child process: one case, JSON on the last line of stdout
        path, tokens = args._case.split(":")
        print(json.dumps((run_zero3_case if args.zero3 else run_case)(path, int(tokens), args)))
        return 0

    lengths = [int(x) for x in args.lengths.split(",") if x]
    paths = [p for p in args.paths.split(",") if p]
    results = measure_cases(args, lengths, paths)
    ratios = print_ratios(args, lengths, results)
    if args.out:
        write_json(args, results, ratios)
    return 0

if __name__ == "__main__":
    sys.exit(main())
