"""CIRR (Cuberick-Orion/CIRR, branch cirr_dataset): composed retrieval on natural images.

Expected layout under the root (the annotation folders may also sit in ``<root>/cirr/``, as in CLIP4Cir)::

    captions/cap.rc2.<split>.json        [{"pairid", "reference", "target_hard", "target_soft", "caption",
                                           "img_set": {"id", "members": [6 names], ...}}, ...]
    image_splits/split.rc2.<split>.json  {image name: "./dev/dev-244-0-img0.png", ...} (relative to the root)
    train/ dev/ test1/                   the images

Splits ``train``, ``val`` and ``test1`` (no targets: rank and export for the evaluation server with
``--evaluator.cirr_export true``). A query's id is its ``pairid`` (the key of the server's submission files);
its reference is removed from its ranking (``exclude``), its ``subset`` is the other five members of its image
set, and the gallery is the whole split (protocol ``cirr``: R@1/5/10/50, Rsubset@1/2/3, headline
(R@5 + Rsubset@1) / 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from fashion_bench.data.adapters import DatasetInfo, register
from fashion_bench.data.adapters._cir_common import captions, field, identifier, require_known, string_list
from fashion_bench.data.adapters._files import UniqueIds, read_json
from fashion_bench.data.schema import DataError, Item, Query, Split, as_id

NO_TARGET_SPLITS = ("test1",)


def annotation_root(root: Path) -> Path:
    """``root`` when it holds ``captions/``, else ``root/cirr`` when that does (CLIP4Cir's layout)."""
    return root / "cirr" if not (root / "captions").is_dir() and (root / "cirr" / "captions").is_dir() else root


def cirr_loader(root: Path, dataset: str) -> Callable[[str], Split]:
    annotations = annotation_root(root)

    def load(split: str) -> Split:
        split_path = annotations / "image_splits" / f"split.rc2.{split}.json"
        captions_path = annotations / "captions" / f"cap.rc2.{split}.json"
        items = _items(split_path, split)
        pair_ids = UniqueIds("pairid")
        queries = []
        for n, record in enumerate(read_json(captions_path, list, split=split)):
            queries.append(_query(record, n, split, captions_path, split_path, items))
            pair_ids.add(queries[-1].query_id, f"{captions_path} record {n}", shown=queries[-1].query_id)
        result = Split(split, items, list(items), queries)
        result.validate(str(captions_path))
        return result

    load.image_root = root  # type: ignore[attr-defined]
    return load


def _items(split_path: Path, split: str) -> dict[str, Item]:
    """The split file's images (a name written twice is rejected by ``read_json``)."""
    items = {}
    for name, path in read_json(split_path, dict, split=split).items():
        if not isinstance(path, str) or not path.strip():
            raise DataError(f"{split_path}: image '{name}' must map to a relative path string, got {path!r}")
        item_id = as_id(name, str(split_path), "image name")
        if item_id in items:
            raise DataError(f"{split_path}: image '{item_id}' is listed twice (its name once with surrounding spaces)")
        items[item_id] = Item(item_id=item_id, image=path.strip().removeprefix("./"))
    return items


def _query(record: object, n: int, split: str, captions_path: Path, split_path: Path, items: dict[str, Item]) -> Query:
    """One caption record. test1 records have no target; one of them has an empty caption, kept (see
    :func:`~fashion_bench.data.adapters._cir_common.captions`)."""
    where = f"{captions_path} record {n}"
    pair_id = identifier(record, "pairid", where)
    where = f"{captions_path} record {n} (pairid {pair_id})"
    reference = identifier(record, "reference", where)
    img_set = field(record, "img_set", where, dict)
    members = [m.strip() for m in string_list(img_set, "members", f"{where} field 'img_set'")]
    if reference not in members:
        raise DataError(f"{where}: reference '{reference}' is not among its img_set members {members}")
    target = None if split in NO_TARGET_SPLITS else identifier(record, "target_hard", where)
    text = captions(record, "caption", where, required=target is not None)
    require_known([reference, *members, *([target] if target else [])], items, where, "images", split_path)
    return Query(
        query_id=pair_id,
        image=reference,
        text=text,
        positives=[target] if target else [],
        exclude=[reference],
        subset=[m for m in members if m != reference],
    )


register(DatasetInfo("cirr", task="cir", protocol="cirr", loader=cirr_loader))
