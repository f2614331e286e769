"""Reporting: the run's environment, Markdown tables, target verdicts and the JSON results file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict
from typing import Any, Optional, Sequence


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, else platform)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """Machine, library versions, device, dtype and command line of this run."""
    import torch
    import transformers

    env: dict[str, Any] = {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "device": args.device, "dtype": args.dtype, "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
    }
    try:
        import trl

        env["trl"] = trl.__version__
    except ImportError:
        env["trl"] = None
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats with `digits` decimals, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        return f"{value:.{digits}f}"
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: Optional[str] = None) -> str:
    """Print (and return) a Markdown table."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = []
    if title:
        lines.append(f"\n{title}")
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def verdict(value: Optional[float], target: float, lower_is_better: bool = True) -> str:
    """'met' / 'NOT met' against `target`; 'n/a' without a value."""
    if value is None or value != value:
        return "n/a"
    ok = value <= target if lower_is_better else value >= target
    return "met" if ok else "NOT met"


def _to_json(o: Any) -> Any:
    return asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)


def row_done(out: Optional[str], line: str, row: dict[str, Any]) -> None:
    """Print one finished measurement and, with `--out`, append it to `<out>.rows.jsonl` at once, so a run stopped
    by a time limit (a lent GPU's lease) keeps every row it finished, not only its printed summary."""
    print(line, flush=True)
    if not out:
        return
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    with open(out + ".rows.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=_to_json) + "\n")


def write_json(path: Optional[str], payload: dict[str, Any]) -> None:
    """Write `payload` as JSON to `path` (nothing without a path)."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, default=_to_json)
    print(f"\nresults written to {path}")
