"""The rank counter reading the selection's segment maxima (a slot whose threshold few segments pass is
counted in those segments only), and the float64 pair kernel's vector lanes: against brute force and the
float64 reference on unseen inputs, with ties, exclusions, per-category galleries, a small forced segment and
buffer, one and two threads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_retrieval_regimes import brute_ranks, case

import fashion_bench.retrieval.kernels as kernels_mod
from fashion_bench.retrieval.index import Csr, Embeddings, Exclusions
from fashion_bench.retrieval.metrics import rank_with_topk


def brute_count(x, g0, positives, upper, lower, n_slots):
    """count_rows by numpy: (#items > upper, sorted (row, slot, column) of the items in [lower, upper]) after
    hiding each row's positives."""
    x = x.copy()
    above = np.zeros(upper.shape, np.int32)
    band = []
    for r in range(len(x)):
        for p in positives[r, : n_slots[r]]:
            if 0 <= p - g0 < x.shape[1]:
                x[r, p - g0] = -np.inf
        for j in range(n_slots[r]):
            above[r, j] = (x[r] > upper[r, j]).sum()
            band += [(r, j, c) for c in np.flatnonzero((x[r] >= lower[r, j]) & (x[r] <= upper[r, j]))]
    return above, sorted(band)


@pytest.mark.parametrize("width", [1000, 517, 7])
def test_counter_with_segment_maxima_matches_brute_force(settings, width):
    """Thresholds from the top of a row (few segments pass: the segment path) to its middle (the whole
    row), rows with ties and -inf items, positives inside and outside the chunk, the chunk's rows as the
    selection saw them and as a prefix."""
    rng = np.random.default_rng(width)
    n, slots, g0 = 40, 3, 100
    x = np.round(rng.standard_normal((n, width)) * 4).astype(np.float32) / 4  # many exact ties
    x[rng.random(x.shape) < 0.1] = -np.inf
    positives = rng.integers(g0 - 5, g0 + width + 5, (n, slots))
    quantile = rng.choice([0.5, 0.9, 0.99, 0.999, 1.0], (n, slots))
    finite = np.where(np.isinf(x), -9, x)
    upper = np.stack([np.quantile(finite, quantile[:, j], axis=1).diagonal() for j in range(slots)], 1).astype(np.float32)
    upper[::7] += 0.25  # no item between some thresholds
    lower = (upper - rng.choice([0.0, 0.25, 0.5], upper.shape)).astype(np.float32)
    below_lower = np.nextafter(lower, np.float32(-np.inf))
    n_slots = rng.integers(0, slots + 1, n).astype(np.int32)
    selection = kernels_mod.Selection(n, 9)
    selection.add(torch.from_numpy(x.copy()), 0, g0)
    segments = selection.segments(0, g0)
    assert selection.segments(0, g0 + 1) is None  # another chunk's maxima are never used
    maxima, length = segments
    n_pass = (maxima[:, None, :] > below_lower[:, :, None]).sum(2)
    few = np.logical_and.accumulate(n_pass * kernels_mod.SKIP_MOST <= maxima.shape[1], 1)  # a row's later slots
    on_segments = few & (np.arange(slots) < n_slots[:, None])  # count over the whole row once one has
    if maxima.shape[1]:
        assert 0 < on_segments.sum() < (np.arange(slots) < n_slots[:, None]).sum()  # both paths run
    for rows in (n, n - 9):  # the counter may take a prefix of the selection's rows
        chunk = torch.from_numpy(x[:rows].copy())
        args = [torch.from_numpy(a[:rows]) for a in (positives, upper, lower, below_lower, n_slots)]
        above, band = kernels_mod.count_rows(chunk, g0, *args, segments)
        want_above, want_band = brute_count(x[:rows], g0, positives[:rows], upper[:rows], lower[:rows], n_slots[:rows])
        assert np.array_equal(above.numpy(), want_above)
        assert sorted(map(tuple, band.T.tolist())) == want_band
        plain = kernels_mod.count_rows(torch.from_numpy(x[:rows].copy()), g0, *args)
        assert torch.equal(plain[0], above) and torch.equal(plain[1], band)


@pytest.mark.parametrize("strong", [True, False], ids=["strong", "weak"])
@pytest.mark.parametrize("categories", [False, True], ids=["one-gallery", "per-category"])
def test_rank_pass_with_top_k_matches_brute_force(settings, strong, categories):
    """Ranks and top k of rank_with_topk (the counter reading the selection's maxima) on a gallery wide
    enough for many segments per chunk: duplicated items (ties at the positives), exclusions, per-category
    galleries."""
    n_q, n_g, k = 60, 3000, 12
    q, g, positives = case(70 + strong, n_q, n_g, 16, strong, duplicates=True)
    rng = np.random.default_rng(80 + strong + 2 * categories)
    group = np.arange(n_q) % 3
    in_category = rng.random((3, n_g)) < 0.8 if categories else np.ones((3, n_g), bool)
    exclude = [rng.choice(n_g, 5, replace=False).tolist() + positives[i][1:2] * (i % 4 == 0) for i in range(n_q)]
    allowed = in_category[group].copy()
    for i, row in enumerate(exclude):
        allowed[i, row] = False
    lists = Csr.from_lists(exclude, n_q, n_g, "exclude")
    exclusions = (Exclusions(lists, torch.from_numpy(in_category), torch.from_numpy(group)) if categories
                  else Exclusions(lists))
    query, gallery = Embeddings.prepare(q, "q"), Embeddings.prepare(g, "g")
    ranks, idx, _ = rank_with_topk(query, gallery, Csr.from_lists(positives, n_q, n_g, "positives"), exclusions, k,
                                   "fast")
    orders, want = brute_ranks(q, g, positives, allowed)
    assert [ranks.idx[ranks.ptr[i] : ranks.ptr[i + 1]].tolist() for i in range(n_q)] == want
    assert idx.tolist() == [order[:k].tolist() + [-1] * (k - len(order[:k])) for order in orders]


@pytest.mark.parametrize("dim", [1, 3, 4, 5, 8, 33, 256, 258])
@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float64, np.float32), (np.float32, np.float64),
                                    (np.float64, np.float64)], ids=["f32", "f64-f32", "f32-f64", "f64"])
def test_pair_kernel_vector_lanes_against_float64_reference(dim, dtypes):
    """Within 1e-12 of the correctly rounded dot product (relative to sum |q_d g_d|), duplicated gallery
    rows bit-identical wherever they sit, on both paths of the kernel (a row's items four at a time, and
    pairs across rows)."""
    rng = np.random.default_rng(dim)
    q = rng.standard_normal((9, dim)).astype(dtypes[0])
    g = rng.standard_normal((60, dim)).astype(dtypes[1])
    g[40:] = g[:20]  # duplicates
    rows = rng.integers(0, 9, 30)
    cols = rng.integers(-1, 60, (30, 13))
    cols[:10, 2:] = -1  # rows with two items: the cross-row path
    out = kernels_mod.pair_scores(torch.from_numpy(q), torch.from_numpy(g), torch.from_numpy(rows),
                                  torch.from_numpy(cols)).numpy()
    for i in range(len(rows)):
        for m in range(cols.shape[1]):
            c = cols[i, m]
            if c < 0:
                assert out[i, m] == -np.inf
                continue
            terms = np.float64(q[rows[i]]) * np.float64(g[c])
            assert abs(out[i, m] - math.fsum(terms)) <= 1e-12 * max(np.abs(terms).sum(), 1e-300)
    dup = kernels_mod.pair_scores(torch.from_numpy(q), torch.from_numpy(g), torch.from_numpy(np.arange(9)),
                                  torch.from_numpy(np.tile(np.r_[np.arange(20), np.arange(40, 60)], (9, 1)))).numpy()
    assert np.array_equal(dup[:, :20], dup[:, 20:])


def test_fast_top_k_scores_are_the_exact_backends_bit_for_bit():
    """D = 258 (vector lanes plus two remainder terms), duplicated items: the fast path's float64 top-k
    scores and order are the exact backend's."""
    q, g, positives = case(5, 40, 900, 258, True, duplicates=True)
    query, gallery = Embeddings.prepare(q, "q"), Embeddings.prepare(g, "g")
    pos = Csr.from_lists(positives, 40, 900, "positives")
    exclusions = Exclusions(Csr.from_lists([[i] for i in range(40)], 40, 900, "exclude"))
    fast = rank_with_topk(query, gallery, pos, exclusions, 20, "fast")
    exact = rank_with_topk(query, gallery, pos, exclusions, 20, "exact")
    assert torch.equal(fast[1], exact[1]) and torch.equal(fast[2], exact[2])
    assert torch.equal(fast[0].idx, exact[0].idx)


def test_counter_adds_to_an_array_from_numpy_views(settings):
    """count_rows given numpy views of the per-row arrays and an array to add its counts to (as the rank
    counter calls it): the counts added to what the array held, the band unchanged, on the selection's
    maxima and without, for every prefix the counter may take."""
    rng = np.random.default_rng(7)
    n, width, slots, g0 = 40, 1000, 3, 100
    x = np.round(rng.standard_normal((n, width)) * 4).astype(np.float32) / 4  # many exact ties
    x[rng.random(x.shape) < 0.1] = -np.inf
    positives = rng.integers(g0 - 5, g0 + width + 5, (n, slots))
    upper = -np.sort(-rng.choice([0.0, 1.0, 2.0, 2.5, 3.0, 10.0], (n, slots)), 1).astype(np.float32)
    lower = (upper - rng.choice([0.0, 0.25, 0.5], upper.shape)).astype(np.float32)
    below_lower = np.nextafter(lower, np.float32(-np.inf))
    n_slots = rng.integers(0, slots + 1, n).astype(np.int32)
    selection = kernels_mod.Selection(n, 9)
    selection.add(torch.from_numpy(x.copy()), 0, g0)
    for segments in (selection.segments(0, g0), None):
        for rows in (n, n - 9):
            held = rng.integers(0, 100, (rows, slots))
            added = held.copy()
            per_row = [a[:rows] for a in (positives, upper, lower, below_lower, n_slots)]
            above, band = kernels_mod.count_rows(torch.from_numpy(x[:rows].copy()), g0, *per_row, segments,
                                                 above=added)
            want_above, want_band = brute_count(x[:rows], g0, *per_row[:3], per_row[4])
            assert np.array_equal(added, held + want_above) and np.array_equal(above.numpy(), added)
            assert sorted(map(tuple, band.T.tolist())) == want_band
