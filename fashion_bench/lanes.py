"""Run jobs that depend on each other on a few parallel lanes, each with its share of the CPU cores.

Why: the demo's models are tiny, and a tiny model's training step does not keep two cores busy with two
threads (intra-op parallelism has too little work per op). Two independent steps at one thread each do more
work per second than the same steps one after the other at two threads (measured in docs/benchmarks.md).
A job starts once every job it depends on has finished; a job that starts while nothing else can run gets
every core.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol


class Running(Protocol):
    def poll(self) -> int | None:
        """The exit code once finished, else None."""


def threads_for(cores: int, lanes: int, busy: int) -> int:
    """Threads of a job started while ``busy`` jobs (itself included) run or could run at once."""
    return max(1, cores // max(1, min(lanes, busy)))


def run_in_lanes(
    after: Sequence[set[int]],
    start: Callable[[int, int], Running],
    *,
    lanes: int,
    cores: int,
    done: set[int] | None = None,
    on_finish: Callable[[int, int, float], None] = lambda job, code, seconds: None,
    poll_s: float = 0.2,
) -> int:
    """Run jobs ``0 .. len(after) - 1``; job ``i`` starts once every job in ``after[i]`` has finished with exit
    code 0 (jobs in ``done`` count as finished), in index order among the ready ones, at most ``lanes`` at once.
    ``start(job, threads)`` launches one. After a failure nothing new starts; the running jobs are waited for.
    Returns the first non-zero exit code, else 0."""
    if lanes < 1 or cores < 1:
        raise ValueError(f"lanes and cores must be at least 1, got lanes={lanes}, cores={cores}")
    finished = set(done or ())
    pending = [job for job in range(len(after)) if job not in finished]
    unknown = {dep for job in pending for dep in after[job]} - set(range(len(after)))
    if unknown:
        raise ValueError(f"dependencies on jobs that do not exist: {sorted(unknown)}")
    running: dict[int, tuple[Running, float]] = {}
    failure = 0
    while running or (pending and not failure):
        ready = [job for job in pending if after[job] <= finished] if not failure else []
        if not ready and not running:
            blocked = {job: sorted(after[job] - finished) for job in pending}
            raise RuntimeError(f"jobs wait for jobs that never finish (job: unfinished dependencies): {blocked}")
        while ready and len(running) < lanes:
            job = ready.pop(0)
            pending.remove(job)
            running[job] = (start(job, threads_for(cores, lanes, len(running) + 1 + len(ready))), time.perf_counter())
        time.sleep(poll_s)
        for job, (child, started) in list(running.items()):
            code = child.poll()
            if code is None:
                continue
            del running[job]
            on_finish(job, code, time.perf_counter() - started)
            if code == 0:
                finished.add(job)
            elif not failure:
                failure = code
    return failure
