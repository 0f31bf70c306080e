"""The index directory: what ``fashion-bench index`` writes and ``search`` / ``serve`` read (docs/search.md).

::

    <out>/index.faiss    the faiss index (row r = line r of items.jsonl = row r of vectors.npy)
    <out>/items.jsonl    item_id, image (absolute path), identity, category, text (first), texts
    <out>/vectors.npy    float32 [N, D] L2-normalised gallery embeddings (for adding items and rebuilding)
    <out>/index.json     provenance: schema version, method and checkpoint (sha256), encoder, catalogues, kind,
                         its parameters, recall@10 against exact search, timings

Every file is written atomically; index.json last, so a directory with an index.json is complete.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from fashion_bench.atomic import atomic_open, write_json_atomic

INDEX_SCHEMA_VERSION = 1
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.jsonl"
VECTORS_FILE = "vectors.npy"
INFO_FILE = "index.json"


class IndexDirError(ValueError):
    """A missing or inconsistent index directory (named in the message)."""


@dataclass(frozen=True)
class IndexedItem:
    item_id: str
    image: str  # absolute path
    identity: str | None
    category: str | None
    text: str | None
    texts: tuple[str, ...] = ()


@dataclass
class IndexDir:
    info: dict[str, Any]
    index: faiss.Index
    items: list[IndexedItem]
    vectors: np.ndarray


def write_index_dir(out: Path, contents: IndexDir) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / INDEX_FILE, "wb") as fh:
        fh.write(faiss.serialize_index(contents.index).tobytes())
    with atomic_open(out / ITEMS_FILE) as fh:
        for item in contents.items:
            fh.write(json.dumps({**asdict(item), "texts": list(item.texts)}, ensure_ascii=False) + "\n")
    with atomic_open(out / VECTORS_FILE, "wb") as fh:
        np.save(fh, contents.vectors)
    write_json_atomic(out / INFO_FILE, contents.info)


def read_index_dir(directory: str | Path) -> IndexDir:
    directory = Path(directory)
    info_path = directory / INFO_FILE
    if not info_path.is_file():
        raise IndexDirError(f"{directory}: not an index directory (no {INFO_FILE}); build one with `fashion-bench index`")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if info.get("schema_version") != INDEX_SCHEMA_VERSION:
        raise IndexDirError(
            f"{info_path}: schema_version {info.get('schema_version')!r}, this fashion-bench reads {INDEX_SCHEMA_VERSION}"
        )
    for name in (INDEX_FILE, ITEMS_FILE, VECTORS_FILE):
        if not (directory / name).is_file():
            raise IndexDirError(f"{directory}: {name} is missing")
    index = faiss.deserialize_index(np.fromfile(directory / INDEX_FILE, dtype=np.uint8))
    items = [_item(line, f"{directory / ITEMS_FILE}:{n}")
             for n, line in enumerate((directory / ITEMS_FILE).read_text(encoding="utf-8").splitlines(), 1) if line]
    vectors = np.load(directory / VECTORS_FILE)
    if not (index.ntotal == len(items) == len(vectors) == info.get("count")):
        raise IndexDirError(
            f"{directory}: inconsistent sizes (index {index.ntotal}, {ITEMS_FILE} {len(items)}, {VECTORS_FILE} "
            f"{len(vectors)}, {INFO_FILE} count {info.get('count')}); rebuild it"
        )
    return IndexDir(info, index, items, vectors)


def _item(line: str, where: str) -> IndexedItem:
    try:
        record = json.loads(line)
        return IndexedItem(record["item_id"], record["image"], record.get("identity"), record.get("category"),
                           record.get("text"), tuple(record.get("texts") or ()))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise IndexDirError(f"{where}: malformed item record ({err})") from err
