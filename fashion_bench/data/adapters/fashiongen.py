"""FashionGen (text-image retrieval): the HDF5 releases ``fashiongen_256_256_{train,validation}.h5``.

Each row of a file is one image (``input_image``, N x 256 x 256 x 3 uint8) with its product's texts and ids
(byte strings, N x 1). Items reference their pixels as ``<file>#input_image/<row>`` (see
``fashion_bench.data.transforms``): nothing is extracted to disk, only the text columns are read here. Queries
are one text per product (its description), relevant to every image of that product; the ``t2i`` protocol
scores text-to-image and image-to-text over the full gallery.

FashionGen's test set was never released, so ``val`` and ``test`` both read the validation file, as the papers do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from fashion_bench.data.adapters import DatasetInfo, register
from fashion_bench.data.adapters.manifest import text_queries
from fashion_bench.data.schema import DataError, Item, Split, SplitNotFound
from fashion_bench.data.transforms import h5_dataset, h5_image_ref

IMAGE_KEY = "input_image"
ID_KEY = "input_productID"
CATEGORY_KEY = "input_category"
DEFAULT_FILES = {
    "train": "fashiongen_256_256_train.h5",
    "val": "fashiongen_256_256_validation.h5",
    "test": "fashiongen_256_256_validation.h5",
}


def fashiongen_loader(
    root: Path,
    dataset: str,
    *,
    files: dict[str, str] | None = None,
    text_keys: Sequence[str] = ("input_description",),
) -> Callable[[str], Split]:
    """Args:
    files: split name -> HDF5 file name under ``root`` (default: the release's names, val = test = validation).
    text_keys: text datasets joined (". ") into an item's text; e.g. ``[input_name, input_description]`` for
        title + description as in FashionBERT-style evaluations.
    """
    files = {**DEFAULT_FILES, **(files or {})}

    def load(split: str) -> Split:
        if split not in files:
            raise DataError(f"{root}: FashionGen has no split '{split}'; known splits {sorted(files)}")
        return read_fashiongen(root / files[split], split, list(text_keys), relative_to=root)

    load.image_root = root  # type: ignore[attr-defined]
    return load


def _strings(path: Path, key: str) -> list[str]:
    values = h5_dataset(path, key, str(path))[()]
    return [_decode(v.reshape(-1)[0] if getattr(v, "ndim", 0) else v) for v in values]


def _decode(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8").strip()
        except UnicodeDecodeError:
            return value.decode("latin-1").strip()
    return str(value).strip()


def read_fashiongen(path: Path, split: str, text_keys: list[str], relative_to: Path) -> Split:
    """One FashionGen HDF5 file as a canonical split (a training split has no queries)."""
    if not path.exists():
        raise SplitNotFound(f"{path}: HDF5 file not found")
    images = h5_dataset(path, IMAGE_KEY, str(path))
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != "uint8":
        raise DataError(f"{path}: dataset '{IMAGE_KEY}' must be N x H x W x 3 uint8, found {images.shape} {images.dtype}")
    columns = {key: _strings(path, key) for key in dict.fromkeys([ID_KEY, CATEGORY_KEY, *text_keys])}
    n = len(images)
    for key, values in columns.items():
        if len(values) != n:
            raise DataError(f"{path}: dataset '{key}' has {len(values)} rows but '{IMAGE_KEY}' has {n} (truncated file?)")
    try:
        ref = path.relative_to(relative_to)
    except ValueError:
        ref = path
    items: dict[str, Item] = {}
    for row in range(n):
        product = columns[ID_KEY][row]
        if not product:
            raise DataError(f"{path}: row {row}: empty '{ID_KEY}'")
        text = ". ".join(t.rstrip(".") for t in (columns[k][row] for k in text_keys) if t)
        item_id = f"{split}-{row}"
        items[item_id] = Item(
            item_id=item_id,
            image=h5_image_ref(ref, IMAGE_KEY, row),
            text=[text] if text else [],
            identity=product,
            category=columns[CATEGORY_KEY][row],
        )
    if split == "train":
        return Split(split, items, list(items), [])
    return text_queries(split, items)


register(DatasetInfo("fashiongen", task="t2i", protocol="t2i", loader=fashiongen_loader))
