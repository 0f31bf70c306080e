"""Bootstrap statistics over queries from the runs' per-query files (``per_query.jsonl``).

Resampling the queries of a split (with replacement) and recomputing each metric of results.json gives its 95 %
interval. The resamples depend only on the bootstrap seed and the sorted query ids, so every run evaluated on the
same queries is resampled identically: the difference between two leaderboard rows is computed on the same
resampled queries in each resample (a paired bootstrap). A row with several seeds is the mean of its runs in
every resample (the spread over seeds is shown separately). ``t2i`` protocols resample the text queries and,
independently, the image queries of the i2t direction. Queries that name a ``group`` in the per-query file (e.g.
one product family's composed queries, which share references and targets and so are not independent) are drawn
as whole groups (a cluster bootstrap; a group's text and image queries together), and runs pair only when their
groups are the same too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import numpy as np

from fashion_bench.report.collect import Run, display_path

if TYPE_CHECKING:
    from fashion_bench.retrieval.per_query import PerQuery
    from fashion_bench.retrieval.protocols import Protocol

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95
CHUNK_ELEMENTS = 1 << 22  # resample weights held at once (32 MB of float64)
CHECK_TOLERANCE = 1e-6  # recomputed vs results.json metrics


@dataclass(frozen=True)
class Bootstrap:
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class RowSamples:
    """One leaderboard row's metrics in every resample: metric -> [B] (mean over the row's runs)."""

    queries: tuple[tuple[str, ...], ...]  # sorted ids (main, i2t), then their groups
    samples: Mapping[str, np.ndarray]

    def interval(self, metric: str) -> Interval | None:
        values = self.samples.get(metric)
        return None if values is None else _interval(values)


@dataclass(frozen=True)
class Comparison:
    """``first`` minus ``second`` on ``metric`` over the same resampled queries (fractions)."""

    first: str
    second: str
    metric: str
    difference: float
    interval: Interval
    share_positive: float  # share of resamples where the difference is > 0
    queries: int  # resampled (main-direction) queries

    @property
    def verdict(self) -> str:
        if self.interval.low > 0:
            return "holds"
        if self.interval.high < 0:
            return "reversed"
        return "not significant"


def row_samples(runs: Sequence[Run], bootstrap: Bootstrap) -> RowSamples | str:
    """The bootstrap samples of a row of ``runs`` (its seeds), or why there are none."""
    loaded = []
    for run in runs:
        item = load_per_query(run)
        if isinstance(item, str):
            return item
        loaded.append(item)
    queries = {_query_key(pq) for pq, _ in loaded}
    if len(queries) > 1:
        return f"its seeds were evaluated on {_mismatch(*sorted(queries)[:2])}"
    (key,) = queries
    per_run = [_resampled(pq, protocol, bootstrap) for pq, protocol in loaded]
    return RowSamples(key, {m: np.mean([s[m] for s in per_run], axis=0) for m in per_run[0]})


def load_per_query(run: Run) -> tuple[PerQuery, Protocol] | str:
    """A run's per-query outcomes (sorted by query id) and protocol, checked against its results.json; or why not."""
    from fashion_bench.retrieval.per_query import PerQueryError, metric_values, read_per_query
    from fashion_bench.retrieval.protocols import Protocol

    if not run.per_query_path.is_file():
        return f"no {run.per_query_path.name} in {display_path(run.path.parent)}"
    try:
        protocol = Protocol.from_dict(dict(run.protocol))
        per_query = read_per_query(run.per_query_path).sorted()
        recomputed = metric_values(per_query, protocol)
    except PerQueryError as err:
        return str(err)
    except (ValueError, TypeError, KeyError) as err:
        return f"{display_path(run.per_query_path)} does not fit protocol {run.protocol_name!r} ({err})"
    reported = dict(run.metrics) | {f"{s}/{m}": v for s, values in run.per_subset.items() for m, v in values.items()}
    for name, value in reported.items():
        if name in recomputed and not abs(recomputed[name][0] - value) <= CHECK_TOLERANCE:
            return (f"{display_path(run.per_query_path)} does not reproduce results.json "
                    f"({name}: {recomputed[name][0]:.6f} vs {value:.6f})")
    return per_query, protocol


def compare(first: tuple[str, RowSamples], second: tuple[str, RowSamples], metric: str,
            points: tuple[float, float]) -> Comparison | str:
    """The paired difference first - second on ``metric``; ``points`` are the two rows' reported values."""
    (name_a, a), (name_b, b) = first, second
    if a.queries != b.queries:
        return f"{name_a} and {name_b} were evaluated on {_mismatch(a.queries, b.queries)}"
    if metric not in a.samples or metric not in b.samples:
        return f"{metric} cannot be recomputed from the per-query files"
    diff = a.samples[metric] - b.samples[metric]
    finite = diff[np.isfinite(diff)]
    share = float(np.mean(finite > 0)) if finite.size else float("nan")
    return Comparison(name_a, name_b, metric, points[0] - points[1], _interval(diff), share, len(a.queries[0]))


def _interval(values: np.ndarray) -> Interval:
    tail = 100 * (1 - CONFIDENCE) / 2
    with np.errstate(all="ignore"):
        low, high = np.nanpercentile(values, [tail, 100 - tail]) if np.isfinite(values).any() else (np.nan, np.nan)
    return Interval(float(low), float(high))


def _query_key(per_query: PerQuery) -> tuple[tuple[str, ...], ...]:
    """Sorted main ids, i2t ids, then the groups of each: what must be equal for two runs to pair."""
    if per_query.reverse is None:
        return per_query.query_ids, (), per_query.group, ()
    return per_query.query_ids, per_query.reverse.query_ids, per_query.group, per_query.reverse.group


def _mismatch(a: tuple[tuple[str, ...], ...], b: tuple[tuple[str, ...], ...]) -> str:
    """What differs between two query keys: the queries, or only their resampling groups (e.g. a run written
    before its dataset named groups beside one written after: test the older checkpoint again to pair them)."""
    if a[:2] != b[:2]:
        return "different queries"
    return "the same queries with different resampling groups (per_query.jsonl 'group'; test again to pair them)"


def _resampled(per_query: PerQuery, protocol: Protocol, bootstrap: Bootstrap) -> dict[str, np.ndarray]:
    """Every metric of one run in each resample, computed chunk by chunk."""
    from fashion_bench.retrieval.per_query import metric_values

    n_main = len(per_query.query_ids)
    n_reverse = len(per_query.reverse.query_ids) if per_query.reverse is not None else 0
    chunk = max(1, CHUNK_ELEMENTS // max(n_main, n_reverse, 1))
    parts = [
        metric_values(per_query, protocol, w, rw if n_reverse else None)
        for w, rw in _weights(per_query, n_main, n_reverse, bootstrap, chunk)
    ]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _weights(
    per_query: PerQuery, n_main: int, n_reverse: int, bootstrap: Bootstrap, chunk: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each resample's draw counts of the main and the i2t queries: independent draws of each direction's queries,
    or, where groups are named, draws of the units of :meth:`PerQuery.clusters` shared by both directions."""
    clusters = per_query.clusters()
    if clusters is None:
        yield from zip(_counts(n_main, bootstrap, 0, chunk), _counts(n_reverse, bootstrap, 1, chunk))
        return
    main, reverse = clusters
    units = int(max(main.max(initial=-1), reverse.max(initial=-1))) + 1
    for counts in _counts(units, bootstrap, 0, chunk):
        yield counts[:, main], counts[:, reverse]


def _counts(n: int, bootstrap: Bootstrap, stream: int, chunk: int) -> Iterator[np.ndarray]:
    """[b, n] draw counts of each of n units (queries or groups) in each resample, ``chunk`` resamples at a time."""
    rng = np.random.default_rng([bootstrap.seed, stream])
    for start in range(0, bootstrap.resamples, chunk):
        b = min(chunk, bootstrap.resamples - start)
        if n == 0:
            yield np.zeros((b, 0))
            continue
        draws = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        yield counts
