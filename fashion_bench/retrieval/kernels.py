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


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _pair_scores(q, g, rows, cols, out):  # pragma: no cover - compiled
    dim = q.shape[1]
    for i in range(cols.shape[0]):
        r = rows[i]
        for m in range(cols.shape[1]):
            c = cols[i, m]
            if c < 0:
                out[i, m] = -np.inf
                continue
            acc = np.zeros(4)  # four chains in a fixed order: the same sum for every pair
            for d in range(0, dim - dim % 4, 4):
                for t in range(4):
                    acc[t] += np.float64(q[r, d + t]) * np.float64(g[c, d + t])
            for d in range(dim - dim % 4, dim):
                acc[0] += np.float64(q[r, d]) * np.float64(g[c, d])
            out[i, m] = (acc[0] + acc[1]) + (acc[2] + acc[3])


def pair_scores(query: Tensor, gallery: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Float64 scores of query row ``rows[i]`` against gallery items ``cols[i, :]`` (-inf where col < 0),
    from CPU embeddings as given (float32 or float64)."""
    out = np.empty(tuple(cols.shape), np.float64)
    _pair_scores(query.numpy(), gallery.numpy(), rows.numpy(), cols.numpy(), out)
    return torch.from_numpy(out)
