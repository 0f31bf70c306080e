"""``PhaseTimer``: the seconds of start-up, waiting for batches, training steps and evaluation of a run."""

from __future__ import annotations

import os
import time

from fashion_bench.timing import PhaseTimer, process_start_time


def test_process_start_is_before_now_and_after_boot():
    started = process_start_time()
    assert started <= time.time() + 0.05
    assert time.time() - started < 24 * 3600  # this test process started recently


def test_a_forked_child_starts_at_its_fork():
    read, write = os.pipe()
    time.sleep(0.3)
    pid = os.fork()
    if pid == 0:
        os.write(write, repr(process_start_time()).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_start = float(os.read(read, 64))
    assert child_start >= process_start_time() + 0.25  # the child's clock starts at the fork, not at ours
    assert abs(child_start - time.time()) < 1.0


def test_phases_add_up_to_the_run_time():
    timer = PhaseTimer()
    timer.on_fit_start(None, None)
    timer.on_train_epoch_start(None, None)
    for _ in range(3):
        time.sleep(0.02)  # the loader
        timer.on_train_batch_start(None, None, None, 0)
        time.sleep(0.03)  # the step
        timer.on_train_batch_end(None, None, None, None, 0)
    timer.on_validation_start(None, None)
    time.sleep(0.05)
    timing = timer.snapshot()  # evaluation still running: counted so far
    assert timing["evaluation_s"] >= 0.05
    timer.on_validation_end(None, None)
    timing = timer.snapshot()
    assert 0.06 <= timing["data_wait_s"] < 0.2
    assert 0.09 <= timing["train_step_s"] < 0.3
    assert timing["startup_s"] > 0
    parts = sum(v for k, v in timing.items() if k != "total_s")
    assert abs(parts - timing["total_s"]) < 0.01
