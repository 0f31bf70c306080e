"""``fashion-bench index``: embed a catalogue with a trained method and persist the index (store.py), or add to one.

Adding reloads the method named by the index's provenance (its checkpoint, checked by sha256), embeds only the
new items, and re-selects the index kind when the size crosses a threshold (else extends the index in place).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fashion_bench.data.adapters.manifest import Catalogue, read_catalogue
from fashion_bench.search.embed import embed_gallery
from fashion_bench.search.index import BuiltIndex, IndexPolicy, build_index, grow
from fashion_bench.search.model import LoadedMethod, ModelLoadError, image_transform, load_method
from fashion_bench.search.store import (
    INDEX_SCHEMA_VERSION, IndexDir, IndexDirError, IndexedItem, read_index_dir, write_index_dir,
)

SHOWN = 5


def build(
    run: str | Path, catalogue: str | Path, out: str | Path, *, policy: IndexPolicy = IndexPolicy(),
    image_root: str | Path | None = None, columns: dict[str, Any] | None = None, device: str = "cpu",
    batch_size: int = 64, num_workers: int = 0, progress: bool = True,
) -> dict[str, Any]:
    """Embed ``catalogue`` with the method of ``run`` and write a new index to ``out``; returns index.json."""
    start = time.perf_counter()
    loaded = load_method(run, device)
    source = read_catalogue(catalogue, columns=columns, image_root=image_root)
    items = indexed_items(source)
    vectors = embed_gallery(loaded.method, [(i.item_id, i.image) for i in items], image_transform(loaded),
                            batch_size=batch_size, num_workers=num_workers, progress=progress)
    built = build_index(vectors, policy)
    info = {
        "schema_version": INDEX_SCHEMA_VERSION,
        **loaded.provenance,
        "target_pad_ratio": loaded.target_pad_ratio,
        "catalogue": str(source.source),
        "image_root": str(source.image_root),
        "catalogues": [catalogue_entry(source, len(items))],
        "created_at": now(),
    }
    info = finish(info, built, vectors, policy, start)
    write_index_dir(Path(out), IndexDir(info, built.index, items, vectors))
    return info


def add(
    out: str | Path, catalogue: str | Path, *, run: str | Path | None = None, policy: IndexPolicy = IndexPolicy(),
    image_root: str | Path | None = None, columns: dict[str, Any] | None = None, device: str = "cpu",
    batch_size: int = 64, num_workers: int = 0, progress: bool = True,
) -> dict[str, Any]:
    """Embed the items of ``catalogue`` with the index's own method and add them to the index in ``out``."""
    start = time.perf_counter()
    existing = read_index_dir(out)
    loaded = reload_method(existing.info, run, device)
    source = read_catalogue(catalogue, columns=columns, image_root=image_root)
    items = indexed_items(source)
    clashes = sorted({i.item_id for i in existing.items} & {i.item_id for i in items})
    if clashes:
        raise IndexDirError(
            f"{source.source}: {len(clashes)} item id(s) already in the index {out}: {', '.join(clashes[:SHOWN])}"
            f"{' ...' if len(clashes) > SHOWN else ''}; give new items new ids"
        )
    new = embed_gallery(loaded.method, [(i.item_id, i.image) for i in items], image_transform(loaded),
                        batch_size=batch_size, num_workers=num_workers, progress=progress)
    built = grow(BuiltIndex(existing.index, existing.info["kind"], dict(existing.info["params"]),
                            existing.info["recall_at_10"]), existing.vectors, new, policy)
    vectors = np.concatenate([existing.vectors, new])
    info = {**existing.info, "catalogues": [*existing.info["catalogues"], catalogue_entry(source, len(items))],
            "updated_at": now()}
    info = finish(info, built, vectors, policy, start)
    write_index_dir(Path(out), IndexDir(info, built.index, [*existing.items, *items], vectors))
    return info


def reload_method(info: dict[str, Any], run: str | Path | None, device: str) -> LoadedMethod:
    """The method an index was built with: from ``run`` when given, else its recorded checkpoint; the checkpoint's
    sha256 must match the recorded one (other weights would embed into another space)."""
    loaded = load_method(run or info["checkpoint"], device)
    if loaded.provenance["checkpoint_sha256"] != info["checkpoint_sha256"]:
        raise ModelLoadError(
            f"{loaded.provenance['checkpoint']}: sha256 {loaded.provenance['checkpoint_sha256'][:12]}... differs from the "
            f"checkpoint the index was built with ({info['checkpoint']}, {info['checkpoint_sha256'][:12]}...); new "
            "items must be embedded by the same weights: build a new index instead"
        )
    return loaded


def indexed_items(source: Catalogue) -> list[IndexedItem]:
    return [
        IndexedItem(r.item_id, str(Path(r.image_path).resolve()), r.identity, r.category,
                    r.texts[0] if r.texts else None, tuple(r.texts))
        for r in source.records
    ]


def catalogue_entry(source: Catalogue, count: int) -> dict[str, Any]:
    return {"source": str(source.source), "image_root": str(source.image_root), "count": count, "added_at": now()}


def finish(info: dict[str, Any], built: BuiltIndex, vectors: np.ndarray, policy: IndexPolicy, start: float) -> dict[str, Any]:
    """index.json's size, kind, recall and timing fields after a build or an add."""
    info.update({
        "count": int(vectors.shape[0]),
        "dimension": int(vectors.shape[1]),
        "kind": built.kind,
        "params": built.params,
        "recall_at_10": round(float(built.recall_at_10), 4),
        "policy": {"flat_below": policy.flat_below, "hnsw_below": policy.hnsw_below,
                   "memory_budget": policy.memory_budget, "seed": policy.seed},
        "build_seconds": round(time.perf_counter() - start, 3),
    })
    return info


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
