"""Measurement: wall time (CUDA synchronised), CPU time, peak memory (RSS or CUDA), a case in a fresh process,
and the mean / median of repeated timings."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Sequence


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def synchronised(fn: Callable[..., Any], device: str) -> Callable[..., Any]:
    """`fn` followed by a CUDA synchronisation, so wall-clock timers around it measure the GPU work too."""

    def wrapped(*a: Any, **kw: Any) -> Any:
        out = fn(*a, **kw)
        sync(device)
        return out

    return wrapped


def step_timer(device: str) -> Any:
    """A `TrainerCallback` recording the wall time of every optimizer step (begin -> end, CUDA synchronised)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync(device)
            self._start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync(device)
            self.times.append(time.perf_counter() - self._start)

    return StepTimer()


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): less sensitive than wall time to a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def available_bytes() -> int:
    """MemAvailable of this machine (Linux); a huge number where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def rss_bytes() -> int:
    """This process's resident set now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Reset this process's peak resident set (VmHWM; Linux), so `peak_rss()` covers what runs from here on."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_rss() -> int:
    """This process's peak resident set (VmHWM), resettable with `reset_peak_rss` (unlike ru_maxrss)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class MemoryProbe:
    """Peak memory of this process from `start()` on. CPU: peak RSS (ru_maxrss, whole process; run each case in a
    fresh subprocess) and the RSS at `start()`; CUDA: max_memory_allocated and memory_allocated at `start()`."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.base = 0

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = rss_bytes()

    def result(self) -> dict[str, int]:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            kind = "cuda_max_memory_allocated"
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
            kind = "peak_rss"
        return {"peak_bytes": int(peak), "base_bytes": int(self.base), "peak_extra_bytes": int(peak - self.base),
                "memory_kind": kind}


def run_child(module: str, argv: Sequence[str]) -> dict[str, Any]:
    """Run `python -m module argv...` in a fresh process (same working directory, so from the repo root like its
    parent); its result is the JSON on the last line of stdout."""
    proc = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-3000:]}
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        return {"error": "no JSON result; stdout tail:\n" + proc.stdout[-2000:] + proc.stderr[-2000:]}
    return json.loads(lines[-1])


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for no values."""
    return sum(values) / len(values) if values else float("nan")


def median(values: Sequence[float]) -> float:
    """Median: robust to a step slowed by another process on a shared machine."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
