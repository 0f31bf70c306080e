"""FashionGen adapter: HDF5 rows as image references, product-id relevance, bad files named."""

from __future__ import annotations

import os

import numpy as np
import pytest
from _fixtures_t2i_id import COLOURS, validate, write_fashiongen

from fashion_bench.data.adapters import open_dataset
from fashion_bench.data.schema import DataError
from fashion_bench.data.transforms import decode_image, image_available

VAL = "fashiongen_256_256_validation.h5"
TRAIN = "fashiongen_256_256_train.h5"
PRODUCTS = {"p1": 2, "p2": 1, "p3": 3}


@pytest.fixture
def root(tmp_path):
    write_fashiongen(tmp_path / TRAIN, {"t1": 2, "t2": 2})
    write_fashiongen(tmp_path / VAL, PRODUCTS)
    return tmp_path


def test_splits_items_and_product_relevance(root):
    _, _, load = open_dataset("fashiongen", root)
    train, val, test = load("train"), load("val"), load("test")
    assert len(train.gallery) == 4 and not train.queries
    assert len(val.gallery) == 6 and len(val.queries) == 3 and len(test.gallery) == 6  # test = validation file
    by_product = {q.query_id: q for q in val.queries}
    q3 = by_product["t2i-p3"]
    assert q3.text == ["a garment of product p3"] and q3.positives == ["val-3", "val-4", "val-5"]
    assert {val.items[i].identity for i in q3.positives} == {"p3"}
    assert val.items["val-0"].image == f"{VAL}#input_image/0"
    assert val.items["val-0"].category == "SHOES"


def test_images_decode_lazily_from_the_h5_rows(root):
    _, _, load = open_dataset("fashiongen", root)
    val = load("val")
    image = decode_image(root / val.items["val-2"].image)  # row 2 = product p2, colour 1
    assert image.size == (16, 16) and image.getpixel((3, 3)) == COLOURS[1]
    assert image_available(root / val.items["val-5"].image)
    assert not image_available(root / f"{VAL}#input_image/6")
    with pytest.raises(DataError, match=r"item 'x' .*#input_image/9: row 9 is out of range \(input_image has 6 rows\)"):
        decode_image(root / f"{VAL}#input_image/9", where=f"item 'x' {root / VAL}#input_image/9")


def test_handles_are_per_process(root):
    """A forked loader worker opens its own handle instead of reusing the parent's."""
    from fashion_bench.data import transforms

    decode_image(root / f"{VAL}#input_image/0")
    parent = transforms.open_h5(root / VAL)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must get a new handle and read the right pixels
        ok = transforms.open_h5(root / VAL) is not parent and decode_image(root / f"{VAL}#input_image/2").getpixel((0, 0)) == COLOURS[1]
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert transforms.open_h5(root / VAL) is parent


def test_loader_workers_decode_the_rows(root):
    """Two forked loader workers, after the parent has opened the file (as the missing-image check does)."""
    import torch
    from torch.utils.data import DataLoader

    from fashion_bench.data.datamodule import FashionDataModule
    from fashion_bench.data.datasets import ImageLoader

    val = FashionDataModule(dataset="fashiongen", root=str(root)).split("val")  # checks rows in this process
    images = ImageLoader(root, lambda pil: torch.from_numpy(np.asarray(pil)[0, 0].copy()), image_size=16)
    rows = [(i, val.items[i].image) for i in val.gallery]
    loader = DataLoader([0, 1, 2, 3, 4, 5], batch_size=2, num_workers=2,
                        collate_fn=lambda batch: torch.stack([images(*rows[k])[0] for k in batch]))
    pixels = torch.cat(list(loader)).tolist()
    assert pixels == [list(COLOURS[i]) for i, n in enumerate(PRODUCTS.values()) for _ in range(n)]


def test_text_keys_join_name_and_description(root):
    _, _, load = open_dataset("fashiongen", root, text_keys=["input_name", "input_description"])
    assert load("val").items["val-0"].text == ["name p1. a garment of product p1"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop": "input_productID"}, r"validation.h5: HDF5 file .* has no dataset 'input_productID'"),
        ({"short": "input_description"}, r"validation.h5: dataset 'input_description' has 5 rows but 'input_image' has 6 \(truncated"),
    ],
)
def test_missing_keys_and_truncated_files_are_named(tmp_path, kwargs, message):
    write_fashiongen(tmp_path / VAL, PRODUCTS, **kwargs)
    _, _, load = open_dataset("fashiongen", tmp_path)
    with pytest.raises(DataError, match=message):
        load("val")


def test_missing_malformed_files_and_empty_ids_are_named(tmp_path):
    _, _, load = open_dataset("fashiongen", tmp_path)
    with pytest.raises(DataError, match=r"fashiongen_256_256_validation.h5: HDF5 file not found"):
        load("val")
    (tmp_path / VAL).write_bytes(b"this is not hdf5")
    with pytest.raises(DataError, match=r"fashiongen_256_256_validation.h5: not a readable HDF5 file"):
        load("val")
    write_fashiongen(tmp_path / TRAIN, {"": 1})
    with pytest.raises(DataError, match=r"train.h5: row 0: empty 'input_productID'"):
        load("train")


def test_missing_rows_are_reported_by_the_datamodule(root, tmp_path):
    """An item whose row is not in the file is a missing image for the datamodule's check."""
    from fashion_bench.data.datamodule import FashionDataModule

    dm = FashionDataModule(dataset="fashiongen", root=str(root))
    split = dm.split("val")
    split.items["val-0"].image = f"{VAL}#input_image/60"
    with pytest.raises(DataError, match=r"1 of 6 image files are missing \(item 'val-0': .*#input_image/60\)"):
        dm._check_images(split)


def test_clip_validate_reports_both_directions(root, tmp_path):
    payload = validate("clip__fashiongen", root, tmp_path / "runs")
    assert payload["dataset"] == "fashiongen" and payload["protocol"]["name"] == "t2i"
    assert payload["num_queries"] == 3 and payload["gallery_size"] == 6
    for key in ("t2i/R@1", "i2t/R@1", "t2i/R@10", "i2t/R@10", "mean_recall"):
        assert 0.0 <= payload["metrics"][key] <= 1.0
    assert payload["metrics"]["t2i/R@10"] == 1.0 and np.isclose(payload["metrics"]["i2t/R@5"], 1.0)
