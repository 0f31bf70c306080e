"""Canonical records every dataset adapter produces (DESIGN.md section 1) and their on-disk layout.

A *split* of a dataset is three things:

* ``items``: every image the split uses (gallery images, query reference images, training images), keyed by
  ``item_id``;
* ``gallery``: the ordered item ids that are ranked at evaluation (and, for ``t2i`` / ``id``, the training
  images of a training split);
* ``queries``: evaluation queries, and for ``cir`` the training triplets (reference image + text -> target).

The canonical layout on disk (written by the synthetic world and by ``fashion-bench data`` converters, read by
:func:`read_split`) is::

    <root>/items.jsonl                     one Item per line, plus a "split" field
    <root>/images/...                      image files, paths in items.jsonl relative to <root>
    <root>/<dataset>/<split>/gallery.txt   one item id per line
    <root>/<dataset>/<split>/queries.jsonl one Query per line
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from fashion_bench.atomic import atomic_open, write_text_atomic


class DataError(ValueError):
    """A dataset file or record is malformed; the message names the file, the record and the field."""


class SplitNotFound(DataError):
    """A split's files are absent (rather than malformed); ``fashion-bench data verify`` reports the split as
    not present and goes on with the others."""


@dataclass
class Item:
    item_id: str
    image: str
    text: list[str] = field(default_factory=list)
    identity: str = ""
    domain: str = ""
    category: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Query:
    query_id: str
    positives: list[str]
    image: str | None = None
    text: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    subset: list[str] = field(default_factory=list)
    category: str = ""
    group: str = ""  # queries that share a group (e.g. a product family) are resampled together by the bootstrap


@dataclass
class Split:
    """One split of one dataset in canonical form."""

    name: str
    items: dict[str, Item]
    gallery: list[str]
    queries: list[Query]

    def validate(self, source: str) -> None:
        """Check referential integrity and unique gallery and query ids; ``source`` names the files in error
        messages. (A duplicated gallery id would let a copy that is not a positive win a tie.)"""
        if not self.gallery and not self.queries:
            raise DataError(f"{source}: split '{self.name}' is empty (no gallery items and no queries)")
        _require_unique(self.gallery, f"{source}: split '{self.name}' gallery")
        _require_unique([q.query_id for q in self.queries], f"{source}: split '{self.name}' queries")
        for item_id in self.gallery:
            if item_id not in self.items:
                raise DataError(f"{source}: gallery item '{item_id}' has no record in items")
        gallery = set(self.gallery)
        for q in self.queries:
            if q.image is not None and q.image not in self.items:
                raise DataError(f"{source}: query '{q.query_id}' field 'image': item '{q.image}' is not in the split")
            for fname in ("positives", "exclude", "subset"):
                missing = [i for i in getattr(q, fname) if i not in gallery]
                if missing:
                    raise DataError(
                        f"{source}: query '{q.query_id}' field '{fname}': {missing[:3]} not in the '{self.name}' gallery"
                    )


def _require_unique(ids: list[str], where: str) -> None:
    first: dict[str, int] = {}
    for n, item_id in enumerate(ids):
        if item_id in first:
            raise DataError(f"{where}: id '{item_id}' at position {n} repeats position {first[item_id]}")
        first[item_id] = n


def as_id(value: Any, where: str, key: str) -> str:
    """An id as a string: the same id may be written as a number in one file and a string in another (``1163``,
    ``"1163"``, ``1163.0`` from a spreadsheet); surrounding whitespace is dropped. Empty or other types raise."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: field '{key}' must be a string or an integer id, got {value!r}")
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: field '{key}' is empty")
    return text


ITEM_FIELDS = {f for f in Item.__dataclass_fields__}
QUERY_FIELDS = {f for f in Query.__dataclass_fields__}


def _as_text_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise DataError(f"{where} field 'text': expected a string or a list of strings, got {type(value).__name__}")


def item_from_dict(record: dict[str, Any], where: str) -> Item:
    for key in ("item_id", "image"):
        if key not in record or record[key] in (None, ""):
            raise DataError(f"{where}: missing required field '{key}'")
    kwargs = {k: v for k, v in record.items() if k in ITEM_FIELDS}
    kwargs["item_id"] = as_id(kwargs["item_id"], where, "item_id")
    kwargs["text"] = _as_text_list(record.get("text"), where)
    for key in ("domain", "category"):
        kwargs[key] = "" if record.get(key) is None else str(record[key])
    kwargs["identity"] = "" if record.get("identity") in (None, "") else as_id(record["identity"], where, "identity")
    return Item(**kwargs)


def query_from_dict(record: dict[str, Any], where: str) -> Query:
    for key in ("query_id", "positives"):
        if key not in record:
            raise DataError(f"{where}: missing required field '{key}'")
    if not isinstance(record["positives"], list):
        raise DataError(f"{where} field 'positives': expected a list of item ids, got {type(record['positives']).__name__}")
    kwargs = {k: v for k, v in record.items() if k in QUERY_FIELDS}
    kwargs["query_id"] = as_id(record["query_id"], where, "query_id")
    kwargs["text"] = _as_text_list(record.get("text"), where)
    if record.get("image") is None and not any(t.strip() for t in kwargs["text"]):
        raise DataError(f"{where}: a query needs an 'image', a non-empty 'text', or both")
    if record.get("image") is not None:
        kwargs["image"] = as_id(record["image"], where, "image")
    for key in ("positives", "exclude", "subset"):
        kwargs[key] = [as_id(v, where, key) for v in record.get(key) or []]
    kwargs["group"] = "" if record.get("group") in (None, "") else as_id(record["group"], where, "group")
    return Query(**kwargs)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record); a malformed line raises DataError naming file and line."""
    with open(path, encoding="utf-8-sig") as fh:  # a byte order mark at the start is skipped
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write atomically (temporary file, then rename)."""
    with atomic_open(path) as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_items(root: Path, split: str | None = None) -> dict[str, Item]:
    """Items of ``root/items.jsonl`` (all, or those whose "split" field equals ``split``)."""
    path = root / "items.jsonl"
    if not path.exists():
        raise DataError(f"{path}: items manifest not found")
    items: dict[str, Item] = {}
    for lineno, record in iter_jsonl(path):
        if split is not None and record.get("split") != split:
            continue
        item = item_from_dict(record, f"{path}:{lineno}")
        if item.item_id in items:
            raise DataError(f"{path}:{lineno}: duplicate item_id '{item.item_id}'")
        items[item.item_id] = item
    return items


def read_split(root: Path, dataset: str, split: str, items: dict[str, Item] | None = None) -> Split:
    """Read one split of a dataset in the canonical layout (see module docstring)."""
    split_dir = root / dataset / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split directory not found (expected gallery.txt and queries.jsonl)")
    items = read_items(root) if items is None else items
    gallery_path = split_dir / "gallery.txt"
    gallery = [line.strip() for line in gallery_path.read_text(encoding="utf-8-sig").splitlines() if line.strip()] if gallery_path.exists() else []
    queries_path = split_dir / "queries.jsonl"
    queries = (
        [query_from_dict(r, f"{queries_path}:{n}") for n, r in iter_jsonl(queries_path)] if queries_path.exists() else []
    )
    used = set(gallery)
    for q in queries:
        used.update(q.positives)
        used.update(q.exclude)
        used.update(q.subset)
        if q.image is not None:
            used.add(q.image)
    missing = sorted(used - items.keys())
    if missing:
        raise DataError(f"{split_dir}: {len(missing)} referenced item ids have no record in items.jsonl, e.g. {missing[:3]}")
    result = Split(name=split, items={i: items[i] for i in sorted(used)}, gallery=gallery, queries=queries)
    result.validate(str(split_dir))
    return result


def write_split(root: Path, dataset: str, split: Split) -> None:
    split_dir = root / dataset / split.name
    write_text_atomic(split_dir / "gallery.txt", "".join(f"{i}\n" for i in split.gallery))
    write_jsonl(split_dir / "queries.jsonl", (query_record(q) for q in split.queries))


def query_record(query: Query) -> dict[str, Any]:
    """A query as a queries.jsonl record; ``group`` only where the query has one."""
    record = asdict(query)
    if not record["group"]:
        del record["group"]
    return record


def item_record(item: Item, split: str) -> dict[str, Any]:
    record = asdict(item)
    record["split"] = split
    return record
