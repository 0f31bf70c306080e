"""Retrieval metrics from the exact ranks of each query's positives.

Every metric derives from one quantity: the 1-based rank of each positive in the query's ranking after
exclusions, ``rank(p) = 1 + #{non-excluded g: s_g > s_p, or s_g == s_p and g < p}``. R@k is then
``min rank <= k`` and AP over the full ranking is the mean over positives of (#positives ranked at or above p)
/ rank(p). The fast backend counts these ranks block by block without sorting or storing a Q x G matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fashion_bench.retrieval.index import (
    BACKENDS,
    QUERY_BLOCK,
    Backend,
    BufferTopK,
    Csr,
    Embeddings,
    Exclusions,
    TopK,
    check_pair,
    empty_topk,
    error_band,
    exact_orders,
    fill_exact_topk,
    float32_bound,
    order_candidates,
    pair_scores,
    scan,
    topk,
)
from fashion_bench.retrieval.protocols import check_ks
from fashion_bench.retrieval.threads import map_row_parts

DEFAULT_KS = (1, 5, 10, 50)
EPS64 = 2.0**-52
DENSE_BREAK = 1000  # torch path: count a row densely once more than 1/1000 of it per positive passes the prefilter
CPU_KERNELS = True  # count CPU chunks with the numba kernels (False: the torch path, as on a GPU)
Segments = Callable[[int, int], tuple[np.ndarray, int] | None]  # (row0, g0) -> (segment maxima, length)
CPU_TOPK = "kernel"  # CPU top-k in the rank pass: the numba selection ("torch": the segment merge, as on a GPU)


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def evaluate(
    query_emb: Any,
    gallery_emb: Any,
    positives: Sequence[Sequence[int]],
    *,
    exclude: Sequence[Sequence[int]] | None = None,
    ks: Iterable[int] = DEFAULT_KS,
    backend: Backend = "fast",
) -> dict[str, float]:
    """R@k (hit rate) for each k, mAP (full ranking), rank1 = R@1, num_queries and num_valid_queries (ints).

    ``query_emb`` [Q, D] and ``gallery_emb`` [G, D] (tensors or arrays, scored by inner product as given);
    ``positives`` / ``exclude``: per query, gallery indices. Queries without a non-excluded positive are
    skipped and counted out of num_valid_queries; with no valid query the metrics are NaN. ``backend``:
    "fast" (float32 GEMM blocks with exact float64 resolution of near ties) or "exact" (float64 scores and
    a full sort per query, the reference); both give the same values.
    """
    ks = check_ks(ks)
    check_backend(backend)
    query = Embeddings.prepare(query_emb, "query_emb")
    gallery = Embeddings.prepare(gallery_emb, "gallery_emb")
    check_pair(query, gallery)
    pos = Csr.from_lists(positives, len(query), len(gallery), "positives")
    excl = Csr.from_lists([[]] * len(query) if exclude is None else exclude, len(query), len(gallery), "exclude")
    return summarise(rank_positives(query, gallery, pos, Exclusions(excl), backend), ks)


def summarise(ranks: Csr, ks: Sequence[int]) -> dict[str, float]:
    """Metrics from per-query sorted positive ranks; rows without ranks are the invalid queries."""
    counts = ranks.counts()
    valid = counts > 0
    within = torch.arange(ranks.idx.numel()) - torch.repeat_interleave(ranks.ptr[:-1], counts)
    precision = (within + 1) / ranks.idx.double()
    ap = torch.zeros(ranks.num_rows, dtype=torch.float64).index_add_(0, ranks.row_ids, precision)
    ap = ap[valid] / counts[valid]
    first = ranks.idx[ranks.ptr[:-1][valid]]
    n_valid = int(valid.sum())

    def mean(x: Tensor) -> float:
        return x.double().mean().item() if n_valid else math.nan

    out = {f"R@{k}": mean(first <= k) for k in ks}
    out["mAP"] = mean(ap)
    out["rank1"] = mean(first <= 1)
    out["num_queries"] = ranks.num_rows
    out["num_valid_queries"] = n_valid
    return out


def rank_positives(
    query: Embeddings, gallery: Embeddings, positives: Csr, exclusions: Exclusions, backend: Backend
) -> Csr:
    """Per query, the sorted ranks of its non-excluded positives in its ranking after exclusions."""
    return rank_with_topk(query, gallery, positives, exclusions, 0, backend)[0]


def rank_with_topk(
    query: Embeddings, gallery: Embeddings, positives: Csr, exclusions: Exclusions, k: int, backend: Backend
) -> tuple[Csr, Tensor, Tensor]:
    """:func:`rank_positives` and :func:`~fashion_bench.retrieval.index.topk` ``(k)`` at once: the fast
    backend computes each score block once for both."""
    positives = positives.select(~exclusions.contains(positives.row_ids, positives.idx))
    if backend == "exact":
        orders = exact_orders(query, gallery, exclusions, torch.arange(len(query)))
        pairs = [ranks_in_order(order, rows, positives) for rows, order, _ in orders]
        idx, scores = topk(query, gallery, k, exclusions, backend)
    else:
        pairs, idx, scores = _scan_ranks(query, gallery, positives, exclusions, k)
    empty = torch.empty(0, dtype=torch.int64)
    rows, ranks = (torch.cat(x) for x in zip((empty, empty), *pairs, strict=True))
    return Csr.from_pairs(rows, ranks, len(query), len(gallery) + 1), idx, scores


def _scan_ranks(
    query: Embeddings, gallery: Embeddings, positives: Csr, exclusions: Exclusions, k: int
) -> tuple[list[tuple[Tensor, Tensor]], Tensor, Tensor]:
    """The fast path: queries in blocks, most positives first (so that a block's rows with a j-th positive
    are a prefix); queries without positives are scanned only for the top k."""
    counts = positives.counts()
    order = torch.argsort(counts, descending=True, stable=True)
    if k == 0:
        order = order[: int((counts > 0).sum())]
    idx, scores = empty_topk(len(query), k)

    def scan_part(part: Tensor) -> tuple[list[tuple[Tensor, Tensor]], list[Tensor]]:
        part_pairs, part_failed = [], []
        for rows in part.split(QUERY_BLOCK):
            tops = [_top_k(len(rows), k, query.device)] if k else []
            segments = tops[0].segments if tops and isinstance(tops[0], BufferTopK) else None
            counter = _RankCounter(query, gallery, positives, rows, segments)
            scan(query, gallery, rows, [exclusions.masker(rows, query.device), *tops, counter])
            part_pairs.append(counter.ranks())
            part_failed += [t.write(query, gallery, rows, idx, scores) for t in tops]
        return part_pairs, part_failed

    pairs, failed = [], []
    for part_pairs, part_failed in map_row_parts(scan_part, order, query.device):
        pairs += part_pairs
        failed += part_failed
    if k:
        fill_exact_topk(query, gallery, exclusions, torch.cat(failed), idx, scores)
    return pairs, idx, scores


def _top_k(n_rows: int, k: int, device: torch.device) -> TopK:
    return BufferTopK(n_rows, k) if device.type == "cpu" and CPU_TOPK == "kernel" else TopK(n_rows, k, device)


def rank_within(
    query: Embeddings, gallery: Embeddings, candidates: Csr, positives: Csr, exclusions: Exclusions
) -> tuple[Tensor, Csr]:
    """Rank only each query's own candidates (CIRR's subset) after exclusions: (order [Q, m] padded with
    -1, ranks of the positives among them)."""
    rows = torch.arange(len(query))
    cand = candidates.padded(rows)
    scores = pair_scores(query, gallery, rows[:, None], cand).cpu()
    scores.masked_fill_(exclusions.contains(rows[:, None], cand), -torch.inf)
    order, _ = order_candidates(cand, scores)
    pos_rows, ranks = ranks_in_order(order, rows, positives)
    return order, Csr.from_pairs(pos_rows, ranks, len(query), cand.shape[1] + 1)


def ranks_in_order(order: Tensor, rows: Tensor, positives: Csr) -> tuple[Tensor, Tensor]:
    """(query, 1-based rank) of every positive found in the ranked lists ``order`` [len(rows), m]."""
    local, col = positives.contains(rows[:, None], order).nonzero(as_tuple=True)
    return rows[local], col + 1


class _RankCounter:
    """A consumer counting, for each positive of a block of queries, the non-excluded non-positive items
    ranked above it (it hides the positives from the chunks it is shown, after the exclusions).

    Positives are ordered exactly among themselves (float64). Other items are compared in float32 against
    thresholds at each positive's score plus or minus the error band; an item between the two is rescored in
    float64 and compared exactly, ties going to the lower index. Per chunk (in cache), one of two equivalent
    strategies runs, whichever touches less memory:

    * sparse: only items above the lowest positive minus the band can beat a positive (the prefilter);
      they are extracted, and a binary search on per-row keys ``row * width - score`` tells how many
      positives each item is certainly below and possibly below;
    * dense: per positive, two thresholded counts over the chunk; cheaper when many items pass the
      prefilter (weak embeddings whose positives rank deep).
    """

    def __init__(
        self, query: Embeddings, gallery: Embeddings, positives: Csr, rows: Tensor, segments: Segments | None = None
    ) -> None:
        dev = query.device
        self.segments = segments  # CPU: the segment maxima of the chunk the top-k selection has just read
        self.query, self.gallery, self.rows = query, gallery, rows.to(dev)
        self.hide = Exclusions(positives).masker(rows, dev)
        pidx = positives.padded(rows).to(dev)
        self.pidx, self.pscore = order_candidates(pidx, pair_scores(query, gallery, self.rows[:, None], pidx))
        present = self.pidx >= 0
        n_pos = positives.counts()[rows]
        self.slots = self.pidx.shape[1]
        self.with_slot = [int((n_pos > j).sum()) for j in range(self.slots)]  # rows with a j-th positive: a prefix
        band = error_band(query, gallery)[self.rows]
        # above `upper` an item beats the positive, below `lower` it does not; +inf counts nothing
        self.upper = torch.where(present, float32_bound(self.pscore + band[:, None], up=True), torch.inf)
        self.lower = torch.where(present, float32_bound(self.pscore - band[:, None], up=False), torch.inf)
        n_pos = n_pos.to(dev)
        self.below_lower = torch.nextafter(self.lower, torch.full_like(self.lower, -torch.inf))
        lowest = torch.where(n_pos > 0, n_pos - 1, self.slots)[:, None]  # a row without positives: +inf
        self.threshold = torch.cat([self.lower, self.lower.new_full((len(rows), 1), torch.inf)], 1).gather(1, lowest)
        bound = query.norms[self.rows].max() * gallery.norms.max() + 2 * band.max() if len(rows) else 0.0
        self.width = 2 * bound + 1
        self.keys = (torch.arange(len(rows), device=dev)[:, None] * self.width - self.pscore)[present]
        self.offsets = n_pos.cumsum(0) - n_pos
        self.slack = band + 8 * EPS64 * (len(rows) + 1) * self.width
        self.beaten = torch.zeros(len(rows), self.slots, dtype=torch.int64, device=dev)
        # items by the number of positives above them (sparse strategy)
        self.below = torch.zeros(len(rows) * (self.slots + 1), dtype=torch.int64, device=dev)
        self.n_pos = n_pos.float()
        self.n_slots = n_pos.int()
        self.banded: list[tuple[Tensor, Tensor, Tensor]] = []  # (row, slot, item) to compare exactly, dense
        self._scratch = torch.empty(0, device=dev)
        self._counts = torch.empty(2, self.slots, len(rows), device=dev)  # dense: per slot, (above, reach)
        self._arrays: list[np.ndarray] | None = None  # CPU kernels: numpy views of the per-row tensors

    def ranks(self) -> tuple[Tensor, Tensor]:
        """(query, rank) of every positive, on the CPU."""
        if self.banded:
            r, j, items = (torch.cat(x) for x in zip(*self.banded, strict=True))
            self.beaten.index_put_((r, j), 1 - self._above(r, items, j), accumulate=True)
        below = self.below.view(len(self.rows), self.slots + 1).cumsum(1)[:, :-1]
        ranks = 1 + torch.arange(self.slots, device=self.rows.device) + self.beaten + below
        present = self.pidx >= 0
        return self.rows[:, None].expand_as(ranks)[present].cpu(), ranks[present].cpu()

    def __call__(self, chunk: Tensor, row0: int, g0: int) -> None:
        chunk = chunk[: max(0, (self.with_slot or [0])[0] - row0)]
        if not len(chunk):
            return
        rows = slice(row0, row0 + len(chunk))
        if CPU_KERNELS and chunk.device.type == "cpu":
            self._count(chunk, rows, g0)
            return
        self.hide(chunk, row0, g0)
        candidates = torch.ge(chunk, self.threshold[rows], out=self._buffer(chunk))
        passed = candidates.sum(1)  # float sums of flags: exact, a chunk is narrower than 2**24 items
        dense = passed * DENSE_BREAK > self.n_pos[rows] * chunk.shape[1]
        n_dense = int(dense.sum())
        if n_dense < len(chunk) and int(passed.sum()) > 0:
            if n_dense:
                candidates.masked_fill_(dense[:, None], 0)
            self._sparse(chunk, row0, g0, candidates)
        if n_dense == len(chunk):
            self._dense(chunk, torch.arange(row0, rows.stop, device=chunk.device), g0)
        elif n_dense:
            local = dense.nonzero()[:, 0]
            self._dense(chunk.index_select(0, local), local + row0, g0)

    def _count(self, chunk: Tensor, rows: slice, g0: int) -> None:
        """The CPU path: one kernel hides the positives and counts every slot of every row (kernels.py)."""
        from fashion_bench.retrieval.kernels import count_rows

        if self._arrays is None:  # numpy views, sliced per chunk at less cost than tensors
            self._arrays = [t.numpy() for t in (self.pidx, self.upper, self.lower, self.below_lower, self.n_slots,
                                                self.beaten)]
        *per_row, beaten = self._arrays
        _, band = count_rows(chunk, g0, *(a[rows] for a in per_row),
                             self.segments(rows.start, g0) if self.segments else None, above=beaten[rows])
        if band.shape[1]:
            self.banded.append((band[0] + rows.start, band[1], band[2] + g0))

    def _buffer(self, chunk: Tensor) -> Tensor:
        """Float scratch shaped like the chunk, reused: fresh tensors cost page faults every time."""
        if self._scratch.numel() < chunk.numel():
            self._scratch = torch.empty(chunk.numel(), device=chunk.device)
        return self._scratch[: chunk.numel()].view(chunk.shape)

    def _above(self, r: Tensor, items: Tensor, col: Tensor | None = None) -> Tensor:
        """Exactly, how many positives of local rows ``r`` rank above each item (only the positive in slot
        ``col``)."""
        s = pair_scores(self.query, self.gallery, self.rows[r], items)[:, None]
        p, v = self.pidx[r], self.pscore[r]
        if col is not None:
            p, v = p.gather(1, col[:, None]), v.gather(1, col[:, None])
        return ((v > s) | ((v == s) & (p < items[:, None]))).sum(1)

    def _sparse(self, chunk: Tensor, row0: int, g0: int, candidates: Tensor) -> None:
        r, c = candidates.nonzero(as_tuple=True)
        r = r + row0
        base, e = r * self.width - chunk[r - row0, c].double(), self.slack[r]
        above = torch.searchsorted(self.keys, base - e) - self.offsets[r]
        unsure = (torch.searchsorted(self.keys, base + e, right=True) - self.offsets[r] != above).nonzero()[:, 0]
        if unsure.numel():
            above[unsure] = self._above(r[unsure], c[unsure] + g0)
        self.below += torch.bincount(r * (self.slots + 1) + above, minlength=self.below.numel())

    def _dense(self, x: Tensor, r: Tensor, g0: int) -> None:
        """Rows ``r`` (ascending, so most positives first) of a chunk, ``x``: per positive slot, two
        thresholded counts (upper, and ``x >= lower`` as ``x > lower's float32 predecessor``), each one compare
        into an in-cache float flag buffer and one float sum. Only the rows whose two counts differ are searched
        for the items within the band."""
        flags = self._buffer(x)
        with_slot = torch.searchsorted(r, torch.tensor(self.with_slot, device=r.device)).tolist()
        slots = sum(n > 0 for n in with_slot)
        counts = self._counts[:, :slots, : len(r)]
        counts.zero_()
        upper, below_lower = self.upper[r], self.below_lower[r]
        for j in range(slots):
            n = with_slot[j]  # the rows with a j-th positive
            torch.sum(torch.gt(x[:n], upper[:n, j, None], out=flags[:n]), 1, out=counts[0, j, :n])
            torch.sum(torch.gt(x[:n], below_lower[:n, j, None], out=flags[:n]), 1, out=counts[1, j, :n])
        above, reach = counts[0], counts[1]
        self.beaten[:, :slots].index_add_(0, r, above.T.long())
        j, i = (reach != above).nonzero(as_tuple=True)
        if len(j):  # locate the items within the band, in these rows only
            near, rr = x.index_select(0, i), r[i]
            within = (near >= self.lower[rr, j, None]) & (near <= self.upper[rr, j, None])
            hit, c = within.nonzero(as_tuple=True)
            self.banded.append((rr[hit], j[hit], c + g0))
