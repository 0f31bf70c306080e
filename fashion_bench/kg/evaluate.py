"""Precision and recall of a mined concept graph against the synthetic world's ground truth (world.json)."""

from __future__ import annotations

import json
from pathlib import Path

from fashion_bench.kg.graph import ConceptGraph


def ground_truth(world: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """(concepts, (child, parent) edges) of world.json's hierarchy, without its root."""
    path = Path(world) / "world.json"
    try:
        record = json.loads(path.read_text())
        root, edges = record["concepts"]["root"], record["concepts"]["edges"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: no ground-truth concept hierarchy (concepts.root / concepts.edges): {err!r}") from None
    pairs = {(child, parent) for child, parent in edges if parent != root}
    return {child for child, _ in edges}, pairs


def _scores(found: set, truth: set) -> dict[str, float | int]:
    hits = len(found & truth)
    return {
        "precision": hits / len(found) if found else 0.0,
        "recall": hits / len(truth) if truth else 0.0,
        "correct": hits, "mined": len(found), "ground_truth": len(truth),
    }


def evaluate_graph(graph: ConceptGraph, world: Path) -> dict[str, dict[str, float | int]]:
    """Exact-phrase precision / recall of concepts and of is-a edges. Edges are scored among concepts present in
    both graphs (an edge to a concept the miner never saw is a concept miss, not an edge miss)."""
    concepts, edges = ground_truth(world)
    mined = set(graph.phrases)
    shared = mined & concepts
    return {
        "concepts": _scores(mined, concepts),
        "edges": _scores(
            {e for e in graph.edges() if e[0] in shared and e[1] in shared},
            {e for e in edges if e[0] in shared and e[1] in shared},
        ),
    }


def format_scores(scores: dict[str, dict[str, float | int]]) -> str:
    return "; ".join(
        f"{name}: precision {s['precision']:.3f} ({s['correct']}/{s['mined']}), recall {s['recall']:.3f} "
        f"({s['correct']}/{s['ground_truth']})"
        for name, s in scores.items()
    )
