"""evaluate() against two independent oracles: a brute-force sort and torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fashion_bench.retrieval.index as index_mod
import fashion_bench.retrieval.metrics as metrics_mod
from fashion_bench.retrieval import evaluate


def oracle(q, g, positives, exclude, ks):
    """Definition by brute force: float64 scores, full lexsort per query on (-score, index)."""
    scores = np.asarray(q, np.float64) @ np.asarray(g, np.float64).T
    firsts, aps = [], []
    for i, row in enumerate(scores):
        kept = np.array([j for j in range(len(row)) if j not in set(exclude[i])], dtype=np.int64)
        order = kept[np.lexsort((kept, -row[kept]))]
        pos = set(positives[i]) - set(exclude[i])
        if not pos:
            continue
        ranks = [r + 1 for r, item in enumerate(order) if item in pos]
        firsts.append(ranks[0])
        aps.append(np.mean([(n + 1) / r for n, r in enumerate(ranks)]))
    firsts = np.array(firsts)
    out = {f"R@{k}": float(np.mean(firsts <= k)) for k in ks}
    out |= {"mAP": float(np.mean(aps)), "rank1": float(np.mean(firsts <= 1))}
    return out | {"num_queries": len(scores), "num_valid_queries": len(aps)}


def tied_case(seed, n_q, n_g, dim=6, levels=2):
    """Quantised embeddings (dot products exact in float32) with duplicated gallery rows: many exact ties."""
    rng = np.random.default_rng(seed)
    g = rng.integers(-levels, levels + 1, (n_g, dim)).astype(np.float32) / 4
    dup = rng.choice(n_g, n_g // 4, replace=False)
    g[dup] = g[rng.choice(n_g, len(dup))]
    q = rng.integers(-levels, levels + 1, (n_q, dim)).astype(np.float32) / 4
    positives = [rng.choice(n_g, rng.integers(0, 6), replace=False).tolist() for _ in range(n_q)]
    exclude = [rng.choice(n_g, rng.integers(0, 4), replace=False).tolist() for _ in range(n_q)]
    for i in range(0, n_q, 5):  # some queries lose every positive to the exclusions
        exclude[i] = exclude[i] + positives[i]
    return q, g, positives, exclude


@pytest.fixture(params=["exact", "fast-sparse", "fast-dense"])
def backend(request, monkeypatch):
    """Both backends, and the fast one with each counting strategy forced, over tiny blocks."""
    monkeypatch.setattr(index_mod, "SCORE_BLOCK", 600)
    monkeypatch.setattr(index_mod, "GALLERY_ALIGN", 8)
    monkeypatch.setattr(index_mod, "EXACT_BLOCK", 700)
    monkeypatch.setattr(metrics_mod, "QUERY_BLOCK", 16)
    if request.param == "fast-sparse":
        monkeypatch.setattr(metrics_mod, "DENSE_BREAK", 0)
    if request.param == "fast-dense":
        monkeypatch.setattr(metrics_mod, "DENSE_BREAK", 10**12)
    return request.param.split("-")[0]


@pytest.mark.parametrize("seed,n_q,n_g", [(0, 40, 30), (1, 60, 120), (2, 25, 7)])
def test_matches_brute_force_with_ties(backend, seed, n_q, n_g):
    q, g, positives, exclude = tied_case(seed, n_q, n_g)
    ks = (1, 5, 10, 50)  # 50 > gallery size
    got = evaluate(torch.from_numpy(q), g, positives, exclude=exclude, ks=ks, backend=backend)
    want = oracle(q, g, positives, exclude, ks)
    assert got.keys() == want.keys()
    assert got["num_queries"] == want["num_queries"] and got["num_valid_queries"] == want["num_valid_queries"]
    assert want["num_valid_queries"] < n_q
    for key in ("R@1", "R@5", "R@10", "R@50", "mAP", "rank1"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key


def test_matches_brute_force_float_data(backend):
    rng = np.random.default_rng(3)
    q, g = rng.standard_normal((30, 16)), rng.standard_normal((200, 16))  # float64 input kept exact
    positives = [rng.choice(200, rng.integers(1, 8), replace=False).tolist() for _ in range(30)]
    exclude = [rng.choice(200, 2, replace=False).tolist() for _ in range(30)]
    got = evaluate(q, g, positives, exclude=exclude, ks=(1, 3, 20), backend=backend)
    want = oracle(q, g, positives, exclude, (1, 3, 20))
    for key in ("R@1", "R@3", "R@20", "mAP", "rank1"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_no_valid_query_gives_nan_and_counts():
    got = evaluate(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), [[0], []], exclude=[[0], []])
    assert got["num_queries"] == 2 and got["num_valid_queries"] == 0
    assert np.isnan(got["mAP"]) and np.isnan(got["R@1"])


def test_duplicate_indices_and_positive_excluded():
    g = np.array([[3.0], [2.0], [1.0]], np.float32)
    # positive 2 listed twice counts once; positive 0 is excluded, so 2 ranks second behind item 1
    got = evaluate(np.ones((1, 1), np.float32), g, [[2, 2, 0]], exclude=[[0]], ks=(1, 2))
    assert got == {"R@1": 0.0, "R@2": 1.0, "mAP": 0.5, "rank1": 0.0, "num_queries": 1, "num_valid_queries": 1}


def test_matches_torchmetrics_on_tie_free_scores():
    from fashion_bench._env import import_torchvision

    import_torchvision()  # torchmetrics imports torchvision, whose C extension may not load here
    from torchmetrics.retrieval import RetrievalHitRate, RetrievalMAP

    rng = np.random.default_rng(4)
    n_q, n_g = 30, 100
    # identity gallery: the scores are the query rows, a permutation each, so no two are close
    g = np.eye(n_g, dtype=np.float32)
    q = rng.permuted(np.tile(np.arange(n_g, dtype=np.float32), (n_q, 1)), axis=1) / n_g
    positives = [rng.choice(n_g, rng.integers(0, 5), replace=False).tolist() for _ in range(n_q)]
    exclude = [rng.choice(n_g, 3, replace=False).tolist() for _ in range(n_q)]
    preds = torch.from_numpy(q) + 1.0  # torchmetrics drops scores <= 0 from AP: shift them positive
    target = torch.zeros(n_q, n_g, dtype=torch.bool)
    keep = torch.ones(n_q, n_g, dtype=torch.bool)
    for i in range(n_q):
        target[i, positives[i]] = True
        keep[i, exclude[i]] = False
    indexes = torch.arange(n_q)[:, None].expand(n_q, n_g)
    flat = (preds[keep], target[keep], indexes[keep])
    got = evaluate(q, g, positives, exclude=exclude, ks=(1, 10, 50))
    for k in (1, 10, 50):
        ref = RetrievalHitRate(top_k=k, empty_target_action="skip")(*flat).item()
        assert got[f"R@{k}"] == pytest.approx(ref, abs=1e-6)
    assert got["mAP"] == pytest.approx(RetrievalMAP(empty_target_action="skip")(*flat).item(), abs=1e-6)


def test_fast_equals_exact_on_larger_inputs():
    rng = np.random.default_rng(5)
    n_q, n_g, dim = 300, 5000, 32
    g = rng.standard_normal((n_g, dim)).astype(np.float32)
    g[rng.choice(n_g, 500)] = g[rng.choice(n_g, 500)]  # duplicated rows: exact ties between items
    positives = [rng.choice(n_g, rng.integers(1, 6), replace=False).tolist() for _ in range(n_q)]
    q = np.stack([g[p].mean(0) for p in positives]) + 0.5 * rng.standard_normal((n_q, dim)).astype(np.float32)
    exclude = [rng.choice(n_g, 5, replace=False).tolist() for _ in range(n_q)]
    fast = evaluate(q, g, positives, exclude=exclude, backend="fast")
    exact = evaluate(q, g, positives, exclude=exclude, backend="exact")
    assert fast == pytest.approx(exact, abs=1e-12)
    assert 0.05 < fast["mAP"] < 0.95  # neither trivial nor hopeless
