"""Coarse CPU parallelism of the rank pass: the query rows dealt over torch's threads, each thread scanning its
rows alone, its own GEMM at one thread and then its consumers on chunks still in its own core's cache.

Splitting every chunk's rows over threads instead costs a thread wake-up per chunk, about as long as the
chunk's work, and has one core read what the other core's GEMM wrote: measured at 2 threads on 1,000 x 20,000
x 256, the top-k selection took as long as at 1 thread (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TypeVar

import torch
from torch import Tensor

MIN_PART_ROWS = 64  # query rows per thread at least

T = TypeVar("T")


def map_row_parts(scan_part: Callable[[Tensor], T], rows: Tensor, device: torch.device) -> list[T]:
    """``scan_part`` over parts of ``rows``, in parallel on a CPU: rows dealt round robin over as many threads
    as torch uses (each part keeps the order of ``rows``), each thread running torch at one thread while the
    caller's thread count is restored afterwards. Elsewhere, or with few rows, one part on this thread.

    Autograd's modes are per thread: each part runs in the caller's inference and grad mode (a test loop runs
    under ``torch.inference_mode``, and a part writing into the caller's inference tensors must too)."""
    threads = torch.get_num_threads()
    n_parts = min(threads, len(rows) // MIN_PART_ROWS) if device.type == "cpu" else 1
    if n_parts <= 1:
        return [scan_part(rows)]
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def alone(part: Tensor) -> T:
        torch.set_num_threads(1)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return scan_part(part)

    try:
        return list(pool(n_parts, "scan").map(alone, [rows[t::n_parts] for t in range(n_parts)]))
    finally:
        torch.set_num_threads(threads)


@cache
def pool(workers: int, name: str) -> ThreadPoolExecutor:
    """The process's pool of ``workers`` threads for one use (``name``): separate uses never wait on each
    other's threads."""
    return ThreadPoolExecutor(workers, thread_name_prefix=f"fashion-bench-{name}")
