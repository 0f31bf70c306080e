"""Evaluation protocols as data: the :class:`Protocol` specification, the registry, and how a protocol combines
its parts into the reported metrics (:func:`combine_metrics`).

A protocol says which items are removed from each query's ranking, which Ks and subsets are reported and
which metric drives checkpointing; it is written into every results file (``Protocol.to_dict``). This module
imports neither torch nor the ranking engine (``fashion_bench.retrieval.engine`` applies a protocol), so the
data layer, configs and the report use it cheaply and without import cycles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

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


