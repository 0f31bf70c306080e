"""The query rows dealt over threads (threads.py): every row once, each part in the caller's order, torch at one
thread inside a part and the caller's thread count back afterwards, one part where splitting cannot pay."""

from __future__ import annotations

import threading

import pytest
import torch

import fashion_bench.retrieval.threads as threads_mod
from fashion_bench.retrieval.threads import map_row_parts


@pytest.fixture
def two_threads(request):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    request.addfinalizer(lambda: torch.set_num_threads(threads))


def seen(part: torch.Tensor) -> tuple[list[int], int, str]:
    return part.tolist(), torch.get_num_threads(), threading.current_thread().name


def test_rows_dealt_over_threads_alone(two_threads):
    rows = torch.arange(300).flip(0)
    parts = map_row_parts(seen, rows, torch.device("cpu"))
    assert [p[0] for p in parts] == [rows[0::2].tolist(), rows[1::2].tolist()]
    assert {p[1] for p in parts} == {1}
    assert all(p[2].startswith("fashion-bench-scan") for p in parts)
    assert torch.get_num_threads() == 2


def test_one_part_on_the_caller_thread(two_threads, monkeypatch):
    few = torch.arange(2 * threads_mod.MIN_PART_ROWS - 1)
    assert map_row_parts(seen, few, torch.device("cpu")) == [(few.tolist(), 2, threading.current_thread().name)]
    torch.set_num_threads(1)
    many = torch.arange(1000)
    assert map_row_parts(seen, many, torch.device("cpu")) == [(many.tolist(), 1, threading.current_thread().name)]
    torch.set_num_threads(2)
    assert map_row_parts(seen, many, torch.device("meta")) == [(many.tolist(), 2, threading.current_thread().name)]


def test_thread_count_restored_when_a_part_fails(two_threads):
    def fail(part: torch.Tensor) -> None:
        raise RuntimeError(f"part of {len(part)} rows failed")

    with pytest.raises(RuntimeError, match="part of 150 rows failed"):
        map_row_parts(fail, torch.arange(300), torch.device("cpu"))
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("inference", [True, False])
def test_parts_run_in_the_callers_autograd_mode(two_threads, inference):
    """Autograd's modes are per thread: under ``torch.inference_mode`` (a Lightning test loop) each part must be
    too, or its in-place writes into the caller's inference tensors fail."""
    with torch.inference_mode(inference):
        out = torch.zeros(300, dtype=torch.long)

        def write(part: torch.Tensor) -> tuple[bool, bool]:
            out[part] = part
            return torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        modes = map_row_parts(write, torch.arange(300), torch.device("cpu"))
    assert len(modes) == 2 and set(modes) == {(inference, not inference)}
    assert torch.equal(out, torch.arange(300))
    with torch.no_grad():
        assert set(map_row_parts(lambda part: torch.is_grad_enabled(), torch.arange(300), torch.device("cpu"))) == {False}
