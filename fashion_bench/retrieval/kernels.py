"""CPU kernel (numba) of the rank counter: per row of a chunk of float32 scores, how many items lie above
each of the row's positives, and which lie within the error band of one, in one read of the row from cache.

Torch can only do this as a compare and a sum per threshold, each a full pass over the chunk with its own
temporary; here each threshold is a vectorised loop over a row that stays in L1. Compiled on first use and
cached on disk. The kernel is serial and releases the GIL; a chunk's rows are split over as many Python
threads as torch uses (not numba's parallel layer, whose OpenMP threads would spin against torch's and
faiss's, and whose default layer is not safe to call from several threads at once).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numba
import numpy as np
import torch
from torch import Tensor

BAND_CAP = 16  # band items kept per (row, positive) and chunk; a fuller band is rescanned (many exact ties)
MIN_ROWS = 16  # rows per thread at least


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _count_rows(x, g0, positives, upper, lower, below_lower, n_slots, above, band_n, band_cols, band):  # pragma: no cover
    width = x.shape[1]
    cap = band_cols.shape[2] - 1  # the last column takes the writes of items outside the band
    for r in range(x.shape[0]):
        for j in range(n_slots[r]):  # hide the row's own positives
            c = positives[r, j] - g0
            if 0 <= c < width:
                x[r, c] = -np.inf
        for j in range(n_slots[r]):
            u, b = upper[r, j], below_lower[r, j]
            n_above = np.int32(0)
            n_reach = np.int32(0)
            for c in range(width):
                v = x[r, c]
                n_above += np.int32(v > u)
                n_reach += np.int32(v > b)
            above[r, j] = n_above
            n = 0
            if n_reach != n_above:  # items within [lower, upper]: their columns, without branching on them
                lo = lower[r, j]
                for c in range(width):
                    v = x[r, c]
                    band_cols[r, j, min(n, cap)] = c
                    n += np.int32(v >= lo) & np.int32(v <= u)
            band_n[r, j] = n
    m = 0  # gather the band items, (row, slot, column) by row; a band fuller than cap is rescanned
    for r in range(x.shape[0]):
        for j in range(n_slots[r]):
            n = band_n[r, j]
            if n > cap:
                lo, u = lower[r, j], upper[r, j]
                for c in range(width):
                    if lo <= x[r, c] <= u:
                        band[0, m], band[1, m], band[2, m] = r, j, c
                        m += 1
            else:
                for k in range(n):
                    band[0, m], band[1, m], band[2, m] = r, j, band_cols[r, j, k]
                    m += 1
    return m


def count_rows(
    x: Tensor, g0: int, positives: Tensor, upper: Tensor, lower: Tensor, below_lower: Tensor, n_slots: Tensor
) -> tuple[Tensor, Tensor]:
    """For a chunk ``x`` [n, w] (float32 CPU, gallery items g0 on) and per row its positives [n, slots]
    (gallery indices, slots by descending score) with their float32 thresholds: set the positives' own
    entries to -inf, then return (#items > upper [n, slots] int32, (row, slot, column) [3, m] int64 of every
    item with lower <= item <= upper). Slots at or beyond a row's ``n_slots`` are skipped (counted as 0)."""
    arrays = [t.numpy() for t in (x, positives, upper, lower, below_lower, n_slots)]
    above = np.zeros(tuple(upper.shape), np.int32)

    def part(r0: int, r1: int) -> np.ndarray:
        x_part, *rest = (a[r0:r1] for a in arrays)
        shape = (r1 - r0, upper.shape[1])
        band = np.empty((3, x_part.size), np.int64)  # address space: only the pages written are touched
        m = _count_rows(x_part, g0, *rest, above[r0:r1], np.empty(shape, np.int32),
                        np.empty((*shape, BAND_CAP + 1), np.int64), band)
        band[0, :m] += r0
        return band[:, :m]

    parts = max(1, min(torch.get_num_threads(), len(x) // MIN_ROWS))
    bounds = np.linspace(0, len(x), parts + 1).astype(int).tolist()
    if parts == 1:
        bands = [part(0, len(x))]
    else:
        bands = list(_pool(parts).map(part, bounds[:-1], bounds[1:]))
    return torch.from_numpy(above), torch.from_numpy(np.concatenate(bands, 1))


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="fashion-bench-count")


@numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _tail(q, r, g, c, a0, d0):  # pragma: no cover - compiled
    for d in range(d0, q.shape[1]):
        a0 += np.float64(q[r, d]) * np.float64(g[c, d])
    return a0


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _pair_scores(q, g, rows, cols, out):  # pragma: no cover - compiled
    """Per pair, four chains in a fixed order (the same sum for every pair); four pairs at a time, so that
    their chains overlap in the pipeline without changing any pair's sum."""
    n_m = cols.shape[1]
    total = cols.shape[0] * n_m
    dd = q.shape[1] - q.shape[1] % 4
    for p0 in range(0, total, 4):
        p = np.empty(4, np.int64)
        for t in range(4):
            p[t] = min(p0 + t, total - 1)  # the last block repeats its last pair
        r0, r1, r2, r3 = rows[p[0] // n_m], rows[p[1] // n_m], rows[p[2] // n_m], rows[p[3] // n_m]
        c0, c1 = max(cols[p[0] // n_m, p[0] % n_m], 0), max(cols[p[1] // n_m, p[1] % n_m], 0)
        c2, c3 = max(cols[p[2] // n_m, p[2] % n_m], 0), max(cols[p[3] // n_m, p[3] % n_m], 0)
        a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = 0.0
        a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = 0.0
        for d in range(0, dd, 4):
            a00 += np.float64(q[r0, d]) * np.float64(g[c0, d])
            a01 += np.float64(q[r0, d + 1]) * np.float64(g[c0, d + 1])
            a02 += np.float64(q[r0, d + 2]) * np.float64(g[c0, d + 2])
            a03 += np.float64(q[r0, d + 3]) * np.float64(g[c0, d + 3])
            a10 += np.float64(q[r1, d]) * np.float64(g[c1, d])
            a11 += np.float64(q[r1, d + 1]) * np.float64(g[c1, d + 1])
            a12 += np.float64(q[r1, d + 2]) * np.float64(g[c1, d + 2])
            a13 += np.float64(q[r1, d + 3]) * np.float64(g[c1, d + 3])
            a20 += np.float64(q[r2, d]) * np.float64(g[c2, d])
            a21 += np.float64(q[r2, d + 1]) * np.float64(g[c2, d + 1])
            a22 += np.float64(q[r2, d + 2]) * np.float64(g[c2, d + 2])
            a23 += np.float64(q[r2, d + 3]) * np.float64(g[c2, d + 3])
            a30 += np.float64(q[r3, d]) * np.float64(g[c3, d])
            a31 += np.float64(q[r3, d + 1]) * np.float64(g[c3, d + 1])
            a32 += np.float64(q[r3, d + 2]) * np.float64(g[c3, d + 2])
            a33 += np.float64(q[r3, d + 3]) * np.float64(g[c3, d + 3])
        a00, a10 = _tail(q, r0, g, c0, a00, dd), _tail(q, r1, g, c1, a10, dd)
        a20, a30 = _tail(q, r2, g, c2, a20, dd), _tail(q, r3, g, c3, a30, dd)
        sums = ((a00 + a01) + (a02 + a03), (a10 + a11) + (a12 + a13),
                (a20 + a21) + (a22 + a23), (a30 + a31) + (a32 + a33))
        for t in range(min(4, total - p0)):
            i, m = p[t] // n_m, p[t] % n_m
            out[i, m] = sums[t] if cols[i, m] >= 0 else -np.inf


def pair_scores(query: Tensor, gallery: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Float64 scores of query row ``rows[i]`` against gallery items ``cols[i, :]`` (-inf where col < 0),
    from CPU embeddings as given (float32 or float64)."""
    out = np.empty(tuple(cols.shape), np.float64)
    _pair_scores(query.numpy(), gallery.numpy(), rows.numpy(), cols.numpy(), out)
    return torch.from_numpy(out)
