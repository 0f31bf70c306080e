"""Every counting and top-k path against the brute-force oracle on unseen inputs with exact ties and
exclusions: the CPU kernel (one thread, each chunk's rows split over threads with the band capacity
overflowing, and the query rows dealt over threads that scan alone), and the torch path that CUDA embeddings
take, run here on CPU tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_retrieval_regimes import brute_ranks, case

import fashion_bench.retrieval.index as index_mod
import fashion_bench.retrieval.kernels as kernels_mod
import fashion_bench.retrieval.metrics as metrics_mod
import fashion_bench.retrieval.threads as threads_mod
from fashion_bench.retrieval.index import Csr, Embeddings, Exclusions
from fashion_bench.retrieval.metrics import rank_with_topk


@pytest.fixture(params=["kernel", "kernel-threads-overflow", "kernel-row-parts", "torch"])
def path(request, monkeypatch):
    monkeypatch.setattr(index_mod, "SCORE_BLOCK", 5000)
    monkeypatch.setattr(index_mod, "GALLERY_ALIGN", 8)
    if request.param.startswith("kernel-"):
        if request.param == "kernel-threads-overflow":  # each chunk's rows split over the threads
            monkeypatch.setattr(kernels_mod, "BAND_CAP", 1)
            monkeypatch.setattr(kernels_mod, "MIN_ROWS", 3)
            monkeypatch.setattr(threads_mod, "MIN_PART_ROWS", 10**9)
        else:  # the query rows dealt over the threads, each scanning its rows alone
            monkeypatch.setattr(threads_mod, "MIN_PART_ROWS", 8)
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        request.addfinalizer(lambda: torch.set_num_threads(threads))
    if request.param == "torch":
        monkeypatch.setattr(metrics_mod, "CPU_KERNELS", False)
        monkeypatch.setattr(metrics_mod, "CPU_TOPK", "torch")
    return request.param


@pytest.mark.parametrize("inference", [False, True], ids=["grad-mode", "inference-mode"])  # a test loop: inference
@pytest.mark.parametrize("strong", [True, False], ids=["strong", "weak"])
def test_ranks_and_topk_on_unseen_inputs(path, strong, inference):
    n_q, n_g, k = 90, 700, 15
    q, g, positives = case(1000 + strong, n_q, n_g, 20, strong, duplicates=True)
    rng = np.random.default_rng(2000 + strong)
    exclude = [rng.choice(n_g, 6, replace=False).tolist() + positives[i][1:2] * (i % 3 == 0) for i in range(n_q)]
    allowed = np.ones((n_q, n_g), bool)
    for i, row in enumerate(exclude):
        allowed[i, row] = False
    query, gallery = Embeddings.prepare(q, "q"), Embeddings.prepare(g, "g")
    pos = Csr.from_lists(positives, n_q, n_g, "positives")
    exclusions = Exclusions(Csr.from_lists(exclude, n_q, n_g, "exclude"))
    with torch.inference_mode(inference):
        ranks, idx, scores = rank_with_topk(query, gallery, pos, exclusions, k, "fast")
    orders, want = brute_ranks(q, g, positives, allowed)
    assert [ranks.idx[ranks.ptr[i] : ranks.ptr[i + 1]].tolist() for i in range(n_q)] == want
    assert idx.tolist() == [order[:k].tolist() for order in orders]
    full = np.asarray(q, np.float64) @ np.asarray(g, np.float64).T
    assert np.allclose(scores.numpy(), np.take_along_axis(full, idx.numpy(), 1), rtol=0, atol=1e-12)
