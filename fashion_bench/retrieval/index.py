"""Exact inner-product ranking primitives shared by the metrics and the protocols.

The definition every result follows: a query ranks the gallery by descending inner product, computed in
float64 from the values as given, ties going to the lower gallery index. Fast paths compute float32 scores
(torch GEMMs; faiss for a CPU top-k alone) and bound their error (:func:`error_band`); whatever lies within that band of a decision is
rescored in float64 (:func:`pair_scores`), so fast and exact paths agree up to float64 rounding (exactly,
for inputs whose dot products are exactly representable, e.g. quantised embeddings).

Scores are computed where the embeddings are (a CUDA device or the CPU); index lists (:class:`Csr`) and
results live on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

Backend = Literal["fast", "exact"]
BACKENDS = ("fast", "exact")

SCORE_BLOCK = 1 << 20  # float32 scores per GEMM block (4 MB)
CHUNK_BLOCK = 1 << 20  # float32 scores per row chunk of a GEMM block that consumers visit (4 MB: few Python steps)
EXACT_BLOCK = 1 << 21  # float64 scores per block in the exact reference path
PAIR_BLOCK = 1024  # (query, item) pairs rescored at once (larger blocks fall out of cache)
QUERY_BLOCK = 2048  # queries per block of the fast paths
GALLERY_ALIGN = 1024  # gallery block widths are multiples of this (odd widths slow MKL's sgemm down)
TOPK_MARGIN = 16  # float32 candidates kept beyond k, so that the exact top k is certified from them
SEGMENT = 4  # top-k: columns per segment whose max decides whether the segment is merged
MAX_NORM = 1e18  # larger rows would overflow float32 scores

Consumer = Callable[[Tensor, int, int], None]  # (chunk of scores, first local row, first gallery item)


@dataclass(frozen=True)
class Embeddings:
    """A validated [N, D] embedding matrix, on the device it came on (arrays: the CPU)."""

    f32: Tensor  # contiguous float32, for GEMMs
    exact: Tensor  # the values as given (float32 or float64), for float64 rescoring
    norms: Tensor  # float64 row L2 norms, for the float32 error band

    @classmethod
    def prepare(cls, x: Any, name: str) -> Embeddings:
        """Convert a tensor or array (any float dtype) without copying float32 input."""
        t = x.detach() if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        if t.ndim != 2:
            raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must hold floats, got {t.dtype}")
        exact = (t if t.dtype in (torch.float32, torch.float64) else t.float()).contiguous()
        norms = torch.cat([torch.linalg.vector_norm(c, dim=1) for c in _row_chunks(exact)]).double()
        suspect = (~torch.isfinite(norms)).nonzero().flatten()
        rows = suspect[~torch.isfinite(exact[suspect]).all(1)]
        if rows.numel():
            raise ValueError(
                f"{name} has {rows.numel()} of {len(norms)} rows with NaN or infinite values "
                f"(first: row {rows[0].item()})"
            )
        if norms.numel() and not norms.max() <= MAX_NORM:
            raise ValueError(f"{name} has rows with L2 norm above {MAX_NORM:g}, too large to score in float32")
        return cls(exact if exact.dtype == torch.float32 else exact.float(), exact, norms)

    def __len__(self) -> int:
        return self.f32.shape[0]

    @property
    def dim(self) -> int:
        return self.f32.shape[1]

    @property
    def device(self) -> torch.device:
        return self.f32.device


def _row_chunks(x: Tensor) -> Sequence[Tensor]:
    return x.split(max(1, SCORE_BLOCK // max(1, x.shape[1]))) if len(x) else [x]


def check_pair(query: Embeddings, gallery: Embeddings) -> None:
    if query.dim != gallery.dim:
        raise ValueError(
            f"query and gallery embedding dimensions differ: query_emb has shape {tuple(query.f32.shape)}, "
            f"gallery_emb has shape {tuple(gallery.f32.shape)}"
        )
    if query.device != gallery.device:
        raise ValueError(f"query_emb is on {query.device} but gallery_emb is on {gallery.device}")
    if len(gallery) == 0:
        raise ValueError("the gallery is empty: gallery_emb has 0 rows")


@dataclass(frozen=True)
class Csr:
    """Ragged rows of sorted, unique ints in [0, width): per-query gallery indices, or ranks."""

    ptr: Tensor  # [num_rows + 1] int64
    idx: Tensor  # [nnz] int64
    width: int

    @classmethod
    def from_pairs(cls, rows: Tensor, vals: Tensor, num_rows: int, width: int) -> Csr:
        keys = torch.unique(rows * width + vals)
        key_rows = keys // width
        ptr = torch.zeros(num_rows + 1, dtype=torch.int64)
        ptr[1:] = torch.bincount(key_rows, minlength=num_rows).cumsum(0)
        return cls(ptr, keys - key_rows * width, width)

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]], num_rows: int, width: int, name: str) -> Csr:
        """Validate per-query lists of gallery indices; duplicates collapse, order does not matter."""
        if len(lists) != num_rows:
            raise ValueError(f"{name} has {len(lists)} entries for {num_rows} queries")
        try:
            lengths = [len(row) for row in lists]
        except TypeError:
            raise ValueError(f"{name} must hold one list of gallery indices per query") from None
        vals = torch.tensor(list(chain.from_iterable(lists)))
        if vals.numel() and (vals.dtype == torch.bool or vals.is_floating_point() or vals.is_complex()):
            raise ValueError(f"{name} must hold integer gallery indices, got {vals.dtype}")
        vals = vals.long()
        rows = torch.repeat_interleave(torch.arange(num_rows), torch.tensor(lengths, dtype=torch.int64))
        bad = ((vals < 0) | (vals >= width)).nonzero().flatten()
        if bad.numel():
            first = bad[0].item()
            raise ValueError(
                f"{name}[{rows[first].item()}] contains {vals[first].item()}, outside the gallery index "
                f"range [0, {width})"
            )
        return cls.from_pairs(rows, vals, num_rows, width)

    @property
    def num_rows(self) -> int:
        return self.ptr.numel() - 1

    def counts(self) -> Tensor:
        return self.ptr.diff()

    @cached_property
    def row_ids(self) -> Tensor:
        return torch.repeat_interleave(torch.arange(self.num_rows), self.counts())

    @cached_property
    def keys(self) -> Tensor:
        return self.row_ids * self.width + self.idx

    def contains(self, rows: Tensor, vals: Tensor) -> Tensor:
        """Elementwise: is ``vals`` in row ``rows`` (broadcast shapes; negative vals are never contained)."""
        if self.idx.numel() == 0:
            return torch.zeros(torch.broadcast_shapes(rows.shape, vals.shape), dtype=torch.bool)
        keys = rows * self.width + vals
        pos = torch.searchsorted(self.keys, keys).clamp_(max=self.keys.numel() - 1)
        return (self.keys[pos] == keys) & (vals >= 0)

    def entries(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(position of the row within ``rows``, position within the row, value) of every entry of the
        given rows, row by row."""
        counts = self.counts()[rows]
        local = torch.repeat_interleave(torch.arange(len(rows)), counts)
        within = torch.arange(local.numel()) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        return local, within, self.idx[self.ptr[rows][local] + within]

    def padded(self, rows: Tensor) -> Tensor:
        """[len(rows), max count] values of the given rows, padded with -1."""
        local, within, vals = self.entries(rows)
        width = int(self.counts()[rows].max()) if len(rows) else 0
        out = torch.full((len(rows), width), -1, dtype=torch.int64)
        out[local, within] = vals
        return out

    def select(self, keep: Tensor) -> Csr:
        return Csr.from_pairs(self.row_ids[keep], self.idx[keep], self.num_rows, self.width)

    def take_rows(self, rows: Tensor) -> Csr:
        local, _, vals = self.entries(rows)
        return Csr.from_pairs(local, vals, len(rows), self.width)

    def union(self, other: Csr) -> Csr:
        return Csr.from_pairs(
            torch.cat([self.row_ids, other.row_ids]), torch.cat([self.idx, other.idx]), self.num_rows, self.width
        )

    def transpose(self) -> Csr:
        """Row i of the result lists the rows that contain i (e.g. image -> its matching texts)."""
        return Csr.from_pairs(self.idx, self.row_ids, self.width, self.num_rows)


@dataclass(frozen=True)
class Exclusions:
    """Gallery items removed from each query's ranking: explicit lists, and optionally a per-group mask
    (``allowed[group[q]]`` lists the items query q may see), which keeps domain rules O(groups x G)."""

    lists: Csr
    allowed: Tensor | None = None  # [num_groups, G] bool
    group: Tensor | None = None  # [Q] int64

    def contains(self, rows: Tensor, vals: Tensor) -> Tensor:
        hit = self.lists.contains(rows, vals)
        if self.allowed is not None:
            hit |= ~self.allowed[self.group[rows], vals.clamp(min=0)]
        return hit

    def masker(self, rows: Tensor, device: torch.device) -> Consumer:
        """A consumer setting the excluded entries of a chunk of scores (local rows ``row0`` on of the query
        rows ``rows``, gallery items ``g0`` on) to -inf: the listed items by index, a group's mask whole."""
        local, _, cols = self.lists.entries(rows)
        bounds = [0, *self.lists.counts()[rows].cumsum(0).tolist()]  # row r's entries: bounds[r]:bounds[r + 1]
        local, cols = local.to(device), cols.to(device)
        hidden = None if self.allowed is None else (~self.allowed).to(device)
        groups = None if self.group is None else self.group[rows].to(device)

        def apply(chunk: Tensor, row0: int, g0: int) -> None:
            e0, e1 = bounds[row0], bounds[row0 + len(chunk)]
            if e1 > e0:
                r, c = local[e0:e1] - row0, cols[e0:e1] - g0
                inside = (c >= 0) & (c < chunk.shape[1])
                chunk[r[inside], c[inside]] = -torch.inf
            if hidden is not None:
                chunk.masked_fill_(hidden[groups[row0 : row0 + len(chunk)], g0 : g0 + chunk.shape[1]], -torch.inf)

        return apply

    def with_lists(self, lists: Csr) -> Exclusions:
        return Exclusions(lists, self.allowed, self.group)


def error_band(query: Embeddings, gallery: Embeddings) -> Tensor:
    """[Q] float64 bound on |float32 score - float64 score| for any summation order (any BLAS, with FMA).

    Rounding the inputs to float32 and a D-term dot product cost at most gamma_{D+2} * sum|x_k y_k|
    <= gamma_{D+2} * |x| |y| (Cauchy-Schwarz); a small absolute term covers underflow. Widened by 2%.
    """
    d = query.dim
    unit = 2.0**-24
    gamma = (d + 2) * unit / (1 - (d + 2) * unit)
    g_norm = gallery.norms.max()
    return 1.02 * (gamma * query.norms * g_norm + d * 2.0**-140 * (1 + query.norms + g_norm))


def float32_bound(x: Tensor, up: bool) -> Tensor:
    """The float32 nearest to float64 ``x`` that is at least (``up``) or at most x: a threshold that keeps
    float32 comparisons on the safe side of x."""
    y = x.float()
    off = y.double() < x if up else y.double() > x
    return torch.where(off, torch.nextafter(y, torch.full_like(y, torch.inf if up else -torch.inf)), y)


def pair_scores(query: Embeddings, gallery: Embeddings, rows: Tensor, cols: Tensor) -> Tensor:
    """Exact float64 scores of (query row, gallery item) pairs, any shape; pairs with col < 0 get -inf.

    Every pair is one elementwise product summed over D in a fixed order, never a GEMM, so equal vectors
    score equal."""
    rows, cols = rows.to(query.device), cols.to(query.device)
    if query.device.type == "cpu":
        from fashion_bench.retrieval.kernels import pair_scores as cpu_pair_scores

        if rows.ndim == 2 and rows.shape[1] == 1 and cols.ndim == 2:  # each query row against its own items
            return cpu_pair_scores(query.exact, gallery.exact, rows[:, 0].contiguous(), cols.contiguous())
        flat_rows = rows.expand_as(cols).reshape(-1).contiguous()
        return cpu_pair_scores(query.exact, gallery.exact, flat_rows, cols.reshape(-1, 1).contiguous()).view(cols.shape)
    if rows.ndim == 2 and rows.shape[1] == 1 and cols.ndim == 2:
        return _row_pair_scores(query, gallery, rows[:, 0], cols)
    flat_rows, flat_cols = rows.expand_as(cols).reshape(-1), cols.reshape(-1)
    valid = flat_cols >= 0
    out = torch.full(flat_cols.shape, -torch.inf, dtype=torch.float64, device=query.device)
    for part in valid.nonzero().flatten().split(PAIR_BLOCK):
        q = query.exact[flat_rows[part]].double()
        out[part] = (q * gallery.exact[flat_cols[part]].double()).sum(1)
    return out.view(cols.shape)


def _row_pair_scores(query: Embeddings, gallery: Embeddings, rows: Tensor, cols: Tensor) -> Tensor:
    """:func:`pair_scores` of each query row against its own list of items [n, m]: the query row is
    converted once, and blocks of rows stay in cache."""
    out = torch.empty(cols.shape, dtype=torch.float64, device=query.device)
    step = max(1, PAIR_BLOCK * 256 // max(1, cols.shape[1] * query.dim))  # 2 MB of float64 products
    for r0 in range(0, len(rows), step):
        c = cols[r0 : r0 + step]
        q = query.exact[rows[r0 : r0 + step]].double()[:, None, :]
        out[r0 : r0 + step] = (gallery.exact[c.clamp(min=0)].double() * q).sum(2)
    return out.masked_fill_(cols < 0, -torch.inf)


def order_candidates(cand: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row's candidates by (score desc, index asc); -inf scores are dropped to the end as -1."""
    by_index = cand.argsort(dim=1, stable=True)
    cand, scores = cand.gather(1, by_index), scores.gather(1, by_index)
    by_score = scores.argsort(dim=1, descending=True, stable=True)
    cand, scores = cand.gather(1, by_score), scores.gather(1, by_score)
    return cand.masked_fill(scores == -torch.inf, -1), scores


def order_nearly_sorted(cand: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`order_candidates` for rows nearly in that order already (candidates by float32 score, with
    their float64 scores): on a CPU by insertion (kernels.py), the rows that would need many moves by
    :func:`order_candidates`."""
    if cand.device.type != "cpu":
        return order_candidates(cand, scores)
    from fashion_bench.retrieval.kernels import order_rows

    order, sorted_scores, done = order_rows(cand.contiguous(), scores.contiguous())
    redo = (~done).nonzero()[:, 0]
    if len(redo):
        order[redo], sorted_scores[redo] = order_candidates(cand[redo], scores[redo])
    return order, sorted_scores


def score_blocks(query: Embeddings, gallery: Embeddings, rows: Tensor) -> Iterator[tuple[int, Tensor]]:
    """(g0, float32 scores of the query rows against gallery[g0:g0+n]) per block, contiguous; the buffer is
    reused."""
    q = query.f32[rows.to(query.device)]
    step = max(GALLERY_ALIGN, SCORE_BLOCK // max(1, len(q)) // GALLERY_ALIGN * GALLERY_ALIGN)
    buffer = torch.empty(len(q) * min(step, len(gallery)), device=query.device)
    for g0 in range(0, len(gallery), step):
        g = gallery.f32[g0 : g0 + step]
        block = buffer[: len(q) * len(g)].view(len(q), len(g))
        _float32_mm(q, g.T, block)
        yield g0, block


def _float32_mm(a: Tensor, b: Tensor, out: Tensor) -> None:
    """A true float32 GEMM, whatever the process chose for speed (TF32 / bfloat16 would void the band)."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        torch.mm(a, b, out=out)
    finally:
        torch.set_float32_matmul_precision(precision)


def scan(query: Embeddings, gallery: Embeddings, rows: Tensor, consumers: Sequence[Consumer]) -> None:
    """Show every consumer, in order, the float32 scores of the query ``rows`` against the whole gallery:
    one GEMM per block, then row chunks small enough to stay in cache while the consumers read them."""
    for g0, block in score_blocks(query, gallery, rows):
        step = max(1, CHUNK_BLOCK // block.shape[1])
        for row0 in range(0, len(block), step):
            chunk = block[row0 : row0 + step]
            for consume in consumers:
                consume(chunk, row0, g0)


def exact_orders(
    query: Embeddings, gallery: Embeddings, exclusions: Exclusions, rows: Tensor
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Reference path: (rows, full ranking [n, G] padded with -1, float64 scores) per block of queries,
    by sorting the float64 scores of every gallery item. Scores come from :func:`pair_scores`, not a
    GEMM, whose result for a pair can depend on the pair's position (duplicated rows must tie)."""
    size = len(gallery)
    items = torch.arange(size)
    for chunk in rows.split(max(1, EXACT_BLOCK // size)):
        scores = pair_scores(query, gallery, chunk[:, None], items.expand(len(chunk), size)).cpu()
        exclusions.masker(chunk, scores.device)(scores, 0, 0)
        order, sorted_scores = order_candidates(items.expand(len(chunk), size), scores)
        yield chunk, order, sorted_scores


def segment_columns(chunk: Tensor, floor: Tensor, size: int, most: float = 1.0) -> Tensor | None:
    """Per row, the columns of the chunk's segments whose max exceeds the row's ``floor`` [rows, 1], padded
    with -1 (a segment: ``size`` strided columns i, i + stride, ...; the last columns that form no segment
    are always included); None when more than the fraction ``most`` of the segments qualify.

    One max per segment costs about one pass over the chunk and lets the caller skip every item that
    cannot exceed the floor."""
    stride = chunk.shape[1] // size
    hit = chunk[:, : stride * size].unflatten(1, (size, stride)).amax(1) > floor
    r, i = hit.nonzero(as_tuple=True)
    if len(r) > most * hit.numel():
        return None
    hits = torch.bincount(r, minlength=len(chunk))
    slot = torch.arange(len(r), device=chunk.device) - (hits.cumsum(0) - hits)[r]
    width = int(hits.max()) if len(r) else 0
    cols = torch.full((len(chunk), width, size), -1, dtype=torch.int64, device=chunk.device)
    cols[r, slot] = i[:, None] + stride * torch.arange(size, device=chunk.device)
    tail = torch.arange(stride * size, chunk.shape[1], device=chunk.device).expand(len(chunk), -1)
    return torch.cat([cols.flatten(1), tail], 1)


def gather_columns(chunk: Tensor, cols: Tensor) -> Tensor:
    """``chunk``'s values at ``cols`` (per row), -inf at the -1 pads."""
    return chunk.gather(1, cols.clamp(min=0)).masked_fill_(cols < 0, -torch.inf)


class TopK:
    """A consumer keeping, per query row, the float32 top ``k + TOPK_MARGIN`` of the chunks it is shown
    (excluded items already at -inf); :meth:`write` turns them into the exact top k.

    Only the segments (:func:`segment_columns`) that hold an item above the row's current last candidate
    are merged; at the start (no candidates yet) every segment qualifies.
    """

    def __init__(self, n_rows: int, k: int, device: torch.device) -> None:
        self.k, width = k, k + TOPK_MARGIN
        self.idx = torch.full((n_rows, width), -1, dtype=torch.int64, device=device)
        self.score = torch.full((n_rows, width), -torch.inf, device=device)

    def __call__(self, chunk: Tensor, row0: int, g0: int) -> None:
        rows = slice(row0, row0 + len(chunk))
        cols = segment_columns(chunk, self.score[rows, -1:], SEGMENT)
        if cols is not None and cols.shape[1]:
            best, pos = torch.cat([self.score[rows], gather_columns(chunk, cols)], 1).topk(self.score.shape[1], dim=1)
            self.idx[rows] = torch.cat([self.idx[rows], cols + g0], 1).gather(1, pos)
            self.score[rows] = best

    def write(self, query: Embeddings, gallery: Embeddings, rows: Tensor, idx: Tensor, scores: Tensor) -> Tensor:
        """Fill ``idx``/``scores`` rows from the candidates rescored in float64; returns the rows not certified.

        Only the candidates that can belong to the top k are rescored: the float32 top k and those within
        twice the error band ``b`` below the k-th float32 score ``s``. Any item scoring below ``s - 2b`` in
        float32 scores below each of the first k in float64, so it cannot join them. A row is certified when
        its last float32 candidate is below ``s - 2b`` (every item that could join is a candidate), or is
        -inf (every non-excluded item is a candidate).
        """
        cand, score = self.candidates()
        band = error_band(query, gallery)[rows.to(query.device)]
        reach = score[:, self.k - 1].double() - 2 * band
        needed = score.double() >= reach[:, None]  # a prefix of each row (candidates by descending score)
        width = max(self.k, int(needed.sum(1).max())) if len(rows) else self.k
        cand = cand[:, :width].masked_fill(~needed[:, :width], -1)
        order, sorted_scores = order_nearly_sorted(cand, pair_scores(query, gallery, rows[:, None], cand))
        floor = score[:, -1].double()
        sure = (floor == -torch.inf) | (floor < reach)
        idx[rows] = order[:, : self.k].cpu()
        scores[rows] = sorted_scores[:, : self.k].cpu()
        return rows[~sure.cpu()]

    def candidates(self) -> tuple[Tensor, Tensor]:
        """Per row, the candidates (padded with -1) and their float32 scores (-inf at the pads), by score."""
        return self.idx.masked_fill(self.score == -torch.inf, -1), self.score


class BufferTopK(TopK):
    """On a CPU, the same candidates kept by the numba selection (kernels.py :class:`Selection`) while each
    chunk is in cache: per row a floor and a buffer of the items above it, reduced to the best when full."""

    def __init__(self, n_rows: int, k: int) -> None:
        from fashion_bench.retrieval.kernels import Selection

        self.k = k
        self.selection = Selection(n_rows, k + TOPK_MARGIN)

    def __call__(self, chunk: Tensor, row0: int, g0: int) -> None:
        self.selection.add(chunk, row0, g0)

    def segments(self, row0: int, g0: int) -> tuple[np.ndarray, int] | None:
        """The segment maxima of the chunk just selected from, for the rank counter (kernels.py)."""
        return self.selection.segments(row0, g0)

    def candidates(self) -> tuple[Tensor, Tensor]:
        return self.selection.best()


def topk(
    query: Embeddings, gallery: Embeddings, k: int, exclusions: Exclusions, backend: Backend = "fast"
) -> tuple[Tensor, Tensor]:
    """Each query's top k gallery items after exclusions: (indices [Q, k] int64 padded with -1,
    float64 scores [Q, k] padded with -inf)."""
    idx, scores = empty_topk(len(query), k)
    if k == 0 or len(query) == 0:
        return idx, scores
    failed = torch.arange(len(query))
    if backend == "fast" and query.device.type == "cpu":  # faiss's top-k beats the block merge on a CPU
        failed = _faiss_topk(query, gallery, k, exclusions, idx, scores)
    elif backend == "fast":
        failed = torch.cat([_block_topk(query, gallery, k, exclusions, rows, idx, scores)
                            for rows in failed.split(QUERY_BLOCK)])
    fill_exact_topk(query, gallery, exclusions, failed, idx, scores)
    return idx, scores


def empty_topk(n_rows: int, k: int) -> tuple[Tensor, Tensor]:
    return torch.full((n_rows, k), -1, dtype=torch.int64), torch.full((n_rows, k), -torch.inf, dtype=torch.float64)


def _block_topk(
    query: Embeddings, gallery: Embeddings, k: int, exclusions: Exclusions, rows: Tensor, idx: Tensor, scores: Tensor
) -> Tensor:
    tops = TopK(len(rows), k, query.device)
    scan(query, gallery, rows, [exclusions.masker(rows, query.device), tops])
    return tops.write(query, gallery, rows, idx, scores)


def fill_exact_topk(
    query: Embeddings, gallery: Embeddings, exclusions: Exclusions, rows: Tensor, idx: Tensor, scores: Tensor
) -> None:
    """The reference path for the given rows of ``idx``/``scores`` (the rows the fast path did not certify)."""
    width = min(idx.shape[1], len(gallery))
    for chunk, order, sorted_scores in exact_orders(query, gallery, exclusions, rows):
        idx[chunk, :width] = order[:, :width]
        scores[chunk, :width] = sorted_scores[:, :width]


def _faiss_topk(
    query: Embeddings, gallery: Embeddings, k: int, exclusions: Exclusions, idx: Tensor, scores: Tensor
) -> Tensor:
    """Fill ``idx``/``scores`` from faiss candidates rescored in float64; returns the rows not certified.

    faiss returns the top kk by float32 score in an unspecified tie order. A row is certified when its k-th
    item (after exclusions, exact order) scores above the kk-th float32 candidate plus the error band: then
    no item outside the candidates can belong to the top k.
    """
    import faiss

    size = len(gallery)
    band = error_band(query, gallery)
    excluded = exclusions.lists.counts()
    failed = []
    for rows in torch.arange(len(query)).split(QUERY_BLOCK):
        kk = min(size, k + TOPK_MARGIN + int(excluded[rows].max()))
        d32, cand = faiss.knn(query.f32[rows].numpy(), gallery.f32.numpy(), kk, metric=faiss.METRIC_INNER_PRODUCT)
        cand = torch.from_numpy(cand)
        exact = pair_scores(query, gallery, rows[:, None], cand)
        exact.masked_fill_(exclusions.contains(rows[:, None], cand), -torch.inf)
        order, sorted_scores = order_candidates(cand, exact)
        width = min(k, kk)
        idx[rows, :width] = order[:, :width]
        scores[rows, :width] = sorted_scores[:, :width]
        if kk < size:
            sure = sorted_scores[:, k - 1] > torch.from_numpy(d32[:, -1]).double() + band[rows]
            failed.append(rows[~sure])
    return torch.cat(failed) if failed else torch.empty(0, dtype=torch.int64)
