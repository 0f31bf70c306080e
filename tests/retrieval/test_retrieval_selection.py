"""The CPU top-k selection (a floor and a buffer per row, segments skipped by their max, compactions by
quickselect) and the row-wise float64 pair kernel, against brute force on unseen inputs: ties, -inf items
(exclusions), rows with fewer items than kept, sorted and reverse-sorted rows (the quadratic trap of a
quickselect), a buffer forced small (a compaction at almost every segment), one and two threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_retrieval_topk import brute_topk, topk_per_category

import fashion_bench.retrieval.index as index_mod
import fashion_bench.retrieval.kernels as kernels_mod
from fashion_bench.retrieval.index import Csr, Embeddings, Exclusions
from fashion_bench.retrieval.metrics import rank_with_topk


def select(x: np.ndarray, keep: int, widths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Run the selection over ``x`` cut into chunks of columns of the given widths (rows in two halves)."""
    selection = kernels_mod.Selection(len(x), keep)
    half = len(x) // 2
    g0 = 0
    for w in widths:
        for r0, r1 in ((0, half), (half, len(x))):
            selection.add(torch.from_numpy(np.ascontiguousarray(x[r0:r1, g0 : g0 + w])), r0, g0)
        g0 += w
    ids, val = selection.best()
    return ids.numpy(), val.numpy()


def check_best(x: np.ndarray, keep: int, ids: np.ndarray, val: np.ndarray) -> None:
    """Each row: the values are the row's top ``keep`` finite values in descending order (any tie order),
    the ids distinct and pointing at those values, padded with -1 / -inf."""
    for r, row in enumerate(x):
        finite = np.sort(row[np.isfinite(row)])[::-1][:keep]
        n = len(finite)
        assert np.array_equal(val[r, :n], finite), r
        assert (ids[r, n:] == -1).all() and np.isneginf(val[r, n:]).all()
        assert len(set(ids[r, :n].tolist())) == n
        assert np.array_equal(row[ids[r, :n]], val[r, :n])


@pytest.mark.parametrize("kind", ["random", "ties", "ascending", "descending", "all-equal", "excluded"])
def test_selection_keeps_the_top_of_every_row(settings, kind):
    rng = np.random.default_rng(["random", "ties", "ascending", "descending", "all-equal", "excluded"].index(kind))
    n_rows, width, keep = 40, 1500, 37
    x = rng.standard_normal((n_rows, width)).astype(np.float32)
    if kind == "ties":
        x = np.round(x * 2)  # a handful of distinct values
    elif kind == "ascending":
        x.sort(1)
    elif kind == "descending":
        x = -np.sort(x, 1)
    elif kind == "all-equal":
        x[:] = 0.5
    elif kind == "excluded":  # -inf items; some rows keep fewer finite items than `keep`, one none
        x[rng.random(x.shape) < 0.6] = -np.inf
        x[:5, 20:] = -np.inf
        x[5] = -np.inf
    ids, val = select(x, keep, [512, 300, 7, 1, 680])  # widths neither multiples of the segment nor >= keep
    check_best(x, keep, ids, val)


def test_selection_of_a_row_with_fewer_items_than_kept():
    x = np.array([[3.0, -np.inf, 1.0, 2.0]], np.float32)
    ids, val = select(np.repeat(x, 2, 0), 6, [3, 1])
    assert ids.tolist() == [[0, 3, 2, -1, -1, -1]] * 2
    assert val[0, :3].tolist() == [3.0, 2.0, 1.0] and np.isneginf(val[:, 3:]).all()


@pytest.mark.parametrize("order", ["ascending", "descending", "organ-pipe", "random"])
def test_kth_largest_against_sort(order, monkeypatch):
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 64, 300):
        v = rng.standard_normal(n).astype(np.float32)
        v = {"ascending": np.sort(v), "descending": np.sort(v)[::-1], "random": v,
             "organ-pipe": np.concatenate([np.sort(v)[::2], np.sort(v)[1::2][::-1]])}[order]
        v = np.ascontiguousarray(np.round(v * 4))  # ties as well
        work = np.empty((3, n), np.float32)
        for k in {1, 2, n // 2 + 1, n}:
            want = np.sort(v)[n - k]
            assert kernels_mod._kth_largest(v, n, k, work) == want
    monkeypatch.setattr(kernels_mod, "SELECT_ROUNDS", 1)  # the sorted fallback (interpreted: the constant
    v = rng.standard_normal(50).astype(np.float32)  # is compiled in)
    for k in (1, 17, 50):
        assert kernels_mod._kth_largest.py_func(v, 50, k, np.empty((3, 50), np.float32)) == np.sort(v)[50 - k]


def test_rank_pass_topk_on_sorted_galleries(settings, monkeypatch):
    """Each query's gallery scores arrive ascending or descending along the gallery (and in ties), over
    many blocks and chunks: the selection's quickselect and its floor on its worst orders."""
    monkeypatch.setattr(index_mod, "SCORE_BLOCK", 6000)
    monkeypatch.setattr(index_mod, "GALLERY_ALIGN", 8)
    n_q, n_g, k = 30, 900, 20
    t = np.linspace(-1, 1, n_g)
    g = np.stack([t, np.sqrt(1 - t**2)], 1).astype(np.float32)  # unit vectors, x ascending
    g[400:500] = g[450]  # a run of exact ties
    q = np.zeros((n_q, 2), np.float32)
    q[:, 0] = np.where(np.arange(n_q) % 2 == 0, 1.0, -1.0)  # scores ascending (even) or descending (odd)
    rng = np.random.default_rng(8)
    exclude = [rng.choice(n_g, 4, replace=False).tolist() for _ in range(n_q)]
    positives = [[int(rng.integers(n_g))] for _ in range(n_q)]
    query, gallery = Embeddings.prepare(q, "q"), Embeddings.prepare(g, "g")
    exclusions = Exclusions(Csr.from_lists(exclude, n_q, n_g, "exclude"))
    pos = Csr.from_lists(positives, n_q, n_g, "positives")
    _, idx, scores = rank_with_topk(query, gallery, pos, exclusions, k, "fast")
    exact = rank_with_topk(query, gallery, pos, exclusions, k, "exact")
    assert torch.equal(idx, exact[1]) and torch.equal(scores, exact[2])
    assert torch.equal(idx, torch.from_numpy(brute_topk(q, g, exclude, k)))


def test_rank_pass_topk_per_category_with_few_items(settings, monkeypatch):
    """Duplicated items, exclusions and per-category galleries, one category smaller than k."""
    monkeypatch.setattr(index_mod, "SCORE_BLOCK", 4000)
    monkeypatch.setattr(index_mod, "GALLERY_ALIGN", 8)
    rng = np.random.default_rng(21)
    n_q, n_g, k = 50, 700, 15
    g = np.round(rng.standard_normal((n_g, 8)) * 1.5).astype(np.float32)
    q = np.round(rng.standard_normal((n_q, 8)) * 1.5).astype(np.float32)
    g[rng.choice(n_g, 250)] = g[rng.choice(n_g, 250)]
    allowed = rng.random((3, n_g)) < 0.7
    allowed[1, 10:] = False  # category 1: at most 10 items
    idx, _, want = topk_per_category(q, g, rng, allowed, 6, 1, k)
    assert torch.equal(idx, torch.from_numpy(want))
    group = np.arange(n_q) % 3
    assert (idx[group == 1] >= 0).sum(1).max() <= 10


def test_float32_ties_take_the_float64_order():
    """Items whose float32 scores tie but whose exact scores differ come in float64 order, not by index."""
    eps = np.float32(2.0**-30)
    g = np.array([[1, 0], [1, eps], [1, 2 * eps], [1, 0], [0, 1]], np.float32)
    q = np.ones((3, 2), np.float32)
    query, gallery = Embeddings.prepare(q, "q"), Embeddings.prepare(g, "g")
    assert torch.equal(query.f32 @ gallery.f32[:4].T, torch.ones(3, 4))  # one float32 score for all four
    pos = Csr.from_lists([[4]] * 3, 3, len(g), "positives")
    _, idx, scores = rank_with_topk(query, gallery, pos, Exclusions(Csr.from_lists([[]] * 3, 3, len(g), "e")), 4,
                                    "fast")
    assert idx.tolist() == [[2, 1, 0, 3]] * 3
    assert scores[0].tolist() == [1 + 2.0**-29, 1 + 2.0**-30, 1.0, 1.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_pair_kernel_matches_one_pair_at_a_time(dtype):
    """Rows with four items or more take the row path (query row converted once), the rest the cross-row
    path; both give each pair the same sum as scoring it alone."""
    rng = np.random.default_rng(4)
    q = rng.standard_normal((7, 37)).astype(dtype)
    g = rng.standard_normal((40, 37)).astype(np.float32)
    rows = rng.integers(0, 7, 9)
    cols = rng.integers(-1, 40, (9, 11))
    cols[3, 2:] = -1  # two items: only the cross-row path
    out = kernels_mod.pair_scores(torch.from_numpy(q), torch.from_numpy(g), torch.from_numpy(rows),
                                  torch.from_numpy(cols)).numpy()
    for i in range(9):
        for m in range(11):
            one = kernels_mod.pair_scores(torch.from_numpy(q), torch.from_numpy(g), torch.from_numpy(rows[i : i + 1]),
                                          torch.from_numpy(cols[i : i + 1, m : m + 1])).item()
            assert out[i, m] == one or (cols[i, m] < 0 and out[i, m] == one == -np.inf)


@pytest.mark.parametrize("layout", ["nearly-sorted", "ties", "reversed", "pads"])
def test_order_nearly_sorted_equals_order_candidates(layout):
    """The insertion sort (with its move budget: reversed rows exceed it and take the general sort) gives
    order_candidates' result exactly."""
    rng = np.random.default_rng(["nearly-sorted", "ties", "reversed", "pads"].index(layout))
    n, m = 30, 70
    scores = -np.sort(-rng.standard_normal((n, m)), 1)
    cand = np.stack([rng.permutation(500)[:m] for _ in range(n)])
    if layout == "nearly-sorted":
        swap = rng.integers(0, m - 1, (n, 5))
        for r in range(n):
            for i in swap[r]:
                scores[r, [i, i + 1]] = scores[r, [i + 1, i]]
    elif layout == "ties":
        scores = np.round(scores)
    elif layout == "reversed":
        scores = scores[:, ::-1].copy()
    else:
        cand[:, 40:] = -1
        scores[:, 40:] = -np.inf
        scores[::3, 30:40] = -np.inf  # excluded candidates inside the row
    cand_t, scores_t = torch.from_numpy(cand), torch.from_numpy(scores)
    got = index_mod.order_nearly_sorted(cand_t, scores_t)
    want = index_mod.order_candidates(cand_t, scores_t)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
