"""The lane scheduler behind ``make demo``: dependencies respected, at most ``lanes`` at once, the cores shared,
a failure stops new starts."""

from __future__ import annotations

import pytest

from fashion_bench.lanes import run_in_lanes, threads_for


class FakeJob:
    """Finishes after ``ticks`` polls with ``code``."""

    def __init__(self, ticks: int, code: int = 0) -> None:
        self.ticks, self.code = ticks, code

    def poll(self) -> int | None:
        self.ticks -= 1
        return self.code if self.ticks <= 0 else None


def run(after, ticks, codes=None, lanes=2, cores=2, done=None):
    started, finished, running, peak = [], [], set(), [0]
    codes = codes or [0] * len(after)

    def start(job: int, threads: int) -> FakeJob:
        assert after[job] <= {j for j, code in finished if code == 0} | (done or set()), f"job {job} started early"
        started.append((job, threads))
        running.add(job)
        peak[0] = max(peak[0], len(running))
        return FakeJob(ticks[job], codes[job])

    def on_finish(job: int, code: int, seconds: float) -> None:
        running.discard(job)
        finished.append((job, code))

    code = run_in_lanes(after, start, lanes=lanes, cores=cores, done=done, on_finish=on_finish, poll_s=0)
    return code, started, finished, peak[0]


def test_dependencies_and_lanes_are_respected():
    # 0 alone first (everything needs it), then 1 / 2 / 4 in parallel; 3 after 1
    after = [set(), {0}, {0}, {0, 1}, {0}]
    code, started, finished, peak = run(after, ticks=[2, 5, 1, 1, 3])
    assert code == 0 and peak == 2
    assert [job for job, _ in started][0] == 0 and started[0][1] == 2  # alone: both cores
    assert sorted(job for job, _ in finished) == [0, 1, 2, 3, 4]
    assert all(threads == 1 for job, threads in started[1:3])  # two at once: a core each


def test_done_jobs_are_skipped_and_count_as_finished():
    code, started, _, _ = run([set(), {0}], ticks=[1, 1], done={0})
    assert code == 0 and [job for job, _ in started] == [1]


def test_a_failure_stops_new_starts_and_returns_its_code():
    after = [set(), {0}, {0}, {1}]
    code, started, finished, _ = run(after, ticks=[1, 1, 4, 1], codes=[0, 3, 0, 0])
    assert code == 3
    assert 3 not in [job for job, _ in started]  # its dependency failed
    assert (2, 0) in finished  # the running job was waited for


def test_a_cycle_is_an_error_naming_the_jobs():
    with pytest.raises(RuntimeError, match=r"never finish.*\{0: \[1\], 1: \[0\]\}"):
        run([{1}, {0}], ticks=[1, 1])


def test_threads_share_the_cores():
    assert threads_for(cores=2, lanes=2, busy=1) == 2
    assert threads_for(cores=2, lanes=2, busy=5) == 1
    assert threads_for(cores=16, lanes=2, busy=2) == 8
    assert threads_for(cores=1, lanes=2, busy=2) == 1
