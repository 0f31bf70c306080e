"""DeepFashion In-shop Clothes Retrieval (instance retrieval): ``list_eval_partition.txt`` and ``img/...``.

``list_eval_partition.txt`` is a count line, a header line (``image_name item_id evaluation_status``), then one
whitespace-separated record per image with status ``train``, ``query`` or ``gallery``. The ``train`` split is
the training images; ``val`` and ``test`` are both query -> gallery retrieval (the benchmark has no separate
validation set), a gallery image being relevant when it shows the query's item id. With ``use_bbox`` the images
are cropped to the boxes of ``list_bbox_inshop.txt`` (``image_name clothes_type pose_type x_1 y_1 x_2 y_2``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator

from fashion_bench.data.adapters import DatasetInfo, register
from fashion_bench.data.adapters._files import ENCODING, UniqueIds
from fashion_bench.data.schema import DataError, Item, Query, Split
from fashion_bench.data.transforms import crop_image_ref

PARTITION = "list_eval_partition.txt"
BBOX = "list_bbox_inshop.txt"
STATUSES = ("train", "query", "gallery")


def inshop_loader(root: Path, dataset: str, *, use_bbox: bool = False) -> Callable[[str], Split]:
    cache: dict[str, dict[str, list[Item]]] = {}

    def load(split: str) -> Split:
        if split not in ("train", "val", "test"):
            raise DataError(f"{root / PARTITION}: In-shop has splits train, val and test (val = test), not '{split}'")
        if "by_status" not in cache:
            boxes = read_boxes(root / BBOX) if use_bbox else None
            cache["by_status"] = read_partition(root / PARTITION, boxes)
        by_status = cache["by_status"]
        if split == "train":
            items = {it.item_id: it for it in by_status["train"]}
            return Split(split, items, list(items), [])
        return query_gallery_split(split, by_status["query"], by_status["gallery"])

    load.image_root = root  # type: ignore[attr-defined]
    return load


def _records(path: Path, header: list[str]) -> Iterator[tuple[str, list[str]]]:
    """(where, fields) of a DeepFashion list file, after checking its header and its announced record count."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    lines = path.read_text(encoding=ENCODING).splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DataError(f"{path}:1: expected the record count on the first line, found {lines[:1]}")
    if lines[1].split() != header:
        raise DataError(f"{path}:2: expected the header {' '.join(header)!r}, found {lines[1].strip()!r}")
    records = [(f"{path}:{n}", line.split()) for n, line in enumerate(lines[2:], start=3) if line.strip()]
    if len(records) != int(lines[0]):
        raise DataError(f"{path}: announces {int(lines[0])} records but holds {len(records)} (truncated file?)")
    for where, fields in records:
        if len(fields) != len(header):
            raise DataError(f"{where}: expected {len(header)} fields ({' '.join(header)}), found {len(fields)}")
        yield where, fields


def read_boxes(path: Path) -> dict[str, tuple[int, int, int, int]]:
    header = ["image_name", "clothes_type", "pose_type", "x_1", "y_1", "x_2", "y_2"]
    boxes = {}
    names = UniqueIds("image_name")
    for where, fields in _records(path, header):
        names.add(fields[0], where, shown=f"'{fields[0]}'")
        try:
            box = tuple(int(v) for v in fields[3:])
        except ValueError:
            raise DataError(f"{where}: box {fields[3:]} is not four integers") from None
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DataError(f"{where}: empty box {list(box)} (expected x_1 < x_2 and y_1 < y_2)")
        boxes[fields[0]] = box
    return boxes  # type: ignore[return-value]


def read_partition(path: Path, boxes: dict[str, tuple[int, int, int, int]] | None) -> dict[str, list[Item]]:
    by_status: dict[str, list[Item]] = {s: [] for s in STATUSES}
    names = UniqueIds("image_name")
    for where, (image, identity, status) in _records(path, ["image_name", "item_id", "evaluation_status"]):
        if status not in STATUSES:
            raise DataError(f"{where}: evaluation_status '{status}' is not one of {list(STATUSES)}")
        names.add(image, where, shown=f"'{image}'")
        if boxes is not None and image not in boxes:
            raise DataError(f"{where}: image '{image}' has no box in {path.parent / BBOX}")
        parts = Path(image).parts
        category = "/".join(parts[1:3]) if len(parts) > 3 else ""
        ref = crop_image_ref(image, boxes[image]) if boxes is not None else image
        by_status[status].append(Item(image, ref, [], identity, "", category))
    return by_status


def query_gallery_split(split: str, queries: list[Item], gallery: list[Item]) -> Split:
    by_identity: dict[str, list[str]] = defaultdict(list)
    for item in gallery:
        by_identity[item.identity].append(item.item_id)
    items = {it.item_id: it for it in (*gallery, *queries)}
    return Split(
        split,
        items,
        [it.item_id for it in gallery],
        [Query(it.item_id, list(by_identity.get(it.identity, [])), image=it.item_id, category=it.category) for it in queries],
    )


register(DatasetInfo("inshop", task="id", protocol="inshop", loader=inshop_loader))
