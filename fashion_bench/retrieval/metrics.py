"""Retrieval metrics from the exact ranks of each query's positives.

Every metric derives from one quantity: the 1-based rank of each positive in the query's ranking after
exclusions, ``rank(p) = 1 + #{non-excluded g: s_g > s_p, or s_g == s_p and g < p}``. R@k is then
``min rank <= k`` and AP over the full ranking is the mean over positives of (#positives ranked at or above p)
/ rank(p). The fast backend counts these ranks block by block without sorting or storing a Q x G matrix.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from fashion_bench.retrieval.index import (
    BACKENDS,
    QUERY_BLOCK,
    Backend,
    Csr,
    Embeddings,
    Exclusions,
    check_pair,
    error_band,
    exact_orders,
    order_candidates,
    pair_scores,
    score_blocks,
)
from fashion_bench.retrieval.protocols import check_ks

DEFAULT_KS = (1, 5, 10, 50)
EPS64 = 2.0**-52
DENSE_BREAK = 32  # count densely once more than 1/32 of a block per positive passes the prefilter


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
    positives = positives.select(~exclusions.contains(positives.row_ids, positives.idx))
    all_rows = torch.arange(len(query))
    if backend == "exact":
        orders = exact_orders(query, gallery, exclusions, all_rows)
        pairs = [ranks_in_order(order, rows, positives) for rows, order, _ in orders]
    else:
        pairs = [_count_ranks(query, gallery, positives, exclusions, rows) for rows in all_rows.split(QUERY_BLOCK)]
    empty = torch.empty(0, dtype=torch.int64)
    rows, ranks = (torch.cat(x) for x in zip((empty, empty), *pairs, strict=True))
    return Csr.from_pairs(rows, ranks, len(query), len(gallery) + 1)


def rank_within(
    query: Embeddings, gallery: Embeddings, candidates: Csr, positives: Csr, exclusions: Exclusions
) -> tuple[Tensor, Csr]:
    """Rank only each query's own candidates (CIRR's subset) after exclusions: (order [Q, m] padded with
    -1, ranks of the positives among them)."""
    rows = torch.arange(len(query))
    cand = candidates.padded(rows)
    scores = pair_scores(query, gallery, rows[:, None], cand)
    scores.masked_fill_(exclusions.contains(rows[:, None], cand), -torch.inf)
    order, _ = order_candidates(cand, scores)
    pos_rows, ranks = ranks_in_order(order, rows, positives)
    return order, Csr.from_pairs(pos_rows, ranks, len(query), cand.shape[1] + 1)


def ranks_in_order(order: Tensor, rows: Tensor, positives: Csr) -> tuple[Tensor, Tensor]:
    """(query, 1-based rank) of every positive found in the ranked lists ``order`` [len(rows), m]."""
    local, col = positives.contains(rows[:, None], order).nonzero(as_tuple=True)
    return rows[local], col + 1


def _count_ranks(
    query: Embeddings, gallery: Embeddings, positives: Csr, exclusions: Exclusions, rows: Tensor
) -> tuple[Tensor, Tensor]:
    """Fast path for a block of consecutive queries: (query, rank) of every positive."""
    if not positives.counts()[rows].any():
        return rows[:0], rows[:0]
    counter = _RankCounter(query, gallery, positives, rows)
    hide = exclusions.with_lists(exclusions.lists.union(positives)).masker(rows)
    for g0, block in score_blocks(query, gallery, slice(int(rows[0]), int(rows[-1]) + 1)):
        hide(block, g0)
        counter.count(block, g0)
    return counter.ranks()


class _RankCounter:
    """Counts, for each positive of a block of queries, the non-excluded non-positive items ranked above it.

    Positives are ordered exactly among themselves (float64). Other items are compared in float32 with each
    positive's score widened by the error band; an item within the band of a positive is rescored in float64
    and compared exactly, ties going to the lower index. Per score block (with excluded items and the
    positives set to -inf), one of two equivalent strategies runs, whichever touches less memory:

    * sparse: only items above the lowest positive minus the band can beat a positive (the prefilter);
      they are extracted, and a binary search on per-row keys ``row * width - score`` tells how many
      positives each item is certainly below and possibly below;
    * dense: per positive, one thresholded count over the whole block; cheaper when many items pass the
      prefilter (weak embeddings whose positives rank deep).
    """

    def __init__(self, query: Embeddings, gallery: Embeddings, positives: Csr, rows: Tensor) -> None:
        self.query, self.gallery, self.rows = query, gallery, rows
        pidx = positives.padded(rows)
        self.pidx, self.pscore = order_candidates(pidx, pair_scores(query, gallery, rows[:, None], pidx))
        self.present = self.pidx >= 0
        self.slots = self.pidx.shape[1] + 1
        n_pos = self.present.sum(1)
        band = error_band(query, gallery)[rows]
        # float32 thresholds (rounding is far below the band): above `upper` an item beats the positive,
        # below `lower` it does not; +inf for missing positives counts nothing.
        self.upper = torch.where(self.present, self.pscore + 2 * band[:, None], torch.inf).float()
        self.lower = torch.where(self.present, self.pscore - 2 * band[:, None], torch.inf).float()
        self.threshold = self.lower.gather(1, (n_pos - 1).clamp(min=0)[:, None])
        bound = query.norms[rows].max() * gallery.norms.max() + 2 * band.max()
        self.width = 2 * bound + 1
        self.keys = (torch.arange(len(rows))[:, None] * self.width - self.pscore)[self.present]
        self.offsets = n_pos.cumsum(0) - n_pos
        self.slack = band + 8 * EPS64 * (len(rows) + 1) * self.width
        self.beaten = torch.zeros(len(rows), self.slots - 1, dtype=torch.int64)
        self.below = torch.zeros(len(rows) * self.slots, dtype=torch.int64)  # items by #positives above them
        self._mask: Tensor | None = None
        self._flags: Tensor | None = None

    def ranks(self) -> tuple[Tensor, Tensor]:
        beaten = self.beaten + self.below.view(len(self.rows), self.slots).cumsum(1)[:, :-1]
        ranks = 1 + torch.arange(self.slots - 1) + beaten
        return self.rows[:, None].expand_as(ranks)[self.present], ranks[self.present]

    def _above(self, r: Tensor, items: Tensor, col: int | None = None) -> Tensor:
        """Exactly, how many positives of local rows ``r`` rank above each item (only positive ``col``)."""
        s = pair_scores(self.query, self.gallery, self.rows[r], items)[:, None]
        p, v = self.pidx[r], self.pscore[r]
        if col is not None:
            p, v = p[:, col : col + 1], v[:, col : col + 1]
        return ((v > s) | ((v == s) & (p < items[:, None]))).sum(1)

    def count(self, block: Tensor, g0: int) -> None:
        """Count one score block, whose excluded items and positives are at -inf."""
        if self._mask is None:  # reused buffers: fresh block-sized tensors cost page faults every time
            self._mask = torch.empty(block.shape, dtype=torch.bool)
            self._flags = torch.empty(block.shape)
        mask, flags = self._mask[:, : block.shape[1]], self._flags[:, : block.shape[1]]
        candidates = torch.ge(block, self.threshold, out=mask)
        if int(torch.count_nonzero(candidates)) * DENSE_BREAK > candidates.numel() * (self.slots - 1):
            self._dense(block, g0, mask, flags)
        else:
            self._sparse(block, g0, candidates)

    def _sparse(self, block: Tensor, g0: int, candidates: Tensor) -> None:
        r, c = candidates.nonzero(as_tuple=True)
        if r.numel() == 0:
            return
        base, e = r * self.width - block[r, c].double(), self.slack[r]
        above = torch.searchsorted(self.keys, base - e) - self.offsets[r]
        unsure = (torch.searchsorted(self.keys, base + e, right=True) - self.offsets[r] != above).nonzero()[:, 0]
        if unsure.numel():
            above[unsure] = self._above(r[unsure], c[unsure] + g0)
        self.below += torch.bincount(r * self.slots + above, minlength=self.below.numel())

    def _dense(self, block: Tensor, g0: int, mask: Tensor, flags: Tensor) -> None:
        for j in range(self.slots - 1):
            upper, lower = self.upper[:, j : j + 1], self.lower[:, j : j + 1]
            self.beaten[:, j] += torch.gt(block, upper, out=flags).sum(1).long()  # float flags sum fastest
            near = torch.ge(block, lower, out=mask).logical_and_(torch.le(block, upper))
            r, c = near.nonzero(as_tuple=True)
            if r.numel():
                self.beaten[:, j].index_add_(0, r, 1 - self._above(r, c + g0, j))
