"""Per-query outcomes of one evaluation (:class:`PerQuery`), their file beside results.json, and every metric of
results.json recomputed from them (:func:`metric_values`), optionally for many bootstrap resamples at once.

Two runs on the same split share query ids, so their files can be compared query by query (paired tests).
Torch-free (numpy only): the report reads these files.

File format (``per_query.jsonl``, :data:`fashion_bench.contracts.PER_QUERY_NAME`): UTF-8 JSON lines, one per
query and direction::

    {"direction": "main", "query_id": "q17", "rank": 3, "ap": 0.4166666666666667, "category": "dress",
     "subsets": {"intra": {"rank": 2, "ap": 0.5}, "cross": {"rank": null, "ap": null}}}
    {"direction": "i2t", "query_id": "item42", "rank": 1, "ap": 1.0}

``rank`` is the 1-based rank of the query's first positive in its ranking after exclusions and ``ap`` its
average precision over the full ranking; both are null when no positive is left (the query is not valid and
counts in no average). ``category`` appears on every main line of ``per_category`` protocols; ``subsets`` holds
the separately computed rankings: ``intra`` / ``cross`` (``domain_subsets``) and ``Rsubset`` (``subset_ks``,
ranks within the query's candidate subset). ``i2t`` lines exist for ``t2i`` protocols: gallery images as
queries, their texts as gallery. ``group`` (optional, on lines of either direction) names the query's resampling
unit: the report's bootstrap draws whole groups (e.g. a product family whose queries share references and
targets), the main and i2t queries of one group together; a line without it is a group of its own.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from fashion_bench.atomic import atomic_open
from fashion_bench.retrieval.protocols import Protocol, combine_metrics

MAIN, REVERSE = "main", "i2t"


class PerQueryError(ValueError):
    """A per-query file is malformed; the message names the file, the line and the field."""


@dataclass(frozen=True)
class Ranking:
    """One ranking's outcome per query: ``first`` [Q] int64, the 1-based rank of the first positive (0 when the
    query has no positive left, i.e. is not valid), and ``ap`` [Q] float64 (0 when not valid)."""

    first: np.ndarray
    ap: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.first > 0

    def take(self, order: np.ndarray) -> Ranking:
        return Ranking(self.first[order], self.ap[order])


@dataclass(frozen=True)
class PerQuery:
    """Per-query outcomes of one evaluation, queries in ``query_ids`` order.

    Attributes:
        ranking: the protocol's ranking (all top-level R@K, mAP, rank1 derive from it).
        category: per_category protocols: each query's category (its ``per_subset`` key); else empty.
        subsets: other rankings of the same queries: ``intra`` / ``cross`` (domain_subsets), ``Rsubset``.
        reverse: t2i protocols: the i2t direction (gallery item ids as queries); else None.
        group: each query's resampling group ("" for a group of its own); empty when no query has one.
    """

    query_ids: tuple[str, ...]
    ranking: Ranking
    category: tuple[str, ...] = ()
    subsets: Mapping[str, Ranking] = field(default_factory=dict)
    reverse: PerQuery | None = None
    group: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.query_ids)
        rankings = (self.ranking, *self.subsets.values())
        sizes = [len(r.first) for r in rankings] + [len(r.ap) for r in rankings]
        if any(size != n for size in sizes) or len(self.category) not in (0, n) or len(self.group) not in (0, n):
            raise ValueError(f"PerQuery: every per-query array needs {n} entries, got {sizes}, "
                             f"{len(self.category)} categories and {len(self.group)} groups")

    def clusters(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Each query's resampling unit as an index, for the main and the i2t queries (empty without them) in one
        numbering: the groups of both directions in sorted order, then one unit per ungrouped query (main queries
        first). None when no query of either direction names a group."""
        reverse = self.reverse.group_or_blank() if self.reverse is not None else ()
        main = self.group_or_blank()
        if not any(main) and not any(reverse):
            return None
        index = {g: i for i, g in enumerate(sorted({g for g in (*main, *reverse) if g}))}
        alone = itertools.count(len(index))

        def units(groups: tuple[str, ...]) -> np.ndarray:
            return np.fromiter((index[g] if g else next(alone) for g in groups), dtype=np.int64, count=len(groups))

        return units(main), units(reverse)

    def group_or_blank(self) -> tuple[str, ...]:
        """``group``, or "" for every query when none has one."""
        return self.group or ("",) * len(self.query_ids)

    def sorted(self) -> PerQuery:
        """The same outcomes with queries (and reverse queries) in id order, so that two runs align row by row."""
        order = np.argsort(np.asarray(self.query_ids, dtype=object), kind="stable")
        return PerQuery(
            tuple(self.query_ids[i] for i in order),
            self.ranking.take(order),
            tuple(self.category[i] for i in order) if self.category else (),
            {name: r.take(order) for name, r in self.subsets.items()},
            self.reverse.sorted() if self.reverse is not None else None,
            tuple(self.group[i] for i in order) if self.group else (),
        )


# --- metrics -------------------------------------------------------------------------------------------------

def metric_values(
    per_query: PerQuery,
    protocol: Protocol,
    weights: np.ndarray | None = None,
    reverse_weights: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The metrics of results.json recomputed from per-query ranks: the ``metrics`` keys, and
    ``<subset>/<metric>`` for each ``per_subset`` value. Each value is an array [B]: one entry per row of
    ``weights`` [B, Q] (how often each query is drawn in a bootstrap resample; None: every query once) and of
    ``reverse_weights`` [B, Q_i2t] for the i2t direction. A subset without valid queries gives NaN."""
    w = _weights(weights, len(per_query.query_ids))
    every = np.ones(len(per_query.query_ids), dtype=bool)
    categories: dict[str, dict[str, np.ndarray]] = {}
    if protocol.per_category:
        labels = np.asarray(per_query.category, dtype=object)
        categories = {c: _group(per_query, protocol, labels == c, w) for c in sorted(set(per_query.category))}
    i2t = None
    if protocol.task == "t2i":
        reverse = _require_reverse(per_query)
        rw = _weights(reverse_weights, len(reverse.query_ids))
        i2t = _summary(reverse.ranking, np.ones(len(reverse.query_ids), dtype=bool), rw, protocol.ks)
    values = combine_metrics(protocol, _group(per_query, protocol, every, w), categories, i2t)
    per_subset = categories
    if protocol.domain_subsets:
        per_subset = {name: _summary(per_query.subsets[name], every, w, protocol.ks) for name in ("intra", "cross")}
    return values | {f"{s}/{name}": v for s, metrics in per_subset.items() for name, v in metrics.items()}


def _weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones((1, n))
    if weights.ndim != 2 or weights.shape[1] != n:
        raise ValueError(f"weights must have shape [B, {n}], got {list(weights.shape)}")
    return weights


def _require_reverse(per_query: PerQuery) -> PerQuery:
    if per_query.reverse is None:
        raise ValueError("a t2i protocol needs the i2t direction (PerQuery.reverse), which is missing")
    return per_query.reverse


def _group(per_query: PerQuery, protocol: Protocol, mask: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """R@K, mAP, rank1 (and Rsubset@K) over the queries in ``mask``."""
    out = _summary(per_query.ranking, mask, w, protocol.ks)
    if protocol.subset_ks:
        sub = _summary(per_query.subsets["Rsubset"], mask, w, protocol.subset_ks)
        out |= {f"Rsubset@{k}": sub[f"R@{k}"] for k in protocol.subset_ks}
    return out


def _summary(ranking: Ranking, mask: np.ndarray, w: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Weighted hit rates and mAP over the valid queries in ``mask``, as :func:`metrics.summarise` defines them."""
    valid = ranking.valid & mask
    hit_ks = tuple(dict.fromkeys((*ks, 1)))
    columns = [valid, *(valid & (ranking.first <= k) for k in hit_ks), np.where(valid, ranking.ap, 0.0)]
    sums = w @ np.stack(columns, axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = sums[:, 1:] / sums[:, :1]
    out = {f"R@{k}": ratios[:, i] for i, k in enumerate(hit_ks) if k in ks}
    out["mAP"] = ratios[:, -1]
    out["rank1"] = ratios[:, hit_ks.index(1)]
    return out


# --- file ----------------------------------------------------------------------------------------------------

def write_per_query(path: Path, per_query: PerQuery) -> Path:
    """Write ``per_query`` to ``path`` (atomically) in the format of this module's docstring."""
    with atomic_open(path) as fh:
        for line in _lines(per_query):
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    return Path(path)


def _lines(per_query: PerQuery) -> Iterator[dict[str, Any]]:
    for i, query_id in enumerate(per_query.query_ids):
        line = {"direction": MAIN, "query_id": query_id, **_outcome(per_query.ranking, i)}
        if per_query.category:
            line["category"] = per_query.category[i]
        if per_query.group and per_query.group[i]:
            line["group"] = per_query.group[i]
        if per_query.subsets:
            line["subsets"] = {name: _outcome(r, i) for name, r in per_query.subsets.items()}
        yield line
    if per_query.reverse is not None:
        reverse = per_query.reverse
        for i, query_id in enumerate(reverse.query_ids):
            line = {"direction": REVERSE, "query_id": query_id, **_outcome(reverse.ranking, i)}
            if reverse.group and reverse.group[i]:
                line["group"] = reverse.group[i]
            yield line


def _outcome(ranking: Ranking, i: int) -> dict[str, Any]:
    first = int(ranking.first[i])
    return {"rank": first, "ap": float(ranking.ap[i])} if first else {"rank": None, "ap": None}


@dataclass
class _Direction:
    ids: list[str] = field(default_factory=list)
    outcomes: list[tuple[int, float]] = field(default_factory=list)
    category: list[str] | None = None  # set by the first main line: a list when it has a category
    group: list[str] = field(default_factory=list)  # "" where a line has no group
    subsets: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def read_per_query(path: str | Path) -> PerQuery:
    """Read a per-query file; raises :class:`PerQueryError` naming the file, line and field of a bad entry."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PerQueryError(f"{path}: cannot read ({err})") from None
    directions = {MAIN: _Direction(), REVERSE: _Direction()}
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.strip():
            _parse_line(raw, directions, f"{path}: line {number}")
    main, reverse = directions[MAIN], directions[REVERSE]
    if not main.ids:
        raise PerQueryError(f"{path}: no query (no line with direction {MAIN!r})")
    for name, direction in directions.items():
        if len(set(direction.ids)) != len(direction.ids):
            duplicate = next(i for i, n in Counter(direction.ids).items() if n > 1)
            raise PerQueryError(f"{path}: query_id {duplicate!r} appears more than once in direction {name!r}")
    return PerQuery(
        tuple(main.ids), _ranking(main.outcomes), tuple(main.category or ()),
        {name: _ranking(outcomes) for name, outcomes in main.subsets.items()},
        PerQuery(tuple(reverse.ids), _ranking(reverse.outcomes), group=_groups(reverse)) if reverse.ids else None,
        _groups(main),
    )


def _groups(direction: _Direction) -> tuple[str, ...]:
    return tuple(direction.group) if any(direction.group) else ()


def _parse_line(raw: str, directions: dict[str, _Direction], where: str) -> None:
    def fail(reason: str) -> PerQueryError:
        return PerQueryError(f"{where}: {reason}")

    try:
        line = json.loads(raw)
    except json.JSONDecodeError as err:
        raise fail(f"invalid JSON ({err.msg})") from None
    if not isinstance(line, dict):
        raise fail(f"expected a JSON object, got {type(line).__name__}")
    direction = directions.get(line.get("direction"))
    if direction is None:
        raise fail(f"'direction' must be {MAIN!r} or {REVERSE!r}, got {line.get('direction')!r}")
    query_id = line.get("query_id")
    if not isinstance(query_id, str) or not query_id:
        raise fail("'query_id' must be a non-empty string")
    outcome = _parse_outcome(line, fail)
    if line["direction"] == MAIN:
        _parse_main_fields(line, direction, fail)
    group = line.get("group", "")
    if not isinstance(group, str) or (group and not group.strip()):
        raise fail(f"'group' must be a non-blank string, got {group!r}")
    direction.group.append(group)
    direction.ids.append(query_id)
    direction.outcomes.append(outcome)


def _parse_outcome(entry: Mapping[str, Any], fail: Callable[[str], PerQueryError]) -> tuple[int, float]:
    rank, ap = entry.get("rank"), entry.get("ap")
    if rank is None and ap is None:
        return 0, 0.0
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise fail(f"'rank' must be a positive integer or null, got {rank!r}")
    if isinstance(ap, bool) or not isinstance(ap, (int, float)) or not (math.isfinite(ap) and 0.0 < ap <= 1.0):
        raise fail(f"'ap' must be a number in (0, 1] when 'rank' is set, got {ap!r}")
    return rank, float(ap)


def _parse_main_fields(line: Mapping[str, Any], direction: _Direction, fail: Callable[[str], PerQueryError]) -> None:
    """``category`` and ``subsets``: present on every main line or on none, the same subsets on each."""
    subsets = line.get("subsets", {})
    if not isinstance(subsets, dict):
        raise fail(f"'subsets' must be an object, got {subsets!r}")
    if not direction.ids:
        direction.category = [] if "category" in line else None
        direction.subsets = {name: [] for name in subsets}
    if ("category" in line) != (direction.category is not None):
        raise fail("'category' must be on every main line or on none")
    if direction.category is not None:
        if not isinstance(line["category"], str):
            raise fail(f"'category' must be a string, got {line['category']!r}")
        direction.category.append(line["category"])
    if set(subsets) != set(direction.subsets):
        raise fail(f"'subsets' must name the same rankings on every main line ({sorted(direction.subsets)}), "
                   f"got {sorted(subsets)}")
    for name, entry in subsets.items():
        if not isinstance(entry, dict):
            raise fail(f"subsets.{name} must be an object with 'rank' and 'ap'")
        direction.subsets[name].append(_parse_outcome(entry, lambda reason, n=name: fail(f"subsets.{n}: {reason}")))


def _ranking(outcomes: list[tuple[int, float]]) -> Ranking:
    first = np.fromiter((r for r, _ in outcomes), dtype=np.int64, count=len(outcomes))
    ap = np.fromiter((a for _, a in outcomes), dtype=np.float64, count=len(outcomes))
    return Ranking(first, ap)
