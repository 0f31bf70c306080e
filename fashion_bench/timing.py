"""Where a run's time goes: process start-up, waiting for training batches, training steps, evaluation.

``results.json`` carries these phases (``timing``), so ``make demo`` can say what each step spent its time on
and a slow run can be diagnosed without a profiler: a loader that cannot keep up shows as ``data_wait_s``, a
slow start (imports, config parsing, building the model and the data) as ``startup_s``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import lightning.pytorch as pl

_IMPORTED_AT = time.time()


def process_start_time() -> float:
    """Wall-clock time this process started (a forked child: when it was forked). Read from ``/proc`` on Linux;
    elsewhere the time this module was imported, which misses only the interpreter's own start-up.

    The process's start is in clock ticks since boot; its age is measured on the boot clock and subtracted from
    now. (Adding the ticks to ``/proc/stat``'s ``btime`` is off by up to a second: btime is whole seconds, and the
    wall clock drifts from the boot clock over a long uptime.)"""
    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, after the command name
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED_AT


class PhaseTimer(pl.Callback):
    """Accumulates the seconds of each phase of a run; ``snapshot()`` counts a phase still in progress."""

    def __init__(self) -> None:
        self.process_start = process_start_time()
        self.startup_s: float | None = None
        self.data_wait_s = 0.0
        self.train_step_s = 0.0
        self.evaluation_s = 0.0
        self._batch_ready_at: float | None = None  # when the loop last asked for a batch
        self._step_started_at: float | None = None
        self._evaluation_started_at: float | None = None

    def _started(self) -> None:
        if self.startup_s is None:
            self.startup_s = time.time() - self.process_start

    # --- training -------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batch_ready_at = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._batch_ready_at is not None:
            self.data_wait_s += now - self._batch_ready_at
        self._step_started_at = now

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._step_started_at is not None:
            self.train_step_s += now - self._step_started_at
        self._step_started_at = None
        self._batch_ready_at = now

    # --- evaluation (validation inside fit, or validate / test / predict alone) --------------------------------
    def _evaluation_start(self, *_: Any) -> None:
        self._started()
        self._evaluation_started_at = time.perf_counter()

    def _evaluation_end(self, *_: Any) -> None:
        if self._evaluation_started_at is not None:
            self.evaluation_s += time.perf_counter() - self._evaluation_started_at
        self._evaluation_started_at = None
        self._batch_ready_at = time.perf_counter()  # validation inside an epoch is not waiting for data

    on_validation_start = on_test_start = on_predict_start = _evaluation_start
    on_validation_end = on_test_end = on_predict_end = _evaluation_end

    def snapshot(self) -> dict[str, float]:
        """The phases so far, in seconds; ``other_s`` is the rest of the run's wall time (checkpoints, hooks)."""
        evaluation = self.evaluation_s
        if self._evaluation_started_at is not None:
            evaluation += time.perf_counter() - self._evaluation_started_at
        total = time.time() - self.process_start
        phases = {
            "startup_s": self.startup_s or 0.0,
            "data_wait_s": self.data_wait_s,
            "train_step_s": self.train_step_s,
            "evaluation_s": evaluation,
        }
        phases["other_s"] = max(0.0, total - sum(phases.values()))
        return {**{k: round(v, 3) for k, v in phases.items()}, "total_s": round(total, 3)}
