"""Evaluation protocols as data, and :func:`run_protocol`, which applies one to a set of embeddings.

A protocol says which items are removed from each query's ranking, which Ks and subsets are reported and
which metric drives checkpointing; it is written into every results file (``Protocol.to_dict``). This
module imports no torch at import time, so configs and reports can use the registry cheaply.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

    from fashion_bench.retrieval.index import Backend, Csr, Embeddings, Exclusions
    from fashion_bench.retrieval.per_query import PerQuery, Ranking

from fashion_bench.contracts import TASKS

MEAN_RECALL_KS = (1, 5, 10)
V = TypeVar("V")  # a metric value: a float, or a numpy array of bootstrap resamples


def check_ks(ks: Iterable[int], name: str = "ks") -> tuple[int, ...]:
    """Positive ints, duplicates dropped, order kept."""
    ks = tuple(ks)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad:
        raise ValueError(f"{name} must be positive integers, got {bad} in {ks}")
    return tuple(dict.fromkeys(ks))


@dataclass
class Protocol:
    name: str = "default"
    task: str = "t2i"  # "t2i" | "id" | "cir"
    ks: tuple[int, ...] = (1, 5, 10, 50)
    exclude_reference: bool = False  # remove the query's own image (query_image_index) from its ranking
    exclude_same_identity_and_domain: bool = False  # ReID camera rule
    domain_subsets: bool = False  # id: per_subset "intra" (query's domain only) and "cross" (other domains)
    subset_ks: tuple[int, ...] = ()  # CIRR: Rsubset@k ranking only the query's subset (after exclusions)
    per_category: bool = False  # FashionIQ: per-category metrics; top level = mean over categories
    category_gallery: bool = False  # FashionIQ: a query ranks only the gallery items of its own category
    headline: tuple[str, ...] = ()  # metrics averaged into metrics["headline"]
    primary_metric: str = "R@10"  # drives checkpointing; may name a subset metric, e.g. "cross/mAP"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"protocol name must be a non-empty string, got {self.name!r}")
        if self.task not in TASKS:
            raise ValueError(f"protocol {self.name!r}: unknown task {self.task!r}; expected one of {TASKS}")
        for flag in ("exclude_reference", "exclude_same_identity_and_domain", "domain_subsets", "per_category",
                     "category_gallery"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"protocol {self.name!r}: {flag} must be true or false, got {getattr(self, flag)!r}")
        self.ks = check_ks(self.ks, f"protocol {self.name!r}: ks")
        self.subset_ks = check_ks(self.subset_ks, f"protocol {self.name!r}: subset_ks")
        self.headline = tuple(self.headline)
        for flag, task in (("domain_subsets", "id"), ("exclude_same_identity_and_domain", "id"),
                           ("subset_ks", "cir"), ("per_category", "cir"), ("category_gallery", "cir")):
            if getattr(self, flag) and self.task != task:
                raise ValueError(f"protocol {self.name!r}: {flag} applies to task {task!r}, not {self.task!r}")
        names = self.metric_names()
        unknown = [h for h in self.headline if h not in names or h == "headline"]
        if unknown:
            raise ValueError(f"protocol {self.name!r}: headline metrics {unknown} are not among {names}")
        choices = names + self.subset_metric_names()
        if self.primary_metric not in choices:
            raise ValueError(
                f"protocol {self.name!r}: primary_metric {self.primary_metric!r} is not a metric of this "
                f"protocol; choose one of {choices}"
            )

    def subset_metric_names(self) -> list[str]:
        """``<subset>/<metric>`` names of the fixed per_subset entries (intra / cross of domain_subsets)."""
        if not self.domain_subsets:
            return []
        return [f"{subset}/{m}" for subset in ("intra", "cross") for m in [f"R@{k}" for k in self.ks] + ["mAP", "rank1"]]

    def metric_names(self) -> list[str]:
        """The keys of ``EvalResult.metrics`` under this protocol, in order."""
        names = [f"R@{k}" for k in self.ks] + ["mAP", "rank1"]
        names += [f"Rsubset@{k}" for k in self.subset_ks]
        if self.task == "t2i":
            names += [f"{d}/R@{k}" for d in ("t2i", "i2t") for k in self.ks]
            if set(self.ks) & set(MEAN_RECALL_KS):
                names.append("mean_recall")
        if self.headline:
            names.append("headline")
        return names

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Protocol:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown protocol keys {unknown}; valid keys: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("t2i", "t2i", ks=(1, 5, 10), primary_metric="mean_recall"),
        Protocol("id", "id", ks=(1, 5, 10), exclude_reference=True, primary_metric="mAP"),
        Protocol("id-intra-cross", "id", ks=(1, 5, 10), exclude_reference=True, domain_subsets=True,
                 primary_metric="cross/mAP"),
        Protocol("reid", "id", ks=(1, 5, 10), exclude_reference=True, exclude_same_identity_and_domain=True,
                 primary_metric="mAP"),
        Protocol("inshop", "id", ks=(1, 10, 20, 50), primary_metric="R@1"),
        Protocol("cir", "cir", exclude_reference=True),
        Protocol("fashioniq", "cir", per_category=True, category_gallery=True, headline=("R@10", "R@50"),
                 primary_metric="headline"),
        Protocol("fashioniq-valsplit", "cir", per_category=True, category_gallery=True, headline=("R@10", "R@50"),
                 primary_metric="headline"),
        # FashionIQ's per-category averages and headline over one pooled gallery (synth-cir: its items carry finer
        # categories than its three query groups, so a query ranks every gallery item)
        Protocol("fashioniq-pooled", "cir", per_category=True, headline=("R@10", "R@50"), primary_metric="headline"),
        Protocol("cirr", "cir", exclude_reference=True, subset_ks=(1, 2, 3), headline=("R@5", "Rsubset@1"),
                 primary_metric="headline"),
        Protocol("shoes", "cir", ks=(1, 10, 50), exclude_reference=True, headline=("R@1", "R@10", "R@50"),
                 primary_metric="headline"),
        Protocol("fashion200k", "cir", exclude_reference=True),
    )
}


def get_protocol(spec: str | dict[str, Any] | Protocol) -> Protocol:
    """A registered protocol by name (a copy), a protocol from a dict, or the protocol itself."""
    if isinstance(spec, Protocol):
        return spec
    if isinstance(spec, dict):
        return Protocol.from_dict(spec)
    if spec not in PROTOCOLS:
        raise ValueError(f"unknown protocol {spec!r}; registered: {sorted(PROTOCOLS)}")
    return dataclasses.replace(PROTOCOLS[spec])


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


QUERY_FIELDS = ("query_ids", "exclude", "subset", "query_category", "query_image_index", "query_domain",
                "query_identity")
GALLERY_FIELDS = ("gallery_ids", "gallery_domain", "gallery_identity", "gallery_category")


def run_protocol(
    protocol: Protocol | str | dict[str, Any], inputs: EvalInputs, *, top_n: int = 50, backend: Backend = "fast"
) -> EvalResult:
    """Evaluate ``inputs`` under ``protocol`` (see the Protocol fields); ``top_n`` sets the width of
    ``EvalResult.topk`` (0 skips the top-k search)."""
    import torch

    from fashion_bench.retrieval.index import Csr, Embeddings, Exclusions, check_pair, topk
    from fashion_bench.retrieval.metrics import check_backend, rank_positives, rank_within, summarise

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

    ranks = {"": rank_positives(query, gallery, positives, exclusions, backend)}
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

    idx, scores = topk(query, gallery, top_n, exclusions, backend)
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


def combine_metrics(
    protocol: Protocol,
    values: Mapping[str, V],
    categories: Mapping[str, Mapping[str, V]],
    i2t: Mapping[str, V] | None,
) -> dict[str, V]:
    """The top-level metrics (``Protocol.metric_names()``) from their parts, floats or numpy arrays alike.

    ``values``: R@K, mAP, rank1 (and Rsubset@K) of the protocol's ranking over all queries; per_category
    protocols replace them by their mean over ``categories``. t2i protocols add t2i/R@K (the top level),
    i2t/R@K from ``i2t`` and mean_recall over the Ks among 1, 5, 10. Then the headline.
    """
    if protocol.per_category:
        values = {k: sum(c[k] for c in categories.values()) / len(categories) for k in values}
    values = dict(values)
    if protocol.task == "t2i":
        if i2t is None:
            raise ValueError(f"protocol {protocol.name!r}: t2i metrics need the i2t direction")
        values |= {f"t2i/R@{k}": values[f"R@{k}"] for k in protocol.ks}
        values |= {f"i2t/R@{k}": i2t[f"R@{k}"] for k in protocol.ks}
        mean_ks = [k for k in protocol.ks if k in MEAN_RECALL_KS]
        if mean_ks:
            recalls = [values[f"{d}/R@{k}"] for d in ("t2i", "i2t") for k in mean_ks]
            values["mean_recall"] = sum(recalls) / len(recalls)
    if protocol.headline:
        values["headline"] = sum(values[h] for h in protocol.headline) / len(protocol.headline)
    return {k: values[k] for k in protocol.metric_names()}


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
        None if reverse is None else PerQuery(tuple(inputs.gallery_ids), _ranking(reverse)),
    )


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
