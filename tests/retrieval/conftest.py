"""Shared fixtures of the retrieval tests."""

from __future__ import annotations

import pytest
import torch

import fashion_bench.retrieval.kernels as kernels_mod


@pytest.fixture(params=["default", "small-buffers-2-threads"])
def settings(request, monkeypatch):
    """The CPU kernels as shipped, and with a tiny top-k buffer, 2-item segments and rows split over 2 threads
    (every compaction, segment and threading path taken on small inputs)."""
    if request.param == "small-buffers-2-threads":
        monkeypatch.setattr(kernels_mod, "TOP_BUFFER", 1)
        monkeypatch.setattr(kernels_mod, "TOP_SEGMENT", 2)
        monkeypatch.setattr(kernels_mod, "MIN_ROWS", 3)
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        request.addfinalizer(lambda: torch.set_num_threads(threads))
    return request.param
