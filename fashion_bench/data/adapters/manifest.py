"""Bring your own catalogue: a jsonl or csv manifest of images with an image root.

Columns: ``image`` (required, relative to the root or absolute), ``item_id`` (default: the image path),
``text`` (a string; in csv several texts are separated by ``|``), ``identity`` (default: the item id),
``domain``, ``category``, ``split`` (default: ``test``). Evaluation queries are derived from the catalogue:

* ``t2i``: one text query per identity (its first text), positives = every image of that identity;
* ``id``: every image whose domain is ``query_domain`` is a query against the split's other images, positives =
  the other images of its identity (so a gallery is e.g. shop photos plus other query-domain photos).

Composed retrieval needs triplets, which a catalogue does not have: use the canonical layout for ``cir``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from fashion_bench.data.adapters import DatasetInfo, register
from fashion_bench.data.adapters._files import UniqueIds, read_csv
from fashion_bench.data.schema import DataError, Item, Query, Split, item_from_dict, iter_jsonl


def read_manifest(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) pairs from a jsonl or csv manifest; ``where`` names file and line for error messages.
    A csv manifest may start with a byte order mark and end its lines with commas (see ``read_csv``)."""
    if not path.exists():
        raise DataError(f"{path}: manifest not found")
    if path.suffix != ".csv":
        return [(f"{path}:{lineno}", record) for lineno, record in iter_jsonl(path)]
    header, rows = read_csv(path)
    if "image" not in header:
        raise DataError(f"{path}: csv manifest needs an 'image' column, found {header}")
    records = []
    for lineno, fields in rows:
        if len(fields) > len(header):
            raise DataError(f"{path}:{lineno}: malformed csv line (more fields than the header)")
        row = dict(zip(header, fields))
        records.append((f"{path}:{lineno}", {**row, "text": [t for t in (row.get("text") or "").split("|") if t]}))
    return records


def manifest_loader(
    root: Path, dataset: str, *, manifest: str = "manifest.jsonl", task: str = "t2i", query_domain: str = "query"
) -> Callable[[str], Split]:
    """Item ids are unique across the manifest (whatever the split): an id (or, without ``item_id``, an image
    path) listed twice is an error naming both lines."""
    by_split: dict[str, list[Item]] = defaultdict(list)
    ids = UniqueIds("item_id")
    for where, record in read_manifest(root / manifest):
        record = {**record, "item_id": record.get("item_id") or record.get("image")}
        item = item_from_dict(record, where)
        ids.add(item.item_id, where, shown=f"'{item.item_id}'")
        item.identity = item.identity or item.item_id
        by_split[str(record.get("split") or "test").strip()].append(item)

    def load(split: str) -> Split:
        items = by_split.get(split)
        if not items:
            raise DataError(f"{root / manifest}: no records with split '{split}' (found splits {sorted(by_split)})")
        table = {item.item_id: item for item in items}
        if split == "train":
            return Split(split, table, list(table), [])
        if task == "t2i":
            return text_queries(split, table)
        if task == "id":
            return image_queries(split, table, query_domain)
        raise DataError(f"{root / manifest}: task '{task}' cannot be derived from a catalogue manifest; use the canonical layout")

    load.image_root = root  # type: ignore[attr-defined]
    return load


def text_queries(split: str, items: dict[str, Item]) -> Split:
    """A t2i split of a catalogue: one text query per identity (its first text), positives = its images."""
    by_identity: dict[str, list[str]] = defaultdict(list)
    for item in items.values():
        by_identity[item.identity].append(item.item_id)
    queries = []
    for identity, members in by_identity.items():
        text = next((items[m].text[0] for m in members if items[m].text), None)
        if text is not None:
            queries.append(Query(query_id=f"t2i-{identity}", positives=members, text=[text], category=items[members[0]].category))
    return Split(split, items, list(items), queries)


def image_queries(split: str, items: dict[str, Item], query_domain: str) -> Split:
    """An id split of a catalogue: each ``query_domain`` image queries the others, positives = its identity's."""
    by_identity: dict[str, list[str]] = defaultdict(list)
    for item in items.values():
        by_identity[item.identity].append(item.item_id)
    queries = [
        Query(
            query_id=item.item_id,
            image=item.item_id,
            positives=[m for m in by_identity[item.identity] if m != item.item_id],
            category=item.category,
        )
        for item in items.values()
        if item.domain == query_domain
    ]
    if not queries:
        raise DataError(f"split '{split}': no item has domain '{query_domain}' to serve as an id query")
    return Split(split, items, list(items), queries)


register(DatasetInfo("manifest", task="t2i", protocol="t2i", loader=manifest_loader))
