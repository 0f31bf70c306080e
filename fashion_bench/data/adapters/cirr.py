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
from fashion_bench.data.adapters._cir_common import field, read_json, require_known, string_list
from fashion_bench.data.schema import DataError, Item, Query, Split

NO_TARGET_SPLITS = ("test1",)


def annotation_root(root: Path) -> Path:
    """``root`` when it holds ``captions/``, else ``root/cirr`` when that does (CLIP4Cir's layout)."""
    return root / "cirr" if not (root / "captions").is_dir() and (root / "cirr" / "captions").is_dir() else root


def cirr_loader(root: Path, dataset: str) -> Callable[[str], Split]:
    annotations = annotation_root(root)

    def load(split: str) -> Split:
        split_path = annotations / "image_splits" / f"split.rc2.{split}.json"
        captions_path = annotations / "captions" / f"cap.rc2.{split}.json"
        paths = read_json(split_path, dict, split=split)
        records = read_json(captions_path, list, split=split)
        for name, path in paths.items():
            if not isinstance(path, str) or not path:
                raise DataError(f"{split_path}: image '{name}' must map to a relative path string, got {path!r}")
        items = {name: Item(item_id=name, image=path.removeprefix("./")) for name, path in paths.items()}
        queries = [_query(record, n, split, captions_path, split_path, items) for n, record in enumerate(records)]
        seen: dict[str, int] = {}
        for n, q in enumerate(queries):
            if q.query_id in seen:
                raise DataError(f"{captions_path} record {n}: pairid {q.query_id} repeats record {seen[q.query_id]}")
            seen[q.query_id] = n
        result = Split(split, items, list(items), queries)
        result.validate(str(captions_path))
        return result

    load.image_root = root  # type: ignore[attr-defined]
    return load


def _query(record: object, n: int, split: str, captions_path: Path, split_path: Path, items: dict[str, Item]) -> Query:
    where = f"{captions_path} record {n}"
    pair_id = field(record, "pairid", where, (int, str))
    where = f"{captions_path} record {n} (pairid {pair_id})"
    reference = field(record, "reference", where)
    caption = field(record, "caption", where)
    img_set = field(record, "img_set", where, dict)
    members = string_list(img_set, "members", f"{where} field 'img_set'")
    if reference not in members:
        raise DataError(f"{where}: reference '{reference}' is not among its img_set members {members}")
    target = None if split in NO_TARGET_SPLITS else field(record, "target_hard", where)
    require_known([reference, *members, *([target] if target else [])], items, where, "images", split_path)
    return Query(
        query_id=str(pair_id),
        image=reference,
        text=[caption],
        positives=[target] if target else [],
        exclude=[reference],
        subset=[m for m in members if m != reference],
    )


register(DatasetInfo("cirr", task="cir", protocol="cirr", loader=cirr_loader))
