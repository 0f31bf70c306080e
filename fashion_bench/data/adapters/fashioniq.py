"""FashionIQ (XiaoxiaoGuo/fashion-iq): composed retrieval over three categories, dress, shirt and toptee.

Expected layout under the root::

    captions/cap.<category>.<split>.json         [{"candidate", "target", "captions": [2 strings]}, ...]
    image_splits/split.<category>.<split>.json   [image id, ...]
    images/<image id>.png (or .jpg)              found by image id, whatever the extension

Splits ``train``, ``val``, ``test`` (test captions have no "target": its queries have no positives, so they can
be ranked and exported but not scored). Item ids are the image ids, except that an image listed in the splits of
two categories becomes one item per category, ``<category>/<image id>``, so that each category's gallery holds
it. A query's id is ``<category>-<index in its caption file>``; every record is a query, including those with an
empty caption (``["", "has bigger image"]`` in the complete files: see ``_cir_common.captions``).

Two named protocols, never to be mixed in one table:

* ``fashioniq`` (dataset name) -> protocol ``fashioniq``: the gallery of a category is its image split
  (the "original split" of CLIP4Cir and most recent papers); the reference is not removed.
* ``fashioniq-valsplit`` -> protocol ``fashioniq-valsplit``: the gallery of a category is the union of the
  split's candidates and targets only (smaller, higher numbers).

Both rank each query only among its category's gallery (``category_gallery``), report R@10 / R@50 per category
and their mean over categories, and the headline (R@10 + R@50) / 2.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

from fashion_bench.data.adapters import DatasetInfo, register
from fashion_bench.data.adapters._cir_common import ImageIndex, captions, identifier, require_known
from fashion_bench.data.adapters._files import UniqueIds, read_json
from fashion_bench.data.schema import DataError, Item, Query, Split, as_id

CATEGORIES = ("dress", "shirt", "toptee")


def fashioniq_loader(
    root: Path, dataset: str, *, categories: Sequence[str] = CATEGORIES, image_dir: str = "images"
) -> Callable[[str], Split]:
    """The gallery follows the dataset name (``fashioniq``: the image split; ``fashioniq-valsplit``: candidates
    and targets only), so that a run's protocol always names the gallery it was scored on.

    Args:
        categories: the categories to load (default all three).
        image_dir: the images folder, relative to the root.
    """
    valsplit = dataset == "fashioniq-valsplit"
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown or not categories:
        raise ValueError(f"dataset '{dataset}': unknown categories {unknown}; choose among {list(CATEGORIES)}")
    if not (root / image_dir).is_dir():
        raise DataError(f"{root / image_dir}: FashionIQ image folder not found (expected images/<image id>.png)")
    images = ImageIndex(root, root / image_dir, recursive=False, by_stem=True)

    def load(split: str) -> Split:
        names = {c: _image_split(root / "image_splits" / f"split.{c}.{split}.json", split) for c in categories}
        listings = Counter(name for c in categories for name in names[c])
        shared = {name for name, count in listings.items() if count > 1}
        suffix = images.common_suffix(".png")
        items: dict[str, Item] = {}
        gallery: list[str] = []
        queries: list[Query] = []
        for category in categories:

            def item_id(name: str, category: str = category) -> str:
                return f"{category}/{name}" if name in shared else name

            part = _category_queries(root, split, category, names[category], item_id)
            by_id = {item_id(name): name for name in names[category]}
            ids = list(dict.fromkeys(i for q in part for i in (q.image, *q.positives)) if valsplit else by_id)
            for i in ids:
                path = images.path(by_id[i], f"{image_dir}/{by_id[i]}{suffix}")
                items[i] = Item(item_id=i, image=path, category=category)
            gallery.extend(ids)
            queries.extend(part)
        result = Split(split, items, gallery, queries)
        result.validate(str(root))
        return result

    load.image_root = root  # type: ignore[attr-defined]
    return load


def _image_split(path: Path, split: str) -> dict[str, None]:
    """The image ids of a category's split file, in order; an id listed twice is an error."""
    seen = UniqueIds("image id")
    names: dict[str, None] = {}
    for n, value in enumerate(read_json(path, list, split=split)):
        where = f"{path} entry {n}"
        name = as_id(value, where, "image id")
        seen.add(name, where)
        names[name] = None
    return names


def _category_queries(
    root: Path, split: str, category: str, listed: dict[str, None], item_id: Callable[[str], str]
) -> list[Query]:
    """The queries of ``cap.<category>.<split>.json``; their images must be in the category's split file. A
    record repeated identically (candidate, target and captions) is an error: the same pair with other captions
    is another query."""
    path = root / "captions" / f"cap.{category}.{split}.json"
    split_file = root / "image_splits" / f"split.{category}.{split}.json"
    queries = []
    records = UniqueIds("record")
    for n, record in enumerate(read_json(path, list, split=split)):
        where = f"{path} record {n}"
        candidate = identifier(record, "candidate", where)
        where = f"{path} record {n} (candidate '{candidate}')"
        target = identifier(record, "target", where) if "target" in record or split != "test" else None
        texts = captions(record, "captions", where, required=target is not None)
        records.add((candidate, target, *texts), where, shown="(same candidate, target and captions)")
        require_known([candidate] + ([target] if target else []), listed, where, "images", split_file)
        queries.append(
            Query(
                query_id=f"{category}-{n}", image=item_id(candidate), text=texts,
                positives=[item_id(target)] if target else [], category=category,
            )
        )
    return queries


register(DatasetInfo("fashioniq", task="cir", protocol="fashioniq", loader=fashioniq_loader))
register(DatasetInfo("fashioniq-valsplit", task="cir", protocol="fashioniq-valsplit", loader=fashioniq_loader))
