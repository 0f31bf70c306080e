"""Builders of fixture results.json files in tmp_path (the report tests never read shared or real runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fashion_bench.contracts import PER_QUERY_NAME
from fashion_bench.retrieval.per_query import PerQuery, Ranking, metric_values, write_per_query
from fashion_bench.retrieval.protocols import Protocol

CIR_PROTOCOL = {"name": "synth-cir", "task": "cir", "ks": [1, 5, 10, 50], "headline": ["R@10", "R@50"],
                "primary_metric": "headline"}
T2I_PROTOCOL = {"name": "synth-t2i", "task": "t2i", "ks": [1, 5, 10], "headline": [],
                "primary_metric": "mean_recall"}
ID_PROTOCOL = {"name": "synth-id", "task": "id", "ks": [1, 5, 10], "headline": [], "primary_metric": "mAP"}


def results(experiment: str, seed: int, metrics: dict[str, float], *, protocol: dict[str, Any] = CIR_PROTOCOL,
            split: str = "val", started_at: str = "2024-01-01T10:00:00", **extra: Any) -> dict[str, Any]:
    method, dataset = experiment.split("__")
    return {
        "schema_version": 1, "experiment": experiment, "method": method, "dataset": dataset,
        "task": protocol["task"], "split": split, "protocol": protocol,
        "encoder": {"name": "tiny-vit-64", "pretrained": "/ckpt/tiny.pt"}, "seed": seed, "metrics": metrics,
        "per_subset": {}, "num_queries": 100, "num_valid_queries": 100, "gallery_size": 500,
        "ckpt_path": None, "git_sha": "abc123", "versions": {"python": "3.11"}, "wall_time_s": 12.5,
        "started_at": started_at, "hardware": "cpu", **extra,
    }


def write_run(root: Path, data: dict[str, Any] | str, run: str | None = None) -> Path:
    """Write ``data`` (a dict, or raw text for corrupt files) as runs/<experiment>/<run>/results.json."""
    if isinstance(data, dict):
        experiment = data.get("experiment", "unknown")
        run = run or f"{data.get('started_at', '20240101T0')[:10].replace('-', '')}-000000_seed{data.get('seed')}"
    else:
        experiment = "broken"
    path = root / experiment / (run or "run") / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def cir(headline: float, r1: float, r5: float, r10: float, r50: float) -> dict[str, float]:
    return {"headline": headline, "R@1": r1, "R@5": r5, "R@10": r10, "R@50": r50}


ID_SUBSETS_PROTOCOL = {"name": "id-intra-cross", "task": "id", "ks": [1, 5, 10], "headline": [],
                       "primary_metric": "mAP", "domain_subsets": True}


def ranks(seed: int, n: int = 200, worst: int = 20, invalid: int = 5) -> np.ndarray:
    """Seeded first-positive ranks in 1..worst for n queries, the first ``invalid`` without a positive (0)."""
    first = np.random.default_rng(seed).integers(1, worst + 1, n)
    first[:invalid] = 0
    return first


def per_query(first: np.ndarray, *, ids: Sequence[str] | None = None, subsets: Sequence[str] = ()) -> PerQuery:
    """One positive per query (AP = 1 / rank); each named subset ranking equal to the main one."""
    ranking = Ranking(first, np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0))
    ids = tuple(ids) if ids is not None else tuple(f"q{i:04d}" for i in range(len(first)))
    return PerQuery(ids, ranking, subsets={name: ranking for name in subsets})


def write_scored_run(root: Path, experiment: str, seed: int, pq: PerQuery, *,
                     protocol: dict[str, Any] = ID_PROTOCOL, with_file: bool = True, run: str | None = None,
                     **extra: Any) -> Path:
    """A results.json whose metrics are recomputed from ``pq``, and (``with_file``) its per_query.jsonl."""
    spec = Protocol.from_dict(dict(protocol))
    values = {k: float(v[0]) for k, v in metric_values(pq, spec).items()}
    metrics = {k: values.pop(k) for k in spec.metric_names()}
    per_subset: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        subset, name = key.split("/", 1)
        per_subset.setdefault(subset, {})[name] = value
    run = run or f"run{len(list((root / experiment).glob('*')))}_seed{seed}"
    path = write_run(root, results(experiment, seed, metrics, protocol=protocol, per_subset=per_subset, **extra), run)
    if with_file:
        write_per_query(path.parent / PER_QUERY_NAME, pq)
    return path
