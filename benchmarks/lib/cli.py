"""The synthetic-model benchmarks' shared command line: the arguments, torch setup, the scratch folder, and the
student / teacher pair those arguments describe."""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

from benchmarks.lib.models import QWEN2_VOCAB, ModelSpec, build_model


def add_common_args(parser: argparse.ArgumentParser, *, hidden: int = 512, layers: int = 4,
                    teacher_hidden: int = 768, teacher_layers: int = 4) -> None:
    """Model, device and output arguments every script shares."""
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="dtype of both models' weights (pure, no autocast); GPU runs: bfloat16")
    parser.add_argument("--hidden", type=int, default=hidden, help="student hidden size (head_dim 64)")
    parser.add_argument("--layers", type=int, default=layers, help="student decoder layers")
    parser.add_argument("--teacher-hidden", type=int, default=teacher_hidden, help="teacher hidden size")
    parser.add_argument("--teacher-layers", type=int, default=teacher_layers, help="teacher decoder layers")
    parser.add_argument("--vocab", type=int, default=QWEN2_VOCAB,
                        help="logit rows of both models (the tokenizer is always the real Qwen2 one)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")


def setup_torch(args: argparse.Namespace) -> None:
    """Threads and seed as the arguments say; exits when CUDA is asked for but absent."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")


def workdir(args: argparse.Namespace) -> str:
    """The scratch folder: --workdir, else one temp dir per run (made on first use)."""
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        return args.workdir
    if not getattr(args, "_tmp", None):
        args._tmp = tempfile.mkdtemp(prefix="dopd_bench_")
    return args._tmp


def build_pair(args: argparse.Namespace, family: str, need_teacher: bool = True) -> tuple[Any, str, Any, str]:
    """(student, student_dir, teacher or None, teacher_dir or None) for `family`, as the arguments say."""
    root = workdir(args)
    s_spec = ModelSpec(family, args.hidden, args.layers, args.vocab)
    s_dir = os.path.join(root, f"{family}-student-{args.hidden}x{args.layers}-{args.vocab}")
    student = build_model(s_spec, s_dir, seed=args.seed, dtype=args.dtype)
    teacher = t_dir = None
    if need_teacher:
        t_spec = ModelSpec(family, args.teacher_hidden, args.teacher_layers, args.vocab)
        t_dir = os.path.join(root, f"{family}-teacher-{args.teacher_hidden}x{args.teacher_layers}-{args.vocab}")
        teacher = build_model(t_spec, t_dir, seed=args.seed + 1, dtype=args.dtype)
    return student, s_dir, teacher, t_dir
