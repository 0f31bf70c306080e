"""KAGL / Fashion Product Images: Kaggle styles.csv, Hugging Face datasets (saved to disk), the id-hash split."""

from __future__ import annotations

import zlib

import pytest
from _fixtures_t2i_id import COLOURS, STYLES_HEADER, kagl_hf_dataset, validate, write_kagl_csv

from fashion_bench.data.adapters import open_dataset
from fashion_bench.data.schema import DataError
from fashion_bench.data.transforms import decode_image


def expected_split(product: str) -> str:
    bucket = zlib.crc32(product.encode()) % 100
    return "test" if bucket < 10 else "val" if bucket < 20 else "train"


def all_items(load):
    out = {}
    for split in ("train", "val", "test"):
        try:
            out[split] = load(split)
        except DataError:
            out[split] = None
    return out


def test_styles_csv_split_by_id_hash_and_text_queries(tmp_path):
    root = write_kagl_csv(tmp_path, n=40)
    _, _, load = open_dataset("kagl", root)
    splits = all_items(load)
    seen = {}
    for name, split in splits.items():
        for item_id in split.items if split else []:
            seen[item_id] = name
    assert len(seen) == 40 and all(expected_split(i) == s for i, s in seen.items())
    val = splits["val"]
    assert val is not None and len(val.queries) == len(val.gallery)
    query = val.queries[0]
    assert query.positives == [query.query_id.removeprefix("t2i-")]
    item = next(iter(val.items.values()))
    assert item.image == f"images/{item.item_id}.jpg" and item.attributes["baseColour"] == "Blue"
    train = splits["train"]
    assert not train.queries and train.items["1001"].text == ["Product 1, slim fit colour 1"]  # unquoted comma kept
    assert train.items["1001"].category == "Tshirts"


def test_percentages_are_configurable(tmp_path):
    _, _, load = open_dataset("kagl", write_kagl_csv(tmp_path, n=10), val_percent=0, test_percent=99)
    assert len(load("test").gallery) == sum(zlib.crc32(str(1000 + i).encode()) % 100 < 99 for i in range(10))
    with pytest.raises(ValueError, match="sum below 100"):
        open_dataset("kagl", tmp_path, val_percent=50, test_percent=50)


def test_hf_dataset_from_disk_writes_images_once(tmp_path):
    saved = tmp_path / "hf"
    kagl_hf_dataset(20).save_to_disk(str(saved))
    _, _, load = open_dataset("kagl", saved, val_percent=45, test_percent=45)
    test = load("test")
    item = next(iter(test.items.values()))
    index = int(item.item_id) - 2000
    assert item.text == [f"HF product {index}"] and item.image.endswith(f"{index:07d}.png")
    assert decode_image(item.image).getpixel((5, 5)) == COLOURS[index % len(COLOURS)]
    cached = sorted((saved / "images").iterdir())
    assert len(cached) == 20
    mtimes = [p.stat().st_mtime_ns for p in cached]
    _, _, again = open_dataset("kagl", saved, val_percent=45, test_percent=45)
    again("test")
    assert [p.stat().st_mtime_ns for p in cached] == mtimes  # not rewritten


def test_hf_dataset_dict_and_column_mapping(tmp_path):
    import datasets

    ds = kagl_hf_dataset(6).rename_columns({"id": "item_ID", "productDisplayName": "text", "articleType": "category2"})
    datasets.DatasetDict({"data": ds}).save_to_disk(str(tmp_path / "hf"))
    args = dict(hf_split="data", id_column="item_ID", text_column="text", category_column="category2",
                image_cache=str(tmp_path / "cache"), val_percent=0, test_percent=99)
    _, _, load = open_dataset("kagl", tmp_path / "hf", **args)
    split = load("test")
    assert all(it.category == "Tshirts" and it.image.startswith(str(tmp_path / "cache")) for it in split.items.values())
    _, _, wrong = open_dataset("kagl", tmp_path / "hf", **{**args, "hf_split": "train"})
    with pytest.raises(DataError, match=r"has no split 'train' \(found \['data'\]\)"):
        wrong("test")
    _, _, unmapped = open_dataset("kagl", tmp_path / "hf", hf_split="data")
    with pytest.raises(DataError, match=r"Hugging Face dataset '.*hf': missing columns \['id', 'productDisplayName', 'articleType'\]"):
        unmapped("test")


def test_hf_dataset_by_name_uses_load_dataset(tmp_path, monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: calls.append((name, split)) or kagl_hf_dataset(4))
    _, _, load = open_dataset("kagl", tmp_path, hf_name="ashraq/fashion-product-images-small", test_percent=99, val_percent=0)
    assert len(load("test").gallery) >= 1 and calls == [("ashraq/fashion-product-images-small", "train")]
    assert len(list((tmp_path / "images").iterdir())) == 4


def test_bad_inputs_are_named(tmp_path):
    _, _, load = open_dataset("kagl", tmp_path / "nothing")
    with pytest.raises(DataError, match=r"nothing: no styles.csv and no Hugging Face dataset saved with save_to_disk"):
        load("train")
    root = tmp_path / "kagl"
    write_kagl_csv(root, n=3)
    (root / "styles.csv").write_text(STYLES_HEADER.replace(",productDisplayName", ",name") + "\n1,Men,A,B,C,D,E,2012,F,x\n")
    with pytest.raises(DataError, match=r"styles.csv: missing columns \['productDisplayName'\]"):
        open_dataset("kagl", root)[2]("train")
    write_kagl_csv(root, lines=["1000,Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual,ok", "1001,Men,Apparel"])
    with pytest.raises(DataError, match=r"styles.csv:3: malformed line \(3 fields, the header has 10\)"):
        open_dataset("kagl", root)[2]("train")
    write_kagl_csv(root, lines=["1000,Men,A,B,C,D,E,2012,F,x", "1000,Men,A,B,C,D,E,2012,F,y"])
    with pytest.raises(DataError, match=r"styles.csv:3: duplicate product id '1000'"):
        open_dataset("kagl", root)[2]("train")


def test_hf_row_without_image_is_named(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"id": [1, 2], "productDisplayName": ["a", "b"], "articleType": ["x", "y"],
                                     "image": [b"\xff\xd8fake", None]})
    ds.save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataError, match=r"Hugging Face dataset '.*hf' row 1: no image"):
        open_dataset("kagl", tmp_path / "hf")[2]("train")


def test_missing_and_corrupt_images_are_named(tmp_path):
    from fashion_bench.data.datamodule import FashionDataModule

    root = write_kagl_csv(tmp_path, n=40)
    dm = FashionDataModule(dataset="kagl", root=str(root))
    victim = next(iter(dm.split("val").items))
    (root / "images" / f"{victim}.jpg").unlink()
    dm = FashionDataModule(dataset="kagl", root=str(root))
    with pytest.raises(DataError, match=rf"image files are missing \(item '{victim}': .*images/{victim}.jpg\)"):
        dm.split("val")
    (root / "images" / f"{victim}.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(DataError, match=rf"{victim}.jpg: corrupt or unreadable image"):
        decode_image(root / "images" / f"{victim}.jpg")


def test_clip_validate(tmp_path):
    root = write_kagl_csv(tmp_path / "kagl", n=40)
    payload = validate("clip__kagl", root, tmp_path / "runs")
    assert payload["dataset"] == "kagl" and payload["protocol"]["name"] == "t2i"
    assert payload["num_queries"] == payload["gallery_size"] > 0
    assert {"t2i/R@1", "i2t/R@1", "mean_recall"} <= set(payload["metrics"])


def test_bom_trailing_commas_and_crlf_are_read(tmp_path):
    """styles.csv re-saved by a spreadsheet: byte order mark, CRLF, a comma ending every line, ids with a trailing
    space. Nothing is dropped and the display names do not gain a comma."""
    root = write_kagl_csv(tmp_path, n=6)
    lines = (root / "styles.csv").read_text().splitlines()
    lines = [lines[0] + ","] + [line.replace(",", " ,", 1) + "," for line in lines[1:]]
    (root / "styles.csv").write_bytes(b"\xef\xbb\xbf" + "".join(f"{line}\r\n" for line in lines).encode())
    items = {i: it for split in all_items(open_dataset("kagl", root)[2]).values() if split for i, it in split.items.items()}
    assert sorted(items) == [str(1000 + i) for i in range(6)]
    assert items["1001"].text == ["Product 1, slim fit colour 1"] and items["1000"].image == "images/1000.jpg"


def test_numeric_ids_read_as_strings_and_duplicates_are_named(tmp_path):
    """Ids stored as floats (a copy that went through pandas) read as the integers styles.csv writes; the same
    id twice is an error naming both rows."""
    import datasets

    def save(ids: list[float]) -> None:
        n = len(ids)
        datasets.Dataset.from_dict({"id": ids, "productDisplayName": ["x"] * n, "articleType": ["y"] * n,
                                    "image": [f"{i}.jpg" for i in range(n)]}).save_to_disk(str(tmp_path / "hf"))

    save([2000.0, 2001.0])
    items = {i for split in all_items(open_dataset("kagl", tmp_path / "hf")[2]).values() if split for i in split.items}
    assert items == {"2000", "2001"}
    save([2000.0, 2001.0, 2000.0])
    with pytest.raises(DataError, match=r"Hugging Face dataset '.*hf' row 2: duplicate product id '2000' \(first at .* row 0\)"):
        open_dataset("kagl", tmp_path / "hf")[2]("train")
