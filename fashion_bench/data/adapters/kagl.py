"""Fashion Product Images (Kaggle, "KAGL"; text-image retrieval), from Kaggle's files or a Hugging Face copy.

Sources, tried in this order:

* ``adapter_args.hf_name``: a Hugging Face dataset by name (``datasets.load_dataset``; offline it must be in the
  local cache), e.g. ``ashraq/fashion-product-images-small`` or ``Marqo/KAGL`` (the latter with
  ``id_column: item_ID, text_column: text, category_column: category2``);
* ``<root>/styles.csv`` with ``<root>/images/<id>.jpg`` (Kaggle; the "small" variant's images are 60 x 80);
* ``<root>`` written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``load_from_disk``).

Images of a Hugging Face dataset are stored in Arrow as encoded bytes; they are written once, undecoded, to
``image_cache`` (default ``<root>/images``; a file is rewritten only when its size differs) so that loader
workers, the missing-image check and ``data verify`` see ordinary files. Images given as paths are used in place.

One image per product, so the identity is the product id and each product's display name is its one text query.
ENCLIP publishes no split: products are split deterministically by a hash of their id (CRC32 mod 100 below
``test_percent`` -> test, below ``test_percent + val_percent`` -> val, else train).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fashion_bench.atomic import atomic_open
from fashion_bench.data.adapters import DatasetInfo, register
from fashion_bench.data.adapters._files import UniqueIds, read_csv
from fashion_bench.data.adapters.manifest import text_queries
from fashion_bench.data.schema import DataError, Item, Split, SplitNotFound, as_id


@dataclass(frozen=True)
class Columns:
    id: str = "id"
    text: str = "productDisplayName"
    image: str = "image"
    category: str = "articleType"


def kagl_loader(
    root: Path,
    dataset: str,
    *,
    hf_name: str | None = None,
    hf_split: str = "train",
    id_column: str = "id",
    text_column: str = "productDisplayName",
    image_column: str = "image",
    category_column: str = "articleType",
    image_cache: str | None = None,
    val_percent: int = 10,
    test_percent: int = 10,
) -> Callable[[str], Split]:
    """See the module docstring; ``*_column`` map the source's columns (``image_column`` only for Hugging Face)."""
    if not (0 <= val_percent and 0 <= test_percent and val_percent + test_percent < 100):
        raise ValueError(f"val_percent ({val_percent}) and test_percent ({test_percent}) must be >= 0 and sum below 100")
    columns = Columns(id_column, text_column, image_column, category_column)
    cache: dict[str, dict[str, list[Item]]] = {}

    def load(split: str) -> Split:
        if "splits" not in cache:
            if hf_name is None and (root / "styles.csv").exists():
                items = read_styles_csv(root / "styles.csv", columns)
            else:
                source = _open_hf(root, hf_name, hf_split)
                items = read_hf(source, hf_name or str(root), columns, root / (image_cache or "images"))
            cache["splits"] = assign_splits(items, val_percent, test_percent)
        items = cache["splits"].get(split)
        if not items:
            raise SplitNotFound(f"{root}: KAGL split '{split}' is empty (splits: { {k: len(v) for k, v in cache['splits'].items()} })")
        table = {item.item_id: item for item in items}
        if split == "train":
            return Split(split, table, list(table), [])
        return text_queries(split, table)

    load.image_root = root  # type: ignore[attr-defined]
    return load


def assign_splits(items: list[Item], val_percent: int, test_percent: int) -> dict[str, list[Item]]:
    splits: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        bucket = zlib.crc32(item.identity.encode()) % 100
        splits["test" if bucket < test_percent else "val" if bucket < test_percent + val_percent else "train"].append(item)
    return dict(splits)


def read_styles_csv(path: Path, columns: Columns) -> list[Item]:
    """Kaggle's styles.csv. Some display names contain unquoted commas; since the name is the last column, the
    extra fields of such a line are joined back into it rather than dropping the line. A byte order mark and
    trailing commas (re-saved copies) are accepted (see ``read_csv``)."""
    header, rows = read_csv(path)
    missing = [c for c in (columns.id, columns.text, columns.category) if c not in header]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; header is {header}")
    text_last = header[-1] == columns.text
    items: list[Item] = []
    ids = UniqueIds("product id")
    for lineno, fields in rows:
        if len(fields) > len(header) and text_last:
            fields = fields[: len(header) - 1] + [",".join(fields[len(header) - 1 :])]
        if len(fields) != len(header):
            raise DataError(f"{path}:{lineno}: malformed line ({len(fields)} fields, the header has {len(header)})")
        row = dict(zip(header, fields))
        where = f"{path}:{lineno}"
        product = as_id(row[columns.id], where, columns.id)
        items.append(_item(row, columns, f"images/{product}.jpg", where, ids))
    return items


def _item(row: dict[str, Any], columns: Columns, image: str, where: str, ids: UniqueIds) -> Item:
    """One product; its id may be a number (Hugging Face copies) or a string (styles.csv): both read the same."""
    product = as_id(row.get(columns.id), where, columns.id)
    ids.add(product, where, shown=f"'{product}'")
    text = str(row.get(columns.text) or "").strip()
    skip = {columns.id, columns.text, columns.image, columns.category}
    attributes = {k: v for k, v in row.items() if k not in skip and isinstance(v, (str, int, float, bool))}
    return Item(product, image, [text] if text else [], product, "", str(row.get(columns.category) or ""), attributes)


def _open_hf(root: Path, name: str | None, split: str) -> Any:
    import datasets

    try:
        if name is not None:
            return datasets.load_dataset(name, split=split)
        if not ((root / "state.json").exists() or (root / "dataset_dict.json").exists()):
            raise DataError(
                f"{root}: no styles.csv and no Hugging Face dataset saved with save_to_disk (state.json or "
                "dataset_dict.json); or name one with --data.adapter_args '{hf_name: ...}'"
            )
        source = datasets.load_from_disk(str(root))
    except DataError:
        raise
    except Exception as err:  # datasets raises many types (FileNotFoundError, ConnectionError, ValueError, ...)
        raise DataError(f"Hugging Face dataset '{name or root}': cannot be loaded ({type(err).__name__}: {err})") from None
    if isinstance(source, datasets.DatasetDict):
        if split not in source:
            raise DataError(f"{root}: the saved DatasetDict has no split '{split}' (found {sorted(source)}); set hf_split")
        source = source[split]
    return source


def read_hf(source: Any, label: str, columns: Columns, image_cache: Path) -> list[Item]:
    """Items of a Hugging Face dataset; encoded image bytes are written once to ``image_cache``."""
    import datasets

    missing = [c for c in (columns.id, columns.text, columns.image, columns.category) if c not in source.column_names]
    if missing:
        raise DataError(f"Hugging Face dataset '{label}': missing columns {missing}; columns are {source.column_names}")
    if isinstance(source.features[columns.image], datasets.Image):
        source = source.cast_column(columns.image, datasets.Image(decode=False))
    image_cache.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []
    ids = UniqueIds("product id")
    for row, record in enumerate(source):
        where = f"Hugging Face dataset '{label}' row {row}"
        items.append(_item(record, columns, _image_file(record[columns.image], row, image_cache, where), where, ids))
    return items


def _image_file(value: Any, row: int, image_cache: Path, where: str) -> str:
    """The file holding one row's image: its own path, or the cache file its bytes are written to."""
    data = value.get("bytes") if isinstance(value, dict) else value
    if isinstance(data, (bytes, bytearray)):
        path = image_cache / f"{row:07d}{_extension(bytes(data))}"
        if not path.exists() or path.stat().st_size != len(data):
            with atomic_open(path, "wb") as fh:
                fh.write(data)
        return str(path)
    path_value = value.get("path") if isinstance(value, dict) else value
    if isinstance(path_value, str) and path_value:
        return path_value
    raise DataError(f"{where}: no image (expected encoded bytes or a path, got {type(value).__name__})")


def _extension(data: bytes) -> str:
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data.startswith(b"\x89PNG"):
        return ".png"
    return ".img"


register(DatasetInfo("kagl", task="t2i", protocol="t2i", loader=kagl_loader))
