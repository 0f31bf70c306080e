"""The faiss index over a catalogue's gallery embeddings: exact below a size, approximate above, recall measured.

Vectors are L2-normalised float32, scored by inner product (the evaluator's ranking). The kind follows the size,
the way autofaiss chooses (docs/search.md):

* ``flat`` (``IndexFlatIP``, exact) below ``flat_below`` vectors (default 100,000);
* ``hnsw`` (``IndexHNSWFlat``, M = 32, inner product) up to ``hnsw_below`` vectors (default 2,000,000) when its
  graph fits beside the vectors in ``memory_budget``: the fastest queries, no training, a slow build;
* ``ivf`` (``IndexIVFFlat``, nlist ~ 4 sqrt(N), k-means on a sample) above: cheap to build and to grow.

An approximate index's search depth (``efSearch`` / ``nprobe``) is the smallest that reaches recall@10 >= 0.95
against exact search on sample catalogue vectors used as queries; its recall is then measured on another, disjoint
sample and stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

DEFAULT_FLAT_BELOW = 100_000
DEFAULT_HNSW_BELOW = 2_000_000
DEFAULT_MEMORY_BUDGET = 16 << 30  # bytes an HNSW graph plus its vectors may take before IVF is preferred
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
TARGET_RECALL = 0.95
RECALL_K = 10
SAMPLE_QUERIES = 1000  # per sample: one tunes the search depth, a disjoint one measures recall
TRAIN_PER_LIST = 64  # IVF k-means training vectors per list (faiss warns below 39)
EF_SEARCH = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


@dataclass(frozen=True)
class IndexPolicy:
    """How the index kind is chosen (see the module docstring)."""

    flat_below: int = DEFAULT_FLAT_BELOW
    hnsw_below: int = DEFAULT_HNSW_BELOW
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    seed: int = 0

    def kind(self, count: int, dim: int) -> str:
        if count < self.flat_below:
            return "flat"
        hnsw_bytes = count * (4 * dim + 2 * HNSW_M * 4)  # vectors + level-0 links (upper levels add ~1/M)
        return "hnsw" if count < self.hnsw_below and hnsw_bytes <= self.memory_budget else "ivf"


@dataclass
class BuiltIndex:
    index: faiss.Index
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    recall_at_10: float = 1.0


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Contiguous float32 rows of unit L2 norm (zero rows stay zero)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def build_index(vectors: np.ndarray, policy: IndexPolicy, kind: str | None = None) -> BuiltIndex:
    """An index of ``vectors`` of the kind the policy (or ``kind``) chooses, tuned and with its recall measured."""
    count, dim = vectors.shape
    kind = kind or policy.kind(count, dim)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return BuiltIndex(index, "flat")
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.add(vectors)
        params: dict[str, Any] = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
    elif kind == "ivf":
        nlist = max(1, min(count // TRAIN_PER_LIST, int(4 * math.sqrt(count))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = policy.seed
        rng = np.random.default_rng(policy.seed)
        sample = rng.choice(count, size=min(count, nlist * TRAIN_PER_LIST), replace=False)
        index.train(vectors[np.sort(sample)])
        index.add(vectors)
        params = {"nlist": nlist, "train_size": int(sample.size)}
    else:
        raise ValueError(f"unknown index kind {kind!r}; expected flat, hnsw or ivf")
    built = BuiltIndex(index, kind, params)
    tune(built, vectors, policy.seed)
    return built


def grow(built: BuiltIndex, vectors: np.ndarray, new: np.ndarray, policy: IndexPolicy) -> BuiltIndex:
    """``built`` (holding ``vectors``) with ``new`` appended; rebuilt when the size calls for another kind,
    else extended in place and its approximate search depth re-tuned."""
    everything = np.concatenate([vectors, new])
    if policy.kind(*everything.shape) != built.kind:
        return build_index(everything, policy)
    built.index.add(new)
    if built.kind != "flat":
        tune(built, everything, policy.seed)
    return built


def tune(built: BuiltIndex, vectors: np.ndarray, seed: int) -> None:
    """Set the smallest search depth reaching TARGET_RECALL on one sample; store the recall on another."""
    tuning, measuring = sample_queries(len(vectors), seed)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    truth_tune = exact.search(vectors[tuning], RECALL_K)[1]
    truth_measure = exact.search(vectors[measuring], RECALL_K)[1]
    name = "efSearch" if built.kind == "hnsw" else "nprobe"
    depths = EF_SEARCH if built.kind == "hnsw" else _powers_of_two(built.index.nlist)
    for depth in depths:
        set_depth(built, name, depth)
        if recall(built.index.search(vectors[tuning], RECALL_K)[1], truth_tune) >= TARGET_RECALL:
            break
    built.recall_at_10 = recall(built.index.search(vectors[measuring], RECALL_K)[1], truth_measure)
    built.params["recall_queries"] = int(len(measuring))


def set_depth(built: BuiltIndex, name: str, depth: int) -> None:
    if name == "efSearch":
        built.index.hnsw.efSearch = depth
    else:
        built.index.nprobe = depth
    built.params[name] = depth


def restore_depth(index: faiss.Index, kind: str, params: dict[str, Any]) -> None:
    """Search depth is not saved in every faiss file: set it from the stored parameters after loading."""
    if kind == "hnsw":
        index.hnsw.efSearch = int(params["efSearch"])
    elif kind == "ivf":
        index.nprobe = int(params["nprobe"])


def sample_queries(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random samples of row numbers (half the rows each when there are few)."""
    order = np.random.default_rng(seed).permutation(count)
    size = min(SAMPLE_QUERIES, max(1, count // 2))
    return order[:size], order[size:2 * size] if count > 1 else order[:size]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each exact top-k found in the approximate top-k."""
    hits = sum(len(set(f[f >= 0]) & set(t[t >= 0])) for f, t in zip(found, truth))
    return hits / max(1, int((truth >= 0).sum()))


def _powers_of_two(limit: int) -> list[int]:
    depths = [1 << i for i in range(int(math.log2(max(1, limit))) + 1)]
    return depths if depths[-1] == limit else [*depths, limit]


def search(index: faiss.Index, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the top ``k`` of each query, among the ``allowed`` rows when given; -1 rows pad."""
    if allowed is None:
        return index.search(queries, k)
    selector = faiss.IDSelectorBatch(allowed.astype(np.int64))
    params = _search_params(index, selector)
    return index.search(queries, k, params=params)


def _search_params(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    return faiss.SearchParameters(sel=selector)
