"""Trainer callbacks: a JSONL log, graceful stop on SIGTERM/Ctrl-C, and skipping non-finite updates."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class JsonlLogCallback(TrainerCallback):
    """Appends every log record to `output_dir/trainer_log.jsonl` (main process only)."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        os.makedirs(args.output_dir, exist_ok=True)
        record = {"step": state.global_step, "max_steps": state.max_steps, **logs}
        with open(os.path.join(args.output_dir, "trainer_log.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


class GracefulStopCallback(TrainerCallback):
    """On SIGTERM or the first Ctrl-C: finish the current step, save a checkpoint, stop. A second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("received %s: saving a checkpoint after this step, then stopping",
                       signal.Signals(signum).name)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


class NonFiniteLossCallback(TrainerCallback):
    """Skips the optimizer update of a step whose loss was not finite and stops after `limit` in a row.

    Gradients set to None make torch optimizers leave those parameters (and their moments) untouched.
    """

    def __init__(self, trainer: Any, limit: int) -> None:
        self.trainer = trainer
        self.limit = limit
        self.in_a_row = 0
        self.stopped_for_nonfinite = False

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.trainer.skip_next_update:
            self.trainer.skip_next_update = False
            self.in_a_row += 1
            logger.warning("step %d: non-finite loss, update skipped (%d in a row)", state.global_step + 1,
                           self.in_a_row)
            for param in self.trainer.model.parameters():
                param.grad = None
            if self.limit and self.in_a_row >= self.limit:
                logger.error("stopping: %d consecutive steps with a non-finite loss", self.in_a_row)
                self.stopped_for_nonfinite = True
                control.should_training_stop = True
        else:
            self.in_a_row = 0
        self._optimizer_started = time.perf_counter()

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        started = getattr(self, "_optimizer_started", None)
        if started is not None:
            self.trainer._record("time/optimizer_s", time.perf_counter() - started)
