"""The top k of the rank pass rescores only the candidates that can join the top k (the float32 top k and
those within twice the error band below it), and the float64 pair kernel scores four pairs at a time: both
checked against brute force on unseen inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_retrieval_topk import brute_topk, topk_per_category

import fashion_bench.retrieval.index as index_mod
import fashion_bench.retrieval.kernels as kernels_mod
from fashion_bench.retrieval.index import Csr, Embeddings, Exclusions
from fashion_bench.retrieval.metrics import rank_with_topk


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "duplicated"])
def test_rank_pass_topk_matches_brute_force(threads, ties, monkeypatch):
    monkeypatch.setattr(index_mod, "SCORE_BLOCK", 4000)  # many gallery blocks and row chunks
    monkeypatch.setattr(index_mod, "GALLERY_ALIGN", 8)
    rng = np.random.default_rng(300 + ties)
    n_q, n_g, k = 70, 900, 12
    g = rng.standard_normal((n_g, 16)).astype(np.float32)
    q = rng.standard_normal((n_q, 16)).astype(np.float32)
    if ties:  # small integers (exact dot products, so brute force is exact) and duplicated items
        g, q = np.round(g * 1.5), np.round(q * 1.5)
        g[rng.choice(n_g, 300)] = g[rng.choice(n_g, 300)]
    allowed = rng.random((3, n_g)) < 0.8  # per-category galleries
    allowed[2, 8:] = False  # category 2: at most 8 items, fewer than k
    idx, scores, want = topk_per_category(q, g, rng, allowed, 5, 2, k)
    group = np.arange(n_q) % 3
    assert torch.equal(idx, torch.from_numpy(want))
    full = q.astype(np.float64) @ g.astype(np.float64).T
    valid = want >= 0
    assert np.allclose(scores.numpy()[valid], np.take_along_axis(full, np.where(valid, want, 0), 1)[valid],
                       rtol=0, atol=1e-12)
    assert torch.isinf(scores[~torch.from_numpy(valid)]).all()
    assert (valid[group == 2].sum(1) <= 8).all()


def test_rank_pass_equals_exact_backend_with_float_duplicates(monkeypatch):
    """Float (not integer) duplicates: brute force by GEMM may split their ties, so compare bit for bit with
    the exact backend, which scores every pair with the same kernel."""
    monkeypatch.setattr(index_mod, "SCORE_BLOCK", 4000)
    monkeypatch.setattr(index_mod, "GALLERY_ALIGN", 8)
    rng = np.random.default_rng(5)
    n_q, n_g, k = 60, 800, 12
    g = rng.standard_normal((n_g, 16)).astype(np.float32)
    q = rng.standard_normal((n_q, 16)).astype(np.float32)
    g[rng.choice(n_g, 300)] = g[rng.choice(n_g, 300)]
    q[::4] = g[rng.choice(n_g, len(q[::4]))]
    exclude = [rng.choice(n_g, 5, replace=False).tolist() for _ in range(n_q)]
    positives = [rng.choice(n_g, 2, replace=False).tolist() for _ in range(n_q)]
    query, gallery = Embeddings.prepare(q, "q"), Embeddings.prepare(g, "g")
    exclusions = Exclusions(Csr.from_lists(exclude, n_q, n_g, "exclude"))
    pos = Csr.from_lists(positives, n_q, n_g, "positives")
    fast = rank_with_topk(query, gallery, pos, exclusions, k, "fast")
    exact = rank_with_topk(query, gallery, pos, exclusions, k, "exact")
    assert torch.equal(fast[0].idx, exact[0].idx)
    assert torch.equal(fast[1], exact[1]) and torch.equal(fast[2], exact[2])


def test_rank_pass_certifies_without_fallback_when_no_ties(monkeypatch):
    """Distinct scores: every row certified from the rescored float32 top k alone (no exact fallback)."""
    rng = np.random.default_rng(11)
    q, g = (rng.standard_normal((40, 32)).astype(np.float32) for _ in range(2))
    g = np.concatenate([g, rng.standard_normal((2000, 32)).astype(np.float32)])
    fallback = []
    monkeypatch.setattr(index_mod, "exact_orders", lambda *args: fallback.append(args) or iter(()))
    import fashion_bench.retrieval.metrics as metrics_mod

    monkeypatch.setattr(metrics_mod, "fill_exact_topk", lambda q_, g_, e_, rows, *a: fallback.append(rows))
    query, gallery = Embeddings.prepare(q, "q"), Embeddings.prepare(g, "g")
    pos = Csr.from_lists([[i] for i in range(40)], 40, len(g), "positives")
    _, idx, _ = rank_with_topk(query, gallery, pos, Exclusions(Csr.from_lists([[]] * 40, 40, len(g), "e")), 20, "fast")
    assert sum(len(rows) for rows in fallback) == 0
    assert torch.equal(idx, torch.from_numpy(brute_topk(q, g, [[]] * 40, 20)))


def reference_pair(qr: np.ndarray, gc: np.ndarray) -> float:
    """Four chains in the fixed order, one pair at a time."""
    acc = [0.0] * 4
    dd = len(qr) - len(qr) % 4
    for d in range(0, dd, 4):
        for t in range(4):
            acc[t] += float(qr[d + t]) * float(gc[d + t])
    for d in range(dd, len(qr)):
        acc[0] += float(qr[d]) * float(gc[d])
    return (acc[0] + acc[1]) + (acc[2] + acc[3])


@pytest.mark.parametrize("dim", [1, 3, 4, 7, 33])
@pytest.mark.parametrize("shape", [(1, 1), (9, 1), (5, 3), (0, 2), (7, 6)])
def test_pair_kernel_is_bit_identical_to_one_pair_at_a_time(dim, shape):
    rng = np.random.default_rng(dim * 100 + shape[0])
    q = rng.standard_normal((6, dim)).astype(np.float32)
    g = rng.standard_normal((11, dim))
    g[3] = g[5]  # equal items score equal wherever they sit
    rows = rng.integers(0, 6, shape[0])
    cols = rng.integers(-2, 11, shape)
    out = kernels_mod.pair_scores(torch.from_numpy(q), torch.from_numpy(g), torch.from_numpy(rows),
                                  torch.from_numpy(cols)).numpy()
    for i in range(shape[0]):
        for m in range(shape[1]):
            want = -np.inf if cols[i, m] < 0 else reference_pair(q[rows[i]], g[cols[i, m]])
            assert out[i, m] == want
