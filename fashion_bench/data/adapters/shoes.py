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
from typing import Callable, NamedTuple

from fashion_bench.data.adapters import DatasetInfo, register
from fashion_bench.data.adapters._cir_common import ImageIndex, captions, identifier
from fashion_bench.data.adapters._files import UniqueIds, read_json, read_lines
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
    parsed: list[tuple[dict[str, dict[str, int]], dict[str, list[Triplet]]]] = []

    def load(split: str) -> Split:
        if split not in NAME_LISTS:
            raise SplitNotFound(f"{root}: Shoes has the splits {sorted(NAME_LISTS)}, not '{split}'")
        if not parsed:
            parsed.append(_read_triplets(root))
        names, triplets = parsed[0]
        items = {n: Item(item_id=n, image=images.path(n, n), category=_shoe_type(n)) for n in names[split]}
        queries = [
            Query(query_id=f"shoes-{t.index}", image=t.reference, text=t.text, positives=[t.target],
                  category=_shoe_type(t.reference))
            for t in triplets[split]
        ]
        result = Split(split, items, list(names[split]), queries)
        result.validate(str(root / CAPTIONS))
        return result

    load.image_root = root  # type: ignore[attr-defined]
    return load


class Triplet(NamedTuple):
    index: int
    reference: str
    target: str
    text: list[str]


def _name_list(path: Path, split: str) -> dict[str, int]:
    """Image name -> line of a name list; a name listed twice is an error."""
    seen = UniqueIds("image name")
    names = {}
    for line, name in read_lines(path, split=split):
        seen.add(name, f"{path}:{line}")
        names[name] = line
    return names


def _read_triplets(root: Path) -> tuple[dict[str, dict[str, int]], dict[str, list[Triplet]]]:
    """The name lists (name -> line) and the caption records of each split, assigned by reference image. A record
    repeated identically (reference, target and caption) is an error; the same pair with another caption is
    another query."""
    captions_path = root / CAPTIONS
    names = {s: _name_list(root / f, s) for s, f in NAME_LISTS.items()}
    both = sorted(set(names["train"]) & set(names["test"]))
    if both:
        raise DataError(f"{root}: images listed in both {NAME_LISTS['train']} and {NAME_LISTS['test']}: {both[:3]}")
    triplets: dict[str, list[Triplet]] = {s: [] for s in NAME_LISTS}
    records = UniqueIds("record")
    for n, record in enumerate(read_json(captions_path, list, split="train and test")):
        where = f"{captions_path} record {n}"
        reference = identifier(record, "ReferenceImageName", where)
        target = identifier(record, "ImageName", where)
        where = f"{where} (reference '{reference}', target '{target}')"
        text = captions(record, "RelativeCaption", where, required=True)
        records.add((reference, target, *text), where, shown="(same reference, target and caption)")
        split = next((s for s in NAME_LISTS if reference in names[s]), None)
        if split is None:
            raise DataError(f"{where}: the reference image is in neither {NAME_LISTS['train']} nor {NAME_LISTS['test']}")
        if target not in names[split]:
            raise DataError(f"{where}: the target image is not in {NAME_LISTS[split]}, the list of its reference")
        triplets[split].append(Triplet(n, reference, target, text))
    return names, triplets


def _shoe_type(name: str) -> str:
    match = _TYPE.match(name)
    return match.group(1) if match else ""


register(DatasetInfo("shoes", task="cir", protocol="shoes", loader=shoes_loader))
