"""CPU kernels (numba) of the rank pass.

The rank counter: per row of a chunk of float32 scores, how many items lie above each of the row's
positives, and which lie within the error band of one, in one read of the row from cache. Torch can only do
this as a compare and a sum per threshold, each a full pass over the chunk with its own temporary; here each
threshold is a vectorised loop over a row that stays in L1, or, when the selection has just read the chunk
and few of its segments' maxima pass the threshold, a loop over those segments only.

The top-k selection (:class:`Selection`): per row a floor and a buffer of the items above it, compacted by
quickselect when full; most of a row is skipped by the maxima of its segments. The float64 pair scores
(:func:`pair_scores`): one fixed summation order for every pair (four chains, the lanes of one float64
vector), a query row converted once for its items.

Compiled on first use and cached on disk. The kernels are serial and release the GIL. The rank pass runs them
in threads that each scan their own query rows at one torch thread (threads.py); called from a thread where
torch uses several, they split a chunk's rows over as many Python threads (not numba's parallel layer, whose
OpenMP threads would spin against torch's and faiss's, and whose default layer is not safe to call from
several threads at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from torch import Tensor

from fashion_bench.retrieval.threads import pool

BAND_CAP = 16  # band items kept per (row, positive) and chunk; a fuller band is rescanned (many exact ties)
MIN_ROWS = 16  # rows per thread at least
TOP_SEGMENT = 8  # top-k: items per segment of a row (a power of two >= 2), skipped if its max is not above the floor
TOP_BUFFER = 2  # top-k: a row's candidate buffer holds this many times the candidates kept, plus one segment
SELECT_ROUNDS = 40  # quickselect rounds before the rest is sorted instead (a quadratic trap)
SKIP_MOST = 4  # counter: a slot is counted in the segments above its threshold if at most 1 / SKIP_MOST of them are

T = TypeVar("T")
PerRow = Tensor | np.ndarray  # per-row arguments of count_rows: CPU tensors or numpy arrays


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _count_rows(x, g0, positives, upper, lower, below_lower, n_slots, maxima, length, above, band_n,
                band_cols):  # pragma: no cover - compiled
    width, n_seg = x.shape[1], maxima.shape[1]
    body = n_seg * length
    cap = band_cols.shape[2] - 1  # the last column takes the writes of items outside the band
    passing = np.empty(n_seg, np.int64)
    for r in range(x.shape[0]):
        for j in range(n_slots[r]):  # hide the row's own positives
            c = positives[r, j] - g0
            if 0 <= c < width:
                x[r, c] = -np.inf
        row = x[r]
        few = n_seg > 0  # slots by descending score: once one slot passes many segments, the next ones do
        for j in range(n_slots[r]):
            u, b = upper[r, j], below_lower[r, j]
            n_above = np.int32(0)
            n_reach = np.int32(0)
            if few:
                n_pass = np.int32(0)
                for s in range(n_seg):  # the segments that can hold an item above b (a vectorised count)
                    n_pass += np.int32(maxima[r, s] > b)
                few = n_pass * SKIP_MOST <= n_seg
            if few:  # count in the segments that pass (and in the items after the body)
                n_pass = 0
                for s in range(n_seg):  # listed without branching
                    passing[n_pass] = s
                    n_pass += np.int32(maxima[r, s] > b)
                for i in range(n_pass):
                    for c in range(passing[i], body, n_seg):
                        v = row[c]
                        n_above += np.int32(v > u)
                        n_reach += np.int32(v > b)
                for c in range(body, width):
                    v = row[c]
                    n_above += np.int32(v > u)
                    n_reach += np.int32(v > b)
            else:
                for c in range(width):
                    v = row[c]
                    n_above += np.int32(v > u)
                    n_reach += np.int32(v > b)
            above[r, j] += n_above
            n = 0
            if n_reach != n_above:  # items within [lower, upper]: their columns, without branching on them
                lo = lower[r, j]
                for c in range(width):
                    v = x[r, c]
                    band_cols[r, j, min(n, cap)] = c
                    n += np.int32(v >= lo) & np.int32(v <= u)
            band_n[r, j] = n
    m = 0
    for r in range(x.shape[0]):
        for j in range(n_slots[r]):
            m += band_n[r, j]
    band = np.empty((3, m), np.int64)
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
    return band


def count_rows(
    x: Tensor, g0: int, positives: PerRow, upper: PerRow, lower: PerRow, below_lower: PerRow, n_slots: PerRow,
    segments: tuple[np.ndarray, int] | None = None, above: np.ndarray | None = None,
) -> tuple[Tensor, Tensor]:
    """For a chunk ``x`` [n, w] (float32 CPU, gallery items g0 on) and per row its positives [n, slots]
    (gallery indices, slots by descending score) with their float32 thresholds: set the positives' own
    entries to -inf, then return (#items > upper [n, slots] int32, (row, slot, column) [3, m] int64 of every
    item with lower <= item <= upper). Slots at or beyond a row's ``n_slots`` are skipped (counted as 0). The
    per-row arguments may also be numpy arrays (views of the caller's, no copies); ``above``, an integer
    array [n, slots], takes the counts added to it instead of a new one (few Python steps per chunk: each
    step runs with caches the chunk has just swept).

    ``segments``: (maxima [n, w // length], length) of the chunk's strided segments as :class:`Selection`
    read them (upper bounds suffice: the entries hidden since only lower a max). A slot whose threshold
    few segments' maxima pass is counted in those segments only; otherwise over the whole row."""
    maxima, length = segments if segments is not None else (np.empty((len(x), 0), np.float32), 1)
    maxima = maxima[: len(x)]  # the counter may take a prefix of the chunk's rows
    arrays = [t if isinstance(t, np.ndarray) else t.numpy() for t in (x, positives, upper, lower, below_lower, n_slots)]
    arrays.append(maxima)
    if above is None:
        above = np.zeros(tuple(upper.shape), np.int32)

    def part(r0: int, r1: int) -> np.ndarray:
        x_part, *rest = (a[r0:r1] for a in arrays)
        shape = (r1 - r0, upper.shape[1])
        band = _count_rows(x_part, g0, *rest, length, above[r0:r1], np.empty(shape, np.int32),
                           np.empty((*shape, BAND_CAP + 1), np.int64))
        if r0:
            band[0] += r0
        return band

    bands = _split_rows(len(x), part)
    return torch.from_numpy(above), torch.from_numpy(bands[0] if len(bands) == 1 else np.concatenate(bands, 1))


def _split_rows(n_rows: int, part: Callable[[int, int], T]) -> list[T]:
    """``part(r0, r1)`` over row ranges, one per thread torch uses (at least MIN_ROWS rows each)."""
    parts = max(1, min(torch.get_num_threads(), n_rows // MIN_ROWS))
    if parts == 1:
        return [part(0, n_rows)]
    bounds = np.linspace(0, n_rows, parts + 1).astype(int).tolist()
    return list(pool(parts, "count").map(part, bounds[:-1], bounds[1:]))


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _kth_largest(val, n, k, work):  # pragma: no cover - compiled
    """The k-th largest of ``val[:n]`` (1 <= k <= n). Quickselect on copies in ``work`` [3, >= n]: a
    median-of-3 pivot, each round one branch-free pass writing the items above and below it to the other two
    rows; after SELECT_ROUNDS rounds (a quadratic trap) the rest is sorted (merge sort) instead."""
    src = 0
    work[0, :n] = val[:n]
    for _ in range(SELECT_ROUNDS):
        if n == 1:
            return work[src, 0]
        a, b, m = work[src, 0], work[src, n - 1], work[src, n >> 1]
        p = max(min(a, b), min(max(a, b), m))
        hi, lo = (src + 1) % 3, (src + 2) % 3
        n_hi = n_lo = 0
        for i in range(n):
            v = work[src, i]
            work[hi, n_hi] = v
            work[lo, n_lo] = v
            n_hi += np.int64(v > p)
            n_lo += np.int64(v < p)
        if k <= n_hi:
            src, n = hi, n_hi
        elif k <= n - n_lo:  # the k-th largest equals the pivot
            return p
        else:
            src, n, k = lo, n_lo, k - (n - n_lo)
    rest = work[src, :n]
    return rest[np.argsort(rest, kind="mergesort")[n - k]]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _keep_best(val, ids, n, keep, work):  # pragma: no cover - compiled
    """Move the ``keep`` largest of ``val[:n]`` (their ``ids`` along; of equal items, the first ones) to the
    front, in their order, and return the smallest of them."""
    t = _kth_largest(val, n, keep, work)
    n_above = n_reach = 0
    for i in range(n):
        n_above += np.int64(val[i] > t)
        n_reach += np.int64(val[i] >= t)
    w = 0
    if n_reach == keep:  # no surplus tie at t: keep every item >= t
        for i in range(n):  # in place, without branching: w <= i
            v = val[i]
            val[w], ids[w] = v, ids[i]
            w += np.int64(v >= t)
        return t
    need = keep - n_above  # the first items equal to t
    for i in range(n):
        v = val[i]
        tie = np.int64(v == t) & np.int64(need > 0)
        need -= tie
        val[w], ids[w] = v, ids[i]
        w += np.int64(v > t) | tie
    return t


@numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _append(row, c0, step, size, g0, f, val, ids, n):  # pragma: no cover - compiled
    """Append the items ``row[c0 + t * step]`` (t < size) above the floor ``f`` to ``val``/``ids`` from ``n``
    on, without branching (each is written, the count advances by the comparison); returns the new count."""
    for t in range(size):
        c = c0 + t * step
        v = row[c]
        val[n], ids[n] = v, g0 + c
        n += np.int64(v > f)
    return n


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _select_rows(x, g0, val, ids, count, floor, keep, length, work, maxima):  # pragma: no cover - compiled
    """Per row of ``x``, append to the row's buffer ``val``/``ids`` every item above its ``floor``; a full
    buffer keeps its ``keep`` best (:func:`_keep_best`) and raises the floor to the smallest of them.

    The row is cut into segments of ``length`` (a power of two, at least 2) strided items j, j + n_seg, ...,
    whose maxima come from halving the row (elementwise maxima of its two halves, then of theirs,
    vectorised); only the segments whose max is above the floor are appended (listed first without
    branching, as most are not); the last ``width % length`` items always are. A row's first chunk seeds
    its floor (still -inf) just below the keep-th largest of the maxima of disjoint groups (at the last
    halving with keep groups or more): at least keep items reach it, so the row's final keep best do too.
    The segments' maxima are left in ``maxima`` [n, n_seg] for the rank counter (:func:`count_rows`)."""
    width, cap = x.shape[1], val.shape[1]
    n_seg = width // length
    body = n_seg * length
    tmp = np.empty(max(1, body // 2), np.float32)
    passing = np.empty(n_seg, np.int64)
    for r in range(x.shape[0]):
        n, f = count[r], floor[r]
        row, row_val, row_ids = x[r], val[r], ids[r]
        seeding = n == 0
        if seeding and body // 2 < keep:
            if width >= keep:
                f = np.nextafter(_kth_largest(row, width, keep, work), np.float32(-np.inf))
            seeding = False
        h = body // 2
        for j in range(h):
            a, b = row[j], row[j + h]
            tmp[j] = a if a > b else b
        while h > 0:
            if seeding and (h == n_seg or h // 2 < keep):
                f = np.nextafter(_kth_largest(tmp, h, keep, work), np.float32(-np.inf))
                seeding = False
            if h == n_seg:
                break
            h //= 2
            for j in range(h):
                a, b = tmp[j], tmp[j + h]
                tmp[j] = a if a > b else b
        n_pass = 0
        for j in range(n_seg):  # the segments above the floor, listed without branching
            maxima[r, j] = tmp[j]
            passing[n_pass] = j
            n_pass += np.int64(tmp[j] > f)
        for i in range(n_pass):
            j = passing[i]
            if n + length > cap:  # a compaction leaves keep + length <= cap: each write stays inside
                f = _keep_best(row_val, row_ids, n, keep, work)
                n = keep
            if tmp[j] > f:
                n = _append(row, j, n_seg, length, g0, f, row_val, row_ids, n)
        if body < width:
            if n + length > cap:
                f = _keep_best(row_val, row_ids, n, keep, work)
                n = keep
            n = _append(row, body, 1, width - body, g0, f, row_val, row_ids, n)
        count[r], floor[r] = n, f


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _finish_rows(val, ids, count, keep, work, out_val, out_ids):  # pragma: no cover - compiled
    """Each row's ``keep`` best candidates by descending score into ``out_val``/``out_ids`` (padded with -inf
    and -1)."""
    for r in range(val.shape[0]):
        n = count[r]
        if n > keep:
            _keep_best(val[r], ids[r], n, keep, work)
            n = keep
        order = np.argsort(-val[r, :n], kind="mergesort")
        for t in range(n):
            out_val[r, t], out_ids[r, t] = val[r, order[t]], ids[r, order[t]]
        for t in range(n, keep):
            out_val[r, t], out_ids[r, t] = -np.inf, -1


class Selection:
    """Per query row, the float32 top ``keep`` of the chunks it is shown (items at -inf never enter): the
    buffers of :func:`_select_rows`, filled while each chunk is in cache, rows split over threads."""

    def __init__(self, n_rows: int, keep: int) -> None:
        self.keep = keep
        cap = TOP_BUFFER * keep + TOP_SEGMENT
        self.val = np.empty((n_rows, cap), np.float32)
        self.ids = np.empty((n_rows, cap), np.int64)
        self.count = np.zeros(n_rows, np.int64)
        self.floor = np.full(n_rows, -np.inf, np.float32)
        self.length = TOP_SEGMENT
        self._maxima = np.empty(0, np.float32)
        self._last: tuple[int, int, np.ndarray] | None = None  # (row0, g0, segment maxima) of the last chunk

    def add(self, chunk: Tensor, row0: int, g0: int) -> None:
        x = chunk.numpy()
        n_seg = x.shape[1] // self.length
        if self._maxima.size < x.shape[0] * n_seg:
            self._maxima = np.empty(x.shape[0] * n_seg, np.float32)
        maxima = self._maxima[: x.shape[0] * n_seg].reshape(x.shape[0], n_seg)

        def part(r0: int, r1: int) -> None:
            rows = slice(row0 + r0, row0 + r1)
            _select_rows(x[r0:r1], g0, self.val[rows], self.ids[rows], self.count[rows], self.floor[rows],
                         self.keep, self.length, np.empty((3, max(x.shape[1], self.val.shape[1])), np.float32),
                         maxima[r0:r1])

        _split_rows(len(x), part)
        self._last = (row0, g0, maxima)

    def segments(self, row0: int, g0: int) -> tuple[np.ndarray, int] | None:
        """(segment maxima, segment length) of the chunk last added, if it was the one at (row0, g0), for
        :func:`count_rows`."""
        if self._last is None or self._last[:2] != (row0, g0):
            return None
        return self._last[2], self.length

    def best(self) -> tuple[Tensor, Tensor]:
        """(ids padded with -1, float32 scores padded with -inf) [n_rows, keep], by descending score."""
        out_val = np.empty((len(self.val), self.keep), np.float32)
        out_ids = np.empty((len(self.val), self.keep), np.int64)
        _finish_rows(self.val, self.ids, self.count, self.keep, np.empty((3, self.val.shape[1]), np.float32),
                     out_val, out_ids)
        return torch.from_numpy(out_ids), torch.from_numpy(out_val)


_F64X4 = ir.VectorType(ir.DoubleType(), 4)


def _load_f64(context, builder, dtype, base, offset, lanes):  # pragma: no cover - compile time
    """``lanes`` (1 or 4) consecutive items of ``base`` from ``offset`` on, as float64 (a vector for 4)."""
    elt = context.get_value_type(dtype)
    ptr = builder.gep(base, [offset])
    if lanes == 1:
        v = builder.load(ptr)
        return v if dtype == types.float64 else builder.fpext(v, ir.DoubleType())
    v = builder.load(builder.bitcast(ptr, ir.VectorType(elt, 4).as_pointer()), align=dtype.bitwidth // 8)
    return v if dtype == types.float64 else builder.fpext(v, _F64X4)


@intrinsic
def _four(typingctx, q0, q1, q2, q3, g, c0, c1, c2, c3):  # pragma: no cover - compile time
    """Float64 dot products of the query vectors ``q0``..``q3`` (C-contiguous, float32 or float64) with gallery
    rows ``c0``..``c3`` of ``g``: per pair, four chains (chain t sums the terms d = t mod 4 in order; the last
    D % 4 terms go to chain 0), added as (0 + 1) + (2 + 3). The four chains of a pair are the lanes of one
    float64 vector (AVX: four terms per instruction; numba's SLP vectorizer, off, would not pack scalar
    chains), so the sums are those of the scalar chains bit for bit; the four pairs' vectors overlap in the
    pipeline. No fast-math flag: no reassociation, no fused multiply-add."""
    floats = (types.float32, types.float64)
    if not (all(isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C" and t.dtype in floats
                for t in (q0, q1, q2, q3))
            and isinstance(g, types.Array) and g.ndim == 2 and g.layout == "C" and g.dtype in floats):
        return None
    sig = types.UniTuple(types.float64, 4)(q0, q1, q2, q3, g, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, sig, args):
        qs = [context.make_array(sig.args[p])(context, builder, args[p]) for p in range(4)]
        gallery = context.make_array(sig.args[4])(context, builder, args[4])
        dim = builder.extract_value(gallery.shape, 1)
        rows = [builder.gep(gallery.data, [builder.mul(args[5 + p], dim)]) for p in range(4)]
        q_types, g_type = [sig.args[p].dtype for p in range(4)], sig.args[4].dtype
        four, one = ir.Constant(dim.type, 4), ir.Constant(dim.type, 1)
        acc = [cgutils.alloca_once_value(builder, ir.Constant(_F64X4, [0.0] * 4)) for _ in range(4)]
        with cgutils.for_range(builder, builder.sdiv(dim, four)) as loop:
            d = builder.mul(loop.index, four)
            for p in range(4):
                prod = builder.fmul(_load_f64(context, builder, q_types[p], qs[p].data, d, 4),
                                    _load_f64(context, builder, g_type, rows[p], d, 4))
                builder.store(builder.fadd(builder.load(acc[p]), prod), acc[p])
        chains = [[builder.extract_element(builder.load(acc[p]), ir.Constant(ir.IntType(32), t)) for t in range(4)]
                  for p in range(4)]
        first = [cgutils.alloca_once_value(builder, chains[p][0]) for p in range(4)]
        with cgutils.for_range_slice(builder, builder.sub(dim, builder.srem(dim, four)), dim, one) as (d, _):
            for p in range(4):
                prod = builder.fmul(_load_f64(context, builder, q_types[p], qs[p].data, d, 1),
                                    _load_f64(context, builder, g_type, rows[p], d, 1))
                builder.store(builder.fadd(builder.load(first[p]), prod), first[p])
        sums = [builder.fadd(builder.fadd(builder.load(first[p]), chains[p][1]),
                             builder.fadd(chains[p][2], chains[p][3])) for p in range(4)]
        return context.make_tuple(builder, sig.return_type, sums)

    return sig, codegen


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _pair_scores(q, g, rows, cols, out):  # pragma: no cover - compiled
    """``out[i, m]``: query row ``rows[i]`` against gallery row ``cols[i, m]`` (-inf where it is < 0), every
    pair by :func:`_four`. A query row with four items or more is converted to float64 once and scored
    against four of its items at a time; the rest (fewer than four per row) four pairs at a time across
    rows."""
    n_m = cols.shape[1]
    qd = np.empty(q.shape[1], np.float64)
    valid = np.empty(n_m, np.int64)
    rest = np.empty((2, 3 * cols.shape[0]), np.int64)  # (i, m) of the pairs left
    n_rest = 0
    for i in range(cols.shape[0]):
        n = 0
        for m in range(n_m):
            out[i, m] = -np.inf
            valid[n] = m
            n += np.int64(cols[i, m] >= 0)
        if n >= 4:
            qd[:] = q[rows[i]]
            for v in range(0, n - 3, 4):
                m0, m1, m2, m3 = valid[v], valid[v + 1], valid[v + 2], valid[v + 3]
                out[i, m0], out[i, m1], out[i, m2], out[i, m3] = _four(
                    qd, qd, qd, qd, g, cols[i, m0], cols[i, m1], cols[i, m2], cols[i, m3])
        for v in range(n - n % 4, n):
            rest[0, n_rest], rest[1, n_rest] = i, valid[v]
            n_rest += 1
    p = np.empty(4, np.int64)
    for p0 in range(0, n_rest, 4):
        for t in range(4):
            p[t] = min(p0 + t, n_rest - 1)  # the last block repeats its last pair
        i0, i1, i2, i3 = rest[0, p[0]], rest[0, p[1]], rest[0, p[2]], rest[0, p[3]]
        m0, m1, m2, m3 = rest[1, p[0]], rest[1, p[1]], rest[1, p[2]], rest[1, p[3]]
        sums = _four(q[rows[i0]], q[rows[i1]], q[rows[i2]], q[rows[i3]], g,
                     cols[i0, m0], cols[i1, m1], cols[i2, m2], cols[i3, m3])
        for t in range(min(4, n_rest - p0)):
            out[rest[0, p[t]], rest[1, p[t]]] = sums[t]


def pair_scores(query: Tensor, gallery: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Float64 scores of query row ``rows[i]`` against gallery items ``cols[i, :]`` (-inf where col < 0),
    from CPU embeddings as given (float32 or float64)."""
    out = np.empty(tuple(cols.shape), np.float64)
    _pair_scores(query.numpy(), gallery.numpy(), rows.numpy(), cols.numpy(), out)
    return torch.from_numpy(out)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _order_rows(cand, score, out_idx, out_score, budget, done):  # pragma: no cover - compiled
    """Per row, ``cand``/``score`` by (score descending, index ascending), -inf scores last as -1, by
    insertion: linear for rows nearly in order already. A row that needs more than ``budget`` moves is left
    (``done[r]`` False)."""
    m = cand.shape[1]
    for r in range(cand.shape[0]):
        moves = 0
        for i in range(m):
            c, v = cand[r, i], score[r, i]
            j = i
            while j > 0 and (out_score[r, j - 1] < v or (out_score[r, j - 1] == v and out_idx[r, j - 1] > c)):
                out_idx[r, j], out_score[r, j] = out_idx[r, j - 1], out_score[r, j - 1]
                j -= 1
            out_idx[r, j], out_score[r, j] = c, v
            moves += i - j
            if moves > budget:
                break
        done[r] = moves <= budget
        for i in range(m):
            if out_score[r, i] == -np.inf:
                out_idx[r, i] = -1


def order_rows(cand: Tensor, score: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(indices, scores, done [n] bool) of ``cand``/``score`` [n, m] (int64, float64 CPU) by (score
    descending, index ascending), -inf scores last as -1; rows far from that order already are not done."""
    out_idx = np.empty(tuple(cand.shape), np.int64)
    out_score = np.empty(tuple(cand.shape), np.float64)
    done = np.empty(len(cand), np.bool_)
    _order_rows(cand.numpy(), score.numpy(), out_idx, out_score, 4 * cand.shape[1] + 64, done)
    return torch.from_numpy(out_idx), torch.from_numpy(out_score), torch.from_numpy(done)
