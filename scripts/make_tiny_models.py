#!/usr/bin/env python
"""Build tiny random-init models (offline) for tests and smoke runs.

    python scripts/make_tiny_models.py --family qwen2_vl --size student --tokenizer bpe --out models/tiny/qwen2_vl
    python scripts/make_tiny_models.py --family all --out models/tiny      # every family, student and teacher
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from dopd.model.tiny import FAMILIES, build_tiny_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="all", choices=("all",) + FAMILIES, help="model family (or all)")
    parser.add_argument("--size", default="student", choices=("student", "teacher", "both"),
                        help="student (hidden 64, 2 layers) or teacher (hidden 96, 3 layers), or both")
    parser.add_argument("--tokenizer", default="bpe", choices=("bpe", "qwen2"),
                        help="bpe: small trained byte-level BPE; qwen2: the real Qwen2 tokenizer (vocab 151,936)")
    parser.add_argument("--out", required=True,
                        help="output folder (with --family all or --size both: parent of <family>-<size>-<tokenizer>)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    args = parser.parse_args(argv)

    families = FAMILIES if args.family == "all" else (args.family,)
    sizes = ("student", "teacher") if args.size == "both" or args.family == "all" else (args.size,)
    single = len(families) == 1 and len(sizes) == 1
    for family in families:
        for size in sizes:
            out = args.out if single else os.path.join(args.out, f"{family}-{size}-{args.tokenizer}")
            build_tiny_model(family, out, size=size, tokenizer=args.tokenizer, seed=args.seed)
            print(f"built {family} {size} ({args.tokenizer} tokenizer) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
