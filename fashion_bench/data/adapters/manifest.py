"""Bring your own catalogue: images with titles and product ids in a csv, a jsonl or a Hugging Face dataset saved
on disk (docs/datasets/catalogue.md). Registered as ``catalogue`` (and ``manifest``, its former name).

Fields (each read from the column of the same name, or the one ``columns`` maps it to): ``image`` (required,
relative to the image root or absolute), ``item_id`` (default: the image path), ``text`` (a string or a list;
in csv several texts are separated by ``|``; ``columns`` may map it to several columns), ``identity`` (default:
the item id), ``domain``, ``category``, ``split``. Without a split column, each identity goes to a split by a
hash of its id and ``split_percentages`` (default train 80 / val 10 / test 10), so adding items never moves the
existing identities; the split ``all`` is every record. Evaluation queries are derived from the catalogue:

* ``t2i``: one text query per identity (its first text), positives = every image of that identity;
* ``id``: every image whose domain is ``query_domain`` (every image, when the catalogue has no domains) queries
  the split's other images, positives = the other images of its identity.

Composed retrieval needs triplets, which a catalogue does not have: use the canonical layout for ``cir``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fashion_bench.data.adapters import DatasetInfo, register
from fashion_bench.data.adapters._files import UniqueIds, read_csv
from fashion_bench.data.adapters._hf_dataset import is_saved_dataset, read_saved_dataset
from fashion_bench.data.schema import DataError, Item, Query, Split, item_from_dict, iter_jsonl

FIELDS = ("item_id", "image", "text", "identity", "domain", "category", "split")
CATALOGUE_FILES = ("catalogue.csv", "catalogue.jsonl", "manifest.jsonl", "manifest.csv")
DEFAULT_SPLIT_PERCENTAGES = {"train": 80.0, "val": 10.0, "test": 10.0}
ALL_SPLIT = "all"
MISSING_SHOWN = 5


@dataclass(frozen=True)
class CatalogueRecord:
    where: str  # file:line (or dataset#row), for error messages
    item_id: str
    image: str  # as written: relative to the image root unless absolute
    texts: list[str]
    identity: str
    domain: str | None
    category: str | None
    split: str | None
    image_path: Path  # absolute

    def item(self) -> Item:
        return Item(self.item_id, self.image, list(self.texts), self.identity, self.domain or "", self.category or "")


@dataclass(frozen=True)
class Catalogue:
    source: Path  # the catalogue file, or the saved dataset's folder
    image_root: Path
    records: list[CatalogueRecord]


def catalogue_file(source: str | Path) -> Path:
    """The catalogue a path names: a file, a saved Hugging Face dataset, or a folder holding one of
    ``CATALOGUE_FILES``."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: catalogue not found")
    if path.is_file() or is_saved_dataset(path):
        return path.resolve()
    for name in CATALOGUE_FILES:
        if (path / name).is_file():
            return (path / name).resolve()
    raise DataError(
        f"{path}: no catalogue in this folder (expected one of {', '.join(CATALOGUE_FILES)}, or a Hugging Face "
        "dataset saved with save_to_disk)"
    )


def read_catalogue(
    source: str | Path,
    *,
    columns: dict[str, str | list[str]] | None = None,
    image_root: str | Path | None = None,
    check_images: bool = True,
) -> Catalogue:
    """Every record of a catalogue, validated: the mapped columns exist, ids are unique (an id, or without
    ``item_id`` an image path, listed twice is an error naming both places), the catalogue is not empty and
    (with ``check_images``) every image file exists. ``columns`` maps a field to the column holding it
    (``{"image": "img_path", "text": ["title", "description"], "identity": "sku"}``); ``image_root`` defaults to
    the folder of the catalogue file (a saved dataset's own folder)."""
    path = catalogue_file(source)
    mapping = column_mapping(columns)
    root = Path(image_root).expanduser().resolve() if image_root else (path if path.is_dir() else path.parent)
    available, rows = read_rows(path, mapping["image"][0])
    check_columns(path, mapping, available)
    ids = UniqueIds("item_id")
    records = []
    for where, row in rows:
        record = canonical_record(row, mapping, where, csv=path.suffix == ".csv")
        item = item_from_dict(record, where)
        ids.add(item.item_id, where, shown=f"'{item.item_id}'")
        image = Path(item.image)
        records.append(
            CatalogueRecord(
                where=where,
                item_id=item.item_id,
                image=item.image,
                texts=item.text,
                identity=item.identity or item.item_id,
                domain=item.domain or None,
                category=item.category or None,
                split=str(record["split"]).strip() if record.get("split") not in (None, "") else None,
                image_path=image if image.is_absolute() else root / image,
            )
        )
    if not records:
        raise DataError(f"{path}: empty catalogue (no records)")
    if check_images:
        check_image_files(records, root)
    return Catalogue(source=path, image_root=root, records=records)


def column_mapping(columns: dict[str, str | list[str]] | None) -> dict[str, list[str]]:
    """Field -> the source columns holding it (several only for ``text``); unmapped fields read their own name."""
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(FIELDS))
    if unknown:
        raise DataError(f"columns: unknown field(s) {unknown}; map any of {list(FIELDS)} to a column of the catalogue")
    mapping = {}
    for name in FIELDS:
        value = columns.get(name, name)
        names = [value] if isinstance(value, str) else list(value)
        if not names or not all(isinstance(n, str) and n for n in names) or (len(names) > 1 and name != "text"):
            raise DataError(f"columns: field '{name}' must name one column{' (or a list, for text)' if name == 'text' else ''}, got {value!r}")
        mapping[name] = names
    return mapping


def read_rows(path: Path, image_column: str) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """(columns, [(where, raw record)]) of a csv, a jsonl or a saved Hugging Face dataset."""
    if path.is_dir():
        return read_saved_dataset(path, image_column)
    if path.suffix == ".csv":
        header, fields = read_csv(path)
        rows = []
        for lineno, values in fields:
            if len(values) > len(header):
                raise DataError(f"{path}:{lineno}: malformed csv line (more fields than the header)")
            rows.append((f"{path}:{lineno}", dict(zip(header, values))))
        return header, rows
    rows = [(f"{path}:{lineno}", record) for lineno, record in iter_jsonl(path)]
    return list(dict.fromkeys(key for _, record in rows for key in record)), rows


def check_columns(path: Path, mapping: dict[str, list[str]], available: list[str]) -> None:
    """Every explicitly mapped column, and the image column, is one the catalogue has."""
    for name, sources in mapping.items():
        for column in sources:
            if column not in available and (column != name or name == "image"):
                raise DataError(
                    f"{path}: column '{column}' (for field '{name}') is not in the catalogue; its columns are "
                    f"{available}" + ("" if column != name else f"; map another one with columns: {{{name}: <column>}}")
                )


def canonical_record(row: dict[str, Any], mapping: dict[str, list[str]], where: str, *, csv: bool) -> dict[str, Any]:
    record = {name: row.get(sources[0]) for name, sources in mapping.items() if name != "text"}
    record["text"] = [t for column in mapping["text"] for t in as_texts(row.get(column), where, column, csv=csv)]
    record["item_id"] = record["item_id"] if record["item_id"] not in (None, "") else record["image"]
    return record


def as_texts(value: Any, where: str, column: str, *, csv: bool) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.split("|") if t.strip()] if csv else [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v.strip()]
    raise DataError(f"{where}: column '{column}' (text) must hold a string or a list of strings, got {value!r}")


def check_image_files(records: list[CatalogueRecord], root: Path) -> None:
    missing = [r for r in records if not r.image_path.is_file()]
    if missing:
        shown = "; ".join(f"{r.where}: item '{r.item_id}' image '{r.image}' not found ({r.image_path})" for r in missing[:MISSING_SHOWN])
        more = f" (and {len(missing) - MISSING_SHOWN} more)" if len(missing) > MISSING_SHOWN else ""
        raise DataError(
            f"{len(missing)} of {len(records)} catalogue images are missing: {shown}{more}. Relative image paths are "
            f"read under the image root {root} (set it with image_root)"
        )


def split_of(identity: str, percentages: dict[str, float]) -> str:
    """The split an identity belongs to: a hash of its id placed on the cumulative percentages (stable: the
    same identity always lands in the same split, whatever else the catalogue holds)."""
    point = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big") / 2**64 * 100
    total = 0.0
    for name, share in percentages.items():
        total += share
        if point < total:
            return name
    return name


def split_records(catalogue: Catalogue, percentages: dict[str, float] | None) -> dict[str, list[CatalogueRecord]]:
    """Records by split: the split column's, else hashed by identity."""
    with_split = [r for r in catalogue.records if r.split is not None]
    by_split: dict[str, list[CatalogueRecord]] = defaultdict(list)
    if with_split:
        if percentages:
            raise DataError(f"{catalogue.source}: the catalogue has a split column; split_percentages applies only to catalogues without one")
        if len(with_split) < len(catalogue.records):
            first = next(r for r in catalogue.records if r.split is None)
            raise DataError(f"{first.where}: field 'split' is empty (other records have a split; give every record one)")
        for record in catalogue.records:
            by_split[record.split].append(record)  # type: ignore[index]
        return by_split
    shares = {str(k): float(v) for k, v in (percentages or DEFAULT_SPLIT_PERCENTAGES).items()}
    if any(v < 0 for v in shares.values()) or abs(sum(shares.values()) - 100) > 1e-6:
        raise DataError(f"split_percentages must be non-negative and sum to 100, got {shares}")
    for record in catalogue.records:
        by_split[split_of(record.identity, shares)].append(record)
    return by_split


def catalogue_loader(
    root: Path,
    dataset: str,
    *,
    manifest: str | None = None,
    columns: dict[str, str | list[str]] | None = None,
    image_root: str | None = None,
    split_percentages: dict[str, float] | None = None,
    check_images: bool = True,
    task: str = "t2i",
    query_domain: str | None = "query",
) -> Callable[[str], Split]:
    """``root`` is the catalogue (file or folder; ``manifest`` names a file in it)."""
    catalogue = read_catalogue(root / manifest if manifest else root, columns=columns, image_root=image_root, check_images=check_images)
    by_split = split_records(catalogue, split_percentages)

    def load(split: str) -> Split:
        records = catalogue.records if split == ALL_SPLIT else by_split.get(split)
        if not records:
            raise DataError(
                f"{catalogue.source}: no records in split '{split}' (splits: {sorted(by_split)}, or '{ALL_SPLIT}' for every record)"
            )
        table = {r.item_id: r.item() for r in records}
        if split == "train":
            return Split(split, table, list(table), [])
        if task == "t2i":
            return text_queries(split, table)
        if task == "id":
            return image_queries(split, table, query_domain)
        raise DataError(f"{catalogue.source}: task '{task}' cannot be derived from a catalogue; use the canonical layout")

    load.image_root = catalogue.image_root  # type: ignore[attr-defined]
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


def image_queries(split: str, items: dict[str, Item], query_domain: str | None) -> Split:
    """An id split of a catalogue: each ``query_domain`` image (each image, when no item has a domain) queries
    the others, positives = its identity's other images."""
    by_identity: dict[str, list[str]] = defaultdict(list)
    for item in items.values():
        by_identity[item.identity].append(item.item_id)
    every_image = query_domain is None or not any(item.domain for item in items.values())
    queries = [
        Query(
            query_id=item.item_id,
            image=item.item_id,
            positives=[m for m in by_identity[item.identity] if m != item.item_id],
            category=item.category,
        )
        for item in items.values()
        if every_image or item.domain == query_domain
    ]
    if not queries:
        raise DataError(f"split '{split}': no item has domain '{query_domain}' to serve as an id query")
    return Split(split, items, list(items), queries)


for _name in ("catalogue", "manifest"):
    register(DatasetInfo(_name, task="t2i", protocol="t2i", loader=catalogue_loader))


def parse_columns(text: str) -> dict[str, str | list[str]]:
    """``image=img_path,text=title+description`` -> ``{"image": "img_path", "text": ["title", "description"]}``."""
    columns: dict[str, str | list[str]] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise DataError(f"--columns: expected field=column pairs separated by commas, got '{pair}'")
        names = [c.strip() for c in column.split("+")]
        columns[field.strip()] = names if len(names) > 1 else names[0]
    return columns
