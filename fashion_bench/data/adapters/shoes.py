"""Shoes relative captions (XiaoxiaoGuo/fashion-retrieval, ``dataset/``): composed retrieval on shoe photos.

Expected layout under the root::

    relative_captions_shoes.json   [{"ImageName" (target), "ReferenceImageName", "RelativeCaption"}, ...]
    train_im_names.txt             one image name per line
    eval_im_names.txt
    ... img_womens_<type>_<n>.jpg  anywhere below the root (or below ``image_dir``): indexed once by file name

Splits ``train`` and ``test``: a triplet belongs to the split whose name list holds its reference image (8,990 /
1,761 on the full data), and its target must be in the same list. The test gallery is every image of
``eval_im_names.txt`` (4,658); the reference is removed from its ranking (protocol ``shoes``: R@1, R@10, R@50
and their mean). A query's id is ``shoes-<index in the caption file>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from fashion_bench.data.adapters import DatasetInfo, register
from fashion_bench.data.adapters._cir_common import ImageIndex, field, read_json, read_lines
from fashion_bench.data.schema import DataError, Item, Query, Split, SplitNotFound

CAPTIONS = "relative_captions_shoes.json"
NAME_LISTS = {"train": "train_im_names.txt", "test": "eval_im_names.txt"}
_TYPE = re.compile(r"^img_womens_(.+)_\d+\.\w+$")


def shoes_loader(root: Path, dataset: str, *, image_dir: str = "") -> Callable[[str], Split]:
    """Args:
    image_dir: the folder searched recursively for images, relative to the root (default: the root).
    """
    if not (root / image_dir).is_dir():
        raise DataError(f"{root / image_dir}: Shoes image folder not found")
    images = ImageIndex(root, root / image_dir, recursive=True, by_stem=False)
    parsed: list[tuple[dict[str, dict[str, int]], dict[str, list[tuple[int, dict]]]]] = []

    def load(split: str) -> Split:
        if split not in NAME_LISTS:
            raise SplitNotFound(f"{root}: Shoes has the splits {sorted(NAME_LISTS)}, not '{split}'")
        if not parsed:
            parsed.append(_read_triplets(root))
        names, triplets = parsed[0]
        items = {n: Item(item_id=n, image=images.path(n, n), category=_shoe_type(n)) for n in names[split]}
        queries = [
            Query(
                query_id=f"shoes-{n}", image=r["ReferenceImageName"], text=[r["RelativeCaption"]],
                positives=[r["ImageName"]], category=_shoe_type(r["ReferenceImageName"]),
            )
            for n, r in triplets[split]
        ]
        result = Split(split, items, list(names[split]), queries)
        result.validate(str(root / CAPTIONS))
        return result

    load.image_root = root  # type: ignore[attr-defined]
    return load


def _read_triplets(root: Path) -> tuple[dict[str, dict[str, int]], dict[str, list[tuple[int, dict]]]]:
    """The name lists (name -> line) and the caption records (index, record) of each split, assigned by
    reference image."""
    captions_path = root / CAPTIONS
    names = {s: {name: line for line, name in read_lines(root / f, split=s)} for s, f in NAME_LISTS.items()}
    both = sorted(set(names["train"]) & set(names["test"]))
    if both:
        raise DataError(f"{root}: images listed in both {NAME_LISTS['train']} and {NAME_LISTS['test']}: {both[:3]}")
    triplets: dict[str, list[tuple[int, dict]]] = {s: [] for s in NAME_LISTS}
    for n, record in enumerate(read_json(captions_path, list, split="train and test")):
        where = f"{captions_path} record {n}"
        reference = field(record, "ReferenceImageName", where)
        target = field(record, "ImageName", where)
        field(record, "RelativeCaption", where)
        where = f"{where} (reference '{reference}', target '{target}')"
        split = next((s for s in NAME_LISTS if reference in names[s]), None)
        if split is None:
            raise DataError(f"{where}: the reference image is in neither {NAME_LISTS['train']} nor {NAME_LISTS['test']}")
        if target not in names[split]:
            raise DataError(f"{where}: the target image is not in {NAME_LISTS[split]}, the list of its reference")
        triplets[split].append((n, record))
    return names, triplets


def _shoe_type(name: str) -> str:
    match = _TYPE.match(name)
    return match.group(1) if match else ""


register(DatasetInfo("shoes", task="cir", protocol="shoes", loader=shoes_loader))
