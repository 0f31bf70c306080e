"""The fast engine against a brute-force oracle on fresh random inputs, in every regime the benchmark times:
strong and weak embeddings, exact ties (duplicated gallery rows), exclusions, per-category galleries, CIRR
subsets, and the exact top-k lists from the same pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fashion_bench.retrieval.index as index_mod
import fashion_bench.retrieval.metrics as metrics_mod
from fashion_bench.retrieval import EvalInputs, Protocol, run_protocol
from fashion_bench.retrieval.index import Csr, Embeddings, Exclusions
from fashion_bench.retrieval.metrics import rank_with_topk


def brute_ranks(q, g, positives, allowed):
    """Per query: the gallery order (float64, ties to the lower index) over its allowed items, and the
    1-based ranks of its allowed positives in it."""
    scores = np.asarray(q, np.float64) @ np.asarray(g, np.float64).T
    orders, ranks = [], []
    for i, row in enumerate(scores):
        kept = np.flatnonzero(allowed[i])
        order = kept[np.lexsort((kept, -row[kept]))]
        where = {item: r + 1 for r, item in enumerate(order)}
        orders.append(order)
        ranks.append(sorted(where[p] for p in positives[i] if allowed[i, p]))
    return orders, ranks


def metrics_from_ranks(ranks, ks):
    valid = [r for r in ranks if r]
    out = {f"R@{k}": float(np.mean([r[0] <= k for r in valid])) for k in ks}
    out["mAP"] = float(np.mean([np.mean([(n + 1) / x for n, x in enumerate(r)]) for r in valid]))
    return out


def case(seed, n_q, n_g, dim, strong, duplicates):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n_g, dim)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    positives = [rng.choice(n_g, rng.integers(1, 6), replace=False).tolist() for _ in range(n_q)]
    if duplicates:  # copies of positives and of other items: exact ties at and around the positives
        targets = rng.choice(n_g, n_g // 4, replace=False)
        sources = np.concatenate([[p[0] for p in positives], rng.choice(n_g, n_g)])[: len(targets)]
        g[targets] = g[sources]
    q = rng.standard_normal((n_q, dim)).astype(np.float32)
    if strong:
        q = q * 0.3 + np.stack([g[p].sum(0) for p in positives])
    return q, g, positives


@pytest.fixture(params=["default", "small-blocks"])
def blocks(request, monkeypatch):
    """Default blocks, and blocks small enough that queries, gallery and chunks all split unevenly."""
    if request.param == "small-blocks":
        monkeypatch.setattr(index_mod, "SCORE_BLOCK", 900)
        monkeypatch.setattr(index_mod, "CHUNK_BLOCK", 100)
        monkeypatch.setattr(index_mod, "GALLERY_ALIGN", 8)
        monkeypatch.setattr(metrics_mod, "QUERY_BLOCK", 23)


RULES = ("none", "exclusions", "categories")


@pytest.mark.parametrize("strong", [True, False], ids=["strong", "weak"])
@pytest.mark.parametrize("duplicates", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("rules", RULES)
def test_ranks_and_topk_match_brute_force(blocks, strong, duplicates, rules):
    seed = 100 * strong + 10 * duplicates + RULES.index(rules)
    n_q, n_g, k = 70, 600, 20
    q, g, positives = case(seed, n_q, n_g, 24, strong, duplicates)
    rng = np.random.default_rng(seed + 1)
    allowed = np.ones((n_q, n_g), bool)
    exclude = [[] for _ in range(n_q)]
    group = mask = None
    if rules == "exclusions":
        exclude = [rng.choice(n_g, 8, replace=False).tolist() + positives[i][:1] * (i % 4 == 0) for i in range(n_q)]
        for i, row in enumerate(exclude):
            allowed[i, row] = False
    if rules == "categories":
        gallery_cat, group = rng.integers(0, 3, n_g), rng.integers(0, 3, n_q)
        mask = np.stack([gallery_cat == c for c in range(3)])
        allowed = mask[group]
    query, gallery = Embeddings.prepare(torch.from_numpy(q), "q"), Embeddings.prepare(g, "g")
    pos = Csr.from_lists(positives, n_q, n_g, "positives")
    lists = Csr.from_lists(exclude, n_q, n_g, "exclude")
    exclusions = Exclusions(lists) if mask is None else Exclusions(lists, torch.from_numpy(mask), torch.from_numpy(group))
    ranks, idx, scores = rank_with_topk(query, gallery, pos, exclusions, k, "fast")
    orders, want = brute_ranks(q, g, positives, allowed)
    got = [ranks.idx[ranks.ptr[i] : ranks.ptr[i + 1]].tolist() for i in range(n_q)]
    assert got == want
    for i, order in enumerate(orders):
        top = order[:k].tolist()
        assert idx[i].tolist() == top + [-1] * (k - len(top))
        exact = np.asarray(q[i], np.float64) @ np.asarray(g[top], np.float64).T
        assert np.allclose(scores[i, : len(top)].numpy(), exact, rtol=0, atol=1e-12)
    ok = metrics_from_ranks(want, (1, 5, 10))
    assert ok["mAP"] == pytest.approx(metrics_mod.summarise(ranks, (1, 5, 10))["mAP"], abs=1e-6)
    if strong and rules == "none":
        assert ok["R@10"] > 0.5  # the regimes are what they claim
    if not strong:
        assert ok["R@10"] < 0.3


@pytest.mark.parametrize("duplicates", [False, True], ids=["distinct", "ties"])
def test_protocol_with_categories_and_cirr_subsets(duplicates):
    n_q, n_g = 50, 400
    q, g, positives = case(7 + duplicates, n_q, n_g, 16, True, duplicates)
    rng = np.random.default_rng(9)
    subset = [sorted({*p, *rng.choice(n_g, 6).tolist()}) for p in positives]
    refs = rng.integers(-1, n_g, n_q).tolist()
    q_cat, g_cat = rng.integers(0, 2, n_q), rng.integers(0, 2, n_g)
    inputs = EvalInputs(torch.from_numpy(q), torch.from_numpy(g), [str(i) for i in range(n_q)],
                        [str(i) for i in range(n_g)], positives, subset=subset, query_image_index=refs,
                        query_category=[str(c) for c in q_cat], gallery_category=[str(c) for c in g_cat])
    protocol = Protocol("regimes", "cir", ks=(1, 5, 10), exclude_reference=True, subset_ks=(1, 2),
                        category_gallery=True)
    got = run_protocol(protocol, inputs, top_n=10).metrics
    allowed = q_cat[:, None] == g_cat[None, :]
    allowed[np.arange(n_q), refs] &= np.array(refs) < 0
    want = metrics_from_ranks(brute_ranks(q, g, positives, allowed)[1], (1, 5, 10))
    subset_allowed = np.zeros((n_q, n_g), bool)  # the subset, after the reference and the category rule
    for i, members in enumerate(subset):
        subset_allowed[i, members] = allowed[i, members]
    sub = metrics_from_ranks(brute_ranks(q, g, positives, subset_allowed)[1], (1, 2))
    for key in ("R@1", "R@5", "R@10", "mAP"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    for kk in (1, 2):
        assert got[f"Rsubset@{kk}"] == pytest.approx(sub[f"R@{kk}"], abs=1e-6)
