"""The ranking engine behind every evaluation: :func:`run_protocol` applies a protocol
(``fashion_bench.retrieval.protocols``) to query and gallery embeddings and their relations."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fashion_bench.retrieval.protocols import Protocol, combine_metrics, get_protocol

if TYPE_CHECKING:
    import torch

    from fashion_bench.retrieval.index import Backend, Csr
    from fashion_bench.retrieval.per_query import PerQuery, Ranking


@dataclass
class EvalInputs:
    """Embeddings and relevance of one evaluation. Optional per-item lists may be left empty when the
    dataset has no such information; a protocol that needs one then raises a clear error."""

    query_emb: torch.Tensor  # [Q, D]
    gallery_emb: torch.Tensor  # [G, D]
    query_ids: list[str]
    gallery_ids: list[str]
    positives: list[list[int]]  # gallery indices
    exclude: list[list[int]] = field(default_factory=list)  # from the data, always applied
    subset: list[list[int]] = field(default_factory=list)  # CIRR candidate sets
    query_category: list[str] = field(default_factory=list)
    query_group: list[str] = field(default_factory=list)  # bootstrap resampling units ("": the query alone)
    query_image_index: list[int] = field(default_factory=list)  # reference image's gallery index or -1
    query_domain: list[str] = field(default_factory=list)  # "" for text-only queries
    query_identity: list[str] = field(default_factory=list)
    gallery_domain: list[str] = field(default_factory=list)
    gallery_identity: list[str] = field(default_factory=list)
    gallery_category: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # keys: Protocol.metric_names()
    per_subset: dict[str, dict[str, float]]  # {"intra": ..., "cross": ...} or {category: ...}; {} when none
    num_queries: int
    num_valid_queries: int
    gallery_size: int
    topk: torch.Tensor  # [Q, top_n] int64 gallery indices after exclusions, padded with -1
    topk_scores: torch.Tensor  # [Q, top_n] float32, padded with -inf
    subset_topk: torch.Tensor | None  # [Q, max(subset_ks)] int64 ranking within the subset, padded with -1
    per_query: PerQuery  # each query's first-positive rank and AP (fashion_bench.retrieval.per_query)
    valid_queries: dict[str, int] = field(default_factory=dict)  # valid-query count of each sub-average

    def value(self, name: str) -> float:
        """A top-level metric, or ``<subset>/<metric>`` of per_subset."""
        if name in self.metrics:
            return self.metrics[name]
        subset, _, metric = name.partition("/")
        return self.per_subset[subset][metric]


QUERY_FIELDS = ("query_ids", "exclude", "subset", "query_category", "query_group", "query_image_index",
                "query_domain", "query_identity")
GALLERY_FIELDS = ("gallery_ids", "gallery_domain", "gallery_identity", "gallery_category")


def run_protocol(
    protocol: Protocol | str | dict[str, Any], inputs: EvalInputs, *, top_n: int = 50, backend: Backend = "fast"
) -> EvalResult:
    """Evaluate ``inputs`` under ``protocol`` (see the Protocol fields); ``top_n`` sets the width of
    ``EvalResult.topk`` (0 skips the top-k search)."""
    import torch

    from fashion_bench.retrieval.index import Csr, Embeddings, Exclusions, check_pair
    from fashion_bench.retrieval.metrics import check_backend, rank_positives, rank_with_topk, rank_within, summarise

    protocol = get_protocol(protocol)
    check_backend(backend)
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0:
        raise ValueError(f"top_n must be a non-negative integer, got {top_n!r}")
    query = Embeddings.prepare(inputs.query_emb, "query_emb")
    gallery = Embeddings.prepare(inputs.gallery_emb, "gallery_emb")
    check_pair(query, gallery)
    n_q, n_g = len(query), len(gallery)
    _check_lengths(inputs, n_q, n_g)
    positives = Csr.from_lists(inputs.positives, n_q, n_g, "positives")
    allowed = ()
    if protocol.category_gallery:
        _require(protocol, inputs, "query_category", "gallery_category")
        allowed = _group_masks(inputs.query_category, inputs.gallery_category)
    exclusions = Exclusions(_exclusion_lists(protocol, inputs, n_q, n_g), *allowed)

    main, idx, scores = rank_with_topk(query, gallery, positives, exclusions, top_n, backend)  # one pass
    ranks = {"": main}
    subset_topk = None
    if protocol.subset_ks:
        _require(protocol, inputs, "subset")
        subset = Csr.from_lists(inputs.subset, n_q, n_g, "subset")
        order, ranks["Rsubset"] = rank_within(query, gallery, subset, positives, exclusions)
        subset_topk = torch.full((n_q, max(protocol.subset_ks)), -1, dtype=torch.int64)
        width = min(subset_topk.shape[1], order.shape[1])
        subset_topk[:, :width] = order[:, :width]

    overall = _summaries(protocol, ranks)
    categories: dict[str, dict[str, float]] = {}
    if protocol.per_category:
        _require(protocol, inputs, "query_category")
        categories = {c: _summaries(protocol, {n: r.take_rows(rows) for n, r in ranks.items()})
                      for c, rows in _groups(inputs.query_category).items()}
    reverse = None
    if protocol.task == "t2i":  # images as queries, texts as gallery, relevance inverted
        inverse = Exclusions(exclusions.lists.transpose())
        reverse = rank_positives(gallery, query, positives.transpose(), inverse, backend)
    domain_ranks: dict[str, Csr] = {}
    if protocol.domain_subsets:
        _require(protocol, inputs, "query_domain", "gallery_domain")
        domain_ranks = {name: rank_positives(query, gallery, positives, Exclusions(exclusions.lists, *allowed), backend)
                        for name, allowed in _domain_masks(inputs).items()}
    i2t = None if reverse is None else summarise(reverse, protocol.ks)
    values = combine_metrics(protocol, {k: v for k, v in overall.items() if not k.startswith("num_")}, categories, i2t)
    valid_queries = {"all": int(overall["num_valid_queries"])}
    if i2t is not None:
        valid_queries["i2t"] = int(i2t["num_valid_queries"])
    if "Rsubset" in ranks:
        valid_queries["Rsubset"] = int(ranks["Rsubset"].counts().gt(0).sum())

    return EvalResult(
        metrics=values,
        per_subset={name: summarise(r, protocol.ks) for name, r in domain_ranks.items()} or categories,
        num_queries=n_q,
        num_valid_queries=int(overall["num_valid_queries"]),
        gallery_size=n_g,
        topk=idx,
        topk_scores=scores.float(),
        subset_topk=subset_topk,
        per_query=_per_query(protocol, inputs, ranks, domain_ranks, reverse),
        valid_queries=valid_queries,
    )


def _per_query(
    protocol: Protocol, inputs: EvalInputs, ranks: dict[str, Csr], domain_ranks: dict[str, Csr], reverse: Csr | None
) -> PerQuery:
    from fashion_bench.retrieval.per_query import PerQuery

    subsets = {name: _ranking(r) for name, r in (domain_ranks | {k: v for k, v in ranks.items() if k}).items()}
    return PerQuery(
        tuple(inputs.query_ids),
        _ranking(ranks[""]),
        tuple(inputs.query_category) if protocol.per_category else (),
        subsets,
        None if reverse is None else PerQuery(tuple(inputs.gallery_ids), _ranking(reverse), group=_gallery_groups(inputs)),
        tuple(inputs.query_group) if any(inputs.query_group) else (),
    )


def _gallery_groups(inputs: EvalInputs) -> tuple[str, ...]:
    """The i2t direction's resampling groups: a gallery image takes the group of the text queries it is a positive
    of when they all name the same one (an image of a product family is as dependent on the family as its texts);
    otherwise, or without positives, it is a group of its own. Empty when no query has a group."""
    if not any(inputs.query_group):
        return ()
    named: list[set[str]] = [set() for _ in inputs.gallery_ids]
    for group, positives in zip(inputs.query_group, inputs.positives):
        for g in positives:
            named[g].add(group)
    return tuple(next(iter(groups)) if len(groups) == 1 else "" for groups in named)


def _ranking(ranks: Csr) -> Ranking:
    """Per query: the rank of its first positive (0 when it has none) and its AP over the full ranking."""
    import torch

    from fashion_bench.retrieval.per_query import Ranking

    counts = ranks.counts()
    valid = counts > 0
    within = torch.arange(ranks.idx.numel()) - torch.repeat_interleave(ranks.ptr[:-1], counts)
    precision = (within + 1) / ranks.idx.double()
    ap = torch.zeros(ranks.num_rows, dtype=torch.float64).index_add_(0, ranks.row_ids, precision)
    ap[valid] /= counts[valid]
    first = torch.zeros(ranks.num_rows, dtype=torch.int64)
    first[valid] = ranks.idx[ranks.ptr[:-1][valid]]
    return Ranking(first.numpy(), ap.numpy())


def _summaries(protocol: Protocol, ranks: dict[str, Csr]) -> dict[str, float]:
    """Top-level metrics and counts from the main ranks, plus Rsubset@k from the subset ranks."""
    from fashion_bench.retrieval.metrics import summarise

    out = summarise(ranks[""], protocol.ks)
    if "Rsubset" in ranks:
        sub = summarise(ranks["Rsubset"], protocol.subset_ks)
        out |= {f"Rsubset@{k}": sub[f"R@{k}"] for k in protocol.subset_ks}
    return out


def _check_lengths(inputs: EvalInputs, n_q: int, n_g: int) -> None:
    for names, n, side in ((QUERY_FIELDS, n_q, "queries"), (GALLERY_FIELDS, n_g, "gallery items")):
        for name in names:
            size = len(getattr(inputs, name))
            if size != n and (size or name.endswith("_ids")):
                raise ValueError(f"EvalInputs.{name} has {size} entries for {n} {side}")


def _require(protocol: Protocol, inputs: EvalInputs, *names: str) -> None:
    for name in names:
        if not len(getattr(inputs, name)):
            raise ValueError(f"protocol {protocol.name!r} needs EvalInputs.{name}, which is empty")


def _exclusion_lists(protocol: Protocol, inputs: EvalInputs, n_q: int, n_g: int) -> Csr:
    """Data exclusions, plus the reference image and the ReID same identity and domain rule if set."""
    from fashion_bench.retrieval.index import Csr

    lists = Csr.from_lists(inputs.exclude or [[]] * n_q, n_q, n_g, "exclude")
    if protocol.exclude_reference:
        _require(protocol, inputs, "query_image_index")
        refs = [[i] if i != -1 else [] for i in inputs.query_image_index]
        lists = lists.union(Csr.from_lists(refs, n_q, n_g, "query_image_index"))
    if protocol.exclude_same_identity_and_domain:
        _require(protocol, inputs, "query_identity", "query_domain", "gallery_identity", "gallery_domain")
        by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
        for g, key in enumerate(zip(inputs.gallery_identity, inputs.gallery_domain, strict=True)):
            by_key[key].append(g)
        same = [by_key.get(key, []) if key[0] else []
                for key in zip(inputs.query_identity, inputs.query_domain, strict=True)]
        lists = lists.union(Csr.from_lists(same, n_q, n_g, "same identity and domain"))
    return lists


def _groups(labels: Sequence[str]) -> dict[str, torch.Tensor]:
    """Sorted label -> indices of the items carrying it."""
    import torch

    members: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        members[label].append(i)
    return {label: torch.tensor(members[label]) for label in sorted(members)}


def _group_masks(query_labels: Sequence[str], gallery_labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(same [num_labels, G]: gallery items carrying each query label, query -> its label's row)."""
    import numpy as np
    import torch

    labels = _groups(query_labels)
    group = torch.empty(len(query_labels), dtype=torch.int64)
    for i, rows in enumerate(labels.values()):
        group[rows] = i
    gallery = np.asarray(gallery_labels, dtype=object)
    same = torch.from_numpy(np.stack([gallery == label for label in labels]))
    return same, group


def _domain_masks(inputs: EvalInputs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(allowed [num_domains, G], query -> domain row) for the intra- and cross-domain rankings."""
    same, group = _group_masks(inputs.query_domain, inputs.gallery_domain)
    return {"intra": (same, group), "cross": (~same, group)}
