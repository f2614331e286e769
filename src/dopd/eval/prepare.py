"""`python -m dopd.eval.prepare NAME [NAME ...] [--dataset_dir data] [--source ID_OR_DIR] [--limit N]`

Downloads a VLM benchmark once (needs the hub) and writes the local copy its dataset_info.json entry points at:
`<dataset_dir>/benchmarks/<name>.json` plus images under `<dataset_dir>/benchmarks/<name>/`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .benchmarks import BENCHMARKS, prepare_benchmark


def main(argv: Optional[Sequence[str]] = None) -> int:
    vlm = sorted(name for name, bench in BENCHMARKS.items() if bench.convert is not None)
    parser = argparse.ArgumentParser(prog="python -m dopd.eval.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=vlm, metavar="NAME", help=f"one of: {', '.join(vlm)}")
    parser.add_argument("--dataset_dir", default="data", help="folder holding dataset_info.json (default: data)")
    parser.add_argument("--source", default=None, help="another hub id, or LogicVista's local data folder")
    parser.add_argument("--limit", type=int, default=None, help="keep only the first N rows")
    args = parser.parse_args(argv)
    for name in args.names:
        try:
            path = prepare_benchmark(name, args.dataset_dir, source=args.source, limit=args.limit)
        except Exception as err:  # noqa: BLE001 - report which benchmark failed and why, then stop
            print(f"prepare {name}: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        print(f"{name}: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
