"""Trainer callbacks: a JSONL log, one compact console line per log record, graceful stop on SIGTERM/Ctrl-C, and
skipping non-finite updates (the step timer is `dopd.train.metrics.StepTimer`)."""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import time
from collections import deque
from typing import Any, Optional

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

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
    """On SIGTERM or the first Ctrl-C: finish the current step, save a checkpoint, stop. A second Ctrl-C aborts.

    `signum` keeps the signal, so the command can still exit as a process killed by it would (`exit_code`: 128 +
    the signal, 130 for SIGINT, 143 for SIGTERM): `dopd-cli train ... && dopd-cli eval ...` must not go on to the
    next command after an interrupted run, and schedulers tell a preemption from a finished job by it."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: Optional[int] = None
        self._previous: dict[int, Any] = {}

    @property
    def exit_code(self) -> Optional[int]:
        """128 + the signal that stopped the run, or None when none did."""
        return None if self.signum is None else 128 + int(self.signum)

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
        self.signum = self.signum or signum
        logger.warning("received %s: saving a checkpoint after this step, then stopping",
                       signal.Signals(signum).name)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


class NonFiniteLossCallback(TrainerCallback):
    """Skips the optimizer update of a step in which a loss was not finite and stops after `limit` such steps in a row.

    The trainer calls `skip_update` when a micro-batch's loss is not finite; before the optimizer step, gradients set
    to None make torch optimizers leave those parameters (and their moments) untouched.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_a_row = 0
        self.stopped_for_nonfinite = False
        self.skip_next_update = False

    def skip_update(self) -> None:
        """A loss of the current optimizer step was not finite: skip its update."""
        self.skip_next_update = True

    def cancel_skip(self) -> None:
        """Forget a requested skip (losses computed outside the Trainer's loop, e.g. by the probe)."""
        self.skip_next_update = False

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not self.skip_next_update:
            self.in_a_row = 0
            return
        self.skip_next_update = False
        self.in_a_row += 1
        logger.warning("step %d: non-finite loss, update skipped (%d in a row)", state.global_step + 1, self.in_a_row)
        for param in model.parameters():
            param.grad = None
        if self.limit and self.in_a_row >= self.limit:
            logger.error("stopping: %d consecutive steps with a non-finite loss", self.in_a_row)
            self.stopped_for_nonfinite = True
            control.should_training_stop = True


# ---------------------------------------------------------------------------------------------------- console
def _g(value: float) -> str:
    return f"{value:.4g}"


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


def regime_fractions(logs: dict) -> dict[str, float]:
    """`{regime: token fraction}` from the `dopd/<regime>/token_frac` keys of a training record, in logged order."""
    return {key.split("/")[1]: value for key, value in logs.items()
            if key.startswith("dopd/") and key.endswith("/token_frac") and key.count("/") == 2}


def mean_gap(logs: dict) -> Optional[float]:
    """The token-weighted mean of the per-regime `dopd/<regime>/mean_gap` (None when no regime logged one)."""
    fractions = regime_fractions(logs)
    pairs = [(fractions[r], logs[f"dopd/{r}/mean_gap"]) for r in fractions if f"dopd/{r}/mean_gap" in logs]
    weight = sum(w for w, _ in pairs)
    return sum(w * g for w, g in pairs) / weight if weight > 0 else None


def format_train_line(logs: dict, step: int, max_steps: int, step_seconds: Optional[float],
                      eta_seconds: Optional[float]) -> str:
    """`step 3/100 | loss 0.004722 | HT 0.22 HS 0.34 LH 0.22 LL 0.22 | gap 0.276 | rollout 150.6 tok/s | 0.48 s/step
    | ETA 0:00:47`: what a glance at a running job needs; every logged key stays in trainer_log.jsonl."""
    parts = [f"step {step}/{max_steps}", f"loss {_g(logs['loss'])}"]
    fractions = regime_fractions(logs)
    if fractions:
        parts.append(" ".join(f"{r} {f:.2f}" for r, f in fractions.items()))
    gap = mean_gap(logs)
    if gap is not None:
        parts.append(f"gap {gap:.3g}")
    if "rollout/tokens_per_s" in logs:
        parts.append(f"rollout {logs['rollout/tokens_per_s']:.1f} tok/s")
    if step_seconds is not None:
        parts.append(f"{step_seconds:.3g} s/step")
    if eta_seconds is not None:
        parts.append(f"ETA {_duration(eta_seconds)}")
    if logs.get("nonfinite_loss"):
        parts.append("non-finite loss: update skipped")
    return " | ".join(parts)


def format_eval_line(logs: dict, step: int, max_steps: int) -> str:
    """`eval step 2/100 | llm_demo acc 0.250 | 3.1 s`: the accuracy of each evaluated dataset."""
    parts = [f"eval step {step}/{max_steps}"]
    accuracies = {k: v for k, v in logs.items() if k.endswith("/accuracy") and "/average/" not in k}
    if len(accuracies) != 1:  # the average only when it is not the one dataset's accuracy again
        accuracies.update({k: v for k, v in logs.items() if k.endswith("/average/accuracy")})
    for key, value in accuracies.items():
        parts.append(f"{key.split('/')[-2]} acc {value:.3f}")
    for key, value in logs.items():
        if key.endswith("_loss") and key.startswith("eval"):  # the plain Trainer's eval_loss
            parts.append(f"{key} {_g(value)}")
        elif key.endswith("/seconds"):
            parts.append(f"{value:.3g} s")
    return " | ".join(parts)


def format_log_line(logs: dict, step: int, max_steps: int, step_seconds: Optional[float] = None,
                    eta_seconds: Optional[float] = None) -> str:
    """The one console line of a log record: a training step, an evaluation, or the end-of-training summary."""
    if "loss" in logs:
        return format_train_line(logs, step, max_steps, step_seconds, eta_seconds)
    if "train_runtime" in logs:
        line = f"done: step {step}/{max_steps} in {_duration(logs['train_runtime'])}"
        if "train_loss" in logs:
            line += f" | mean loss {_g(logs['train_loss'])}"
        return line
    if any(k.startswith("eval") for k in logs):
        return format_eval_line(logs, step, max_steps)
    shown = ", ".join(f"{k} {_g(v) if isinstance(v, float) else v}" for k, v in logs.items() if k != "epoch")
    return f"step {step}/{max_steps} | {shown}"


class _CompactLines:
    """Shared by the two console callbacks: a clock over optimizer steps and the line of each record.

    `s/step`: the mean wall seconds of the steps since the previous line, from `on_step_begin` to `on_step_end` (the
    rollout, scoring and update; not evaluation or checkpointing between steps). ETA: the steps left times the mean
    interval between the last (up to 20) step ends, which does include evaluation and checkpoints."""

    window = 20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._step_began: Optional[float] = None
        self._unlogged_step_seconds: list[float] = []
        self._step_ends: deque = deque(maxlen=self.window + 1)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self._step_ends.clear()
        self._step_ends.append(time.perf_counter())
        self._unlogged_step_seconds.clear()
        return super().on_train_begin(args, state, control, **kwargs)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self._step_began = time.perf_counter()
        return super().on_step_begin(args, state, control, **kwargs)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        now = time.perf_counter()
        if self._step_began is not None:
            self._unlogged_step_seconds.append(now - self._step_began)
            self._step_began = None
        self._step_ends.append(now)
        return super().on_step_end(args, state, control, **kwargs)

    def line(self, logs: dict, state: Any) -> str:
        step_seconds = eta = None
        if "loss" in logs:
            if self._unlogged_step_seconds:
                step_seconds = sum(self._unlogged_step_seconds) / len(self._unlogged_step_seconds)
                self._unlogged_step_seconds.clear()
            if len(self._step_ends) > 1:
                interval = (self._step_ends[-1] - self._step_ends[0]) / (len(self._step_ends) - 1)
                eta = interval * max(state.max_steps - state.global_step, 0)
        return format_log_line(logs, state.global_step, state.max_steps, step_seconds, eta)


class CompactPrinterCallback(_CompactLines, PrinterCallback):
    """`PrinterCallback` (disable_tqdm=True) printing one compact line per record instead of the record's dict."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs:
            return
        logs.pop("total_flos", None)  # as PrinterCallback: the records after it (trainer_log.jsonl) stay as they were
        if state.is_local_process_zero:
            print(self.line(logs, state), flush=True)


class CompactProgressCallback(_CompactLines, ProgressCallback):
    """`ProgressCallback` (tqdm bar) writing one compact line per record above the bar instead of the record's dict."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero and self.training_bar is not None:
            self.training_bar.write(self.line(logs, state))


def use_compact_console(trainer: Any) -> None:
    """Swap the Trainer's console printer (`PrinterCallback`, or `ProgressCallback` with its tqdm bar) for its compact
    subclass, in the same place among the callbacks. Subclasses, so `trainer.remove_callback(PrinterCallback)` (the
    benchmarks' `quiet`) still removes them; other progress callbacks (notebooks) are left alone."""
    callbacks = trainer.callback_handler.callbacks
    for i, callback in enumerate(callbacks):
        if type(callback) is PrinterCallback:
            callbacks[i] = CompactPrinterCallback()
        elif type(callback) is ProgressCallback:
            callbacks[i] = CompactProgressCallback(max_str_len=callback.max_str_len)

