"""What a trainer logs besides the Trainer's own keys: values recorded during the steps since the last log record
(`StepMetrics`, averaged into the record), and the seconds of each phase of an optimizer step (`StepTimer`, the one
place a step is timed)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from transformers import TrainerCallback


class StepMetrics:
    """Values recorded since the last log record, by name; each log record gets their mean (`drain`)."""

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = defaultdict(list)

    def record(self, name: str, value: float) -> None:
        self._values[name].append(float(value))

    def __bool__(self) -> bool:
        return bool(self._values)

    def drain(self) -> dict[str, float]:
        """The mean of each name's values, in the order the names were first recorded; then forgets them."""
        means = {name: sum(values) / len(values) for name, values in self._values.items()}
        self._values.clear()
        return means

    def latest(self, prefix: str = "") -> dict[str, float]:
        """The last value of each name that starts with `prefix` (one micro-batch's, when read after it)."""
        return {name: values[-1] for name, values in self._values.items() if name.startswith(prefix) and values}

    def clear(self) -> None:
        self._values.clear()


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so the logged time split is the real one."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Lap:
    """The seconds one `StepTimer.phase` took, set when it ends."""

    seconds: float = 0.0


class StepTimer(TrainerCallback):
    """Seconds per optimizer step, by phase, recorded into `metrics` as `time/<phase>_s`.

    The trainer times its own phases (`phase("rollout")`, `phase("scoring")`) and each micro-batch's whole
    `training_step` (`phase("step")`); at the step's last micro-batch `end_step` records each of `phases` and
    `time/update_s`, the rest of the step's micro-batches (the graded forward and the backward). The optimizer step
    itself, which runs between the Trainer's `on_pre_optimizer_step` and `on_optimizer_step` callbacks, is
    `time/optimizer_s`. Each phase waits for queued GPU work before it reads the clock."""

    def __init__(self, metrics: StepMetrics, device: torch.device, phases: Sequence[str] = ()) -> None:
        self.metrics = metrics
        self.device = device
        self.phases = tuple(phases)
        self._seconds: dict[str, float] = defaultdict(float)
        self._optimizer_started: float | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Lap]:
        lap = Lap()
        started = time.perf_counter()
        yield lap
        sync(self.device)
        lap.seconds = time.perf_counter() - started
        self._seconds[name] += lap.seconds

    def end_step(self) -> None:
        """The optimizer step's last micro-batch has run: record its phases and start the next step's."""
        seconds, self._seconds = self._seconds, defaultdict(float)
        for name in self.phases:
            self.metrics.record(f"time/{name}_s", seconds[name])
        self.metrics.record("time/update_s", seconds["step"] - sum(seconds[name] for name in self.phases))

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._optimizer_started = time.perf_counter()

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._optimizer_started is not None:
            self.metrics.record("time/optimizer_s", time.perf_counter() - self._optimizer_started)
            self._optimizer_started = None
