"""Top-k lists: faiss candidates with exact tie and boundary resolution equal the exact sorted path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fashion_bench.retrieval.index as index_mod
from fashion_bench.retrieval.index import Csr, Embeddings, Exclusions, topk
from fashion_bench.retrieval.metrics import rank_with_topk


def brute_topk(q, g, exclude, k):
    scores = np.asarray(q, np.float64) @ np.asarray(g, np.float64).T
    out = np.full((len(q), k), -1)
    for i, row in enumerate(scores):
        kept = np.array([j for j in range(len(row)) if j not in set(exclude[i])], dtype=np.int64)
        order = kept[np.lexsort((kept, -row[kept]))][:k]
        out[i, : len(order)] = order
    return out


def topk_per_category(q, g, rng, allowed, n_exclude, n_positives, k):
    """``rank_with_topk``'s fast top k on per-category galleries (query i in category i % 3, ``allowed`` [3, G])
    with random exclusions and positives, and the brute-force top k of the same hidden items."""
    n_q, n_g = len(q), len(g)
    group = np.arange(n_q) % 3
    exclude = [rng.choice(n_g, n_exclude, replace=False).tolist() for _ in range(n_q)]
    positives = [rng.choice(np.flatnonzero(allowed[group[i]]), n_positives, replace=False).tolist() for i in range(n_q)]
    exclusions = Exclusions(Csr.from_lists(exclude, n_q, n_g, "exclude"), torch.from_numpy(allowed),
                            torch.from_numpy(group))
    pos = Csr.from_lists(positives, n_q, n_g, "positives")
    _, idx, scores = rank_with_topk(Embeddings.prepare(q, "q"), Embeddings.prepare(g, "g"), pos, exclusions, k, "fast")
    hidden = [sorted({*exclude[i], *np.flatnonzero(~allowed[group[i]]).tolist()}) for i in range(n_q)]
    return idx, scores, brute_topk(q, g, hidden, k)


def run(q, g, exclude, k, backend):
    query, gallery = Embeddings.prepare(q, "query_emb"), Embeddings.prepare(g, "gallery_emb")
    lists = Csr.from_lists(exclude, len(q), len(g), "exclude")
    return topk(query, gallery, k, Exclusions(lists), backend)


@pytest.mark.parametrize("backend", ["exact", "fast"])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_topk_with_ties_matches_brute_force(backend, k):
    rng = np.random.default_rng(k)
    g = rng.integers(-1, 2, (30, 4)).astype(np.float32)  # 81 distinct rows at most: heavy ties
    q = rng.integers(-1, 2, (20, 4)).astype(np.float32)
    exclude = [rng.choice(30, rng.integers(0, 5), replace=False).tolist() for _ in range(20)]
    idx, scores = run(q, g, exclude, k, backend)
    want = brute_topk(q, g, exclude, k)
    assert torch.equal(idx, torch.from_numpy(want))
    full = q.astype(np.float64) @ g.astype(np.float64).T
    valid = want >= 0
    assert np.array_equal(scores.numpy()[valid], np.take_along_axis(full, np.where(valid, want, 0), 1)[valid])
    assert torch.isinf(scores[~torch.from_numpy(valid)]).all()


def test_faiss_topk_equals_exact_on_larger_inputs(monkeypatch):
    rng = np.random.default_rng(7)
    g = rng.standard_normal((5000, 32)).astype(np.float32)
    g[rng.choice(5000, 400)] = g[rng.choice(5000, 400)]
    q = rng.standard_normal((300, 32)).astype(np.float32)
    exclude = [rng.choice(5000, 10, replace=False).tolist() for _ in range(300)]
    exact = run(q, g, exclude, 50, "exact")
    fallback = []
    original = index_mod.exact_orders

    def spy(query, gallery, exclusions, rows):
        fallback.append(len(rows))
        return original(query, gallery, exclusions, rows)

    monkeypatch.setattr(index_mod, "exact_orders", spy)
    fast = run(q, g, exclude, 50, "fast")
    assert fallback == [0]  # every row certified from the faiss candidates alone
    assert torch.equal(fast[0], exact[0]) and torch.equal(fast[1], exact[1])


def test_faiss_topk_falls_back_when_ties_cross_the_boundary(monkeypatch):
    g = np.ones((100, 3), np.float32)  # every item ties: the top 5 are items 0..4, excluded ones skipped
    q = np.ones((2, 3), np.float32)
    monkeypatch.setattr(index_mod, "TOPK_MARGIN", 1)
    idx, _ = run(q, g, [[1, 3], []], 5, "fast")
    assert idx.tolist() == [[0, 2, 4, 5, 6], [0, 1, 2, 3, 4]]
