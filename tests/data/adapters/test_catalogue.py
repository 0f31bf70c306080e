"""The catalogue format: csv / jsonl / a saved Hugging Face dataset, column mapping, hashed splits by identity,
and the errors a user meets first (unknown column, missing image, empty catalogue)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from fashion_bench.data.adapters import open_dataset
from fashion_bench.data.adapters.manifest import read_catalogue, split_of
from fashion_bench.data.schema import DataError


def make_catalogue(root: Path, n: int = 6, *, suffix: str = "csv", split: bool = False) -> Path:
    """``n`` products with a shop and a street photo each, columns named as a shop exports them."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n):
        for view in ("shop", "street"):
            Image.new("RGB", (16, 16), (40 * k % 255, 0, 0)).save(root / "img" / f"{k}-{view}.png")
            rows.append({"img_path": f"img/{k}-{view}.png", "title": f"red dress {k}", "sku": f"SKU{k}", "view": view,
                         **({"part": "test" if k % 2 else "val"} if split else {})})
    path = root / f"catalogue.{suffix}"
    if suffix == "csv":
        header = list(rows[0])
        path.write_text(",".join(header) + "\n" + "".join(",".join(r[h] for h in header) + "\n" for r in rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


COLUMNS = {"image": "img_path", "text": "title", "identity": "sku", "domain": "view"}


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_read_catalogue_maps_columns(tmp_path, suffix):
    path = make_catalogue(tmp_path, suffix=suffix)
    catalogue = read_catalogue(tmp_path, columns=COLUMNS)  # the folder: its catalogue.<suffix>
    assert catalogue.source == path.resolve() and catalogue.image_root == tmp_path.resolve()
    first = catalogue.records[0]
    assert (first.item_id, first.image, first.texts, first.identity, first.domain, first.split) == (
        "img/0-shop.png", "img/0-shop.png", ["red dress 0"], "SKU0", "shop", None)
    assert first.image_path == tmp_path.resolve() / "img/0-shop.png" and first.where.endswith(f"catalogue.{suffix}:2" if suffix == "csv" else ":1")


def test_hugging_face_dataset_saved_on_disk(tmp_path):
    import datasets

    make_catalogue(tmp_path)
    rows = [r for r in read_catalogue(tmp_path, columns=COLUMNS).records]
    table = datasets.Dataset.from_dict({"path": [str(r.image_path) for r in rows], "caption": [r.texts[0] for r in rows],
                                        "product": [r.identity for r in rows]})
    datasets.DatasetDict({"test": table}).save_to_disk(str(tmp_path / "hf"))
    catalogue = read_catalogue(tmp_path / "hf", columns={"image": "path", "text": "caption", "identity": "product"})
    assert len(catalogue.records) == 12 and {r.split for r in catalogue.records} == {"test"}
    assert catalogue.records[0].where.endswith("hf[test]#0") and catalogue.records[0].image_path.is_file()


def test_unknown_column_names_file_and_available_columns(tmp_path):
    path = make_catalogue(tmp_path)
    with pytest.raises(DataError, match=r"catalogue\.csv: column 'name' \(for field 'text'\) is not in the catalogue; its columns are \['img_path', 'title', 'sku', 'view'\]"):
        read_catalogue(path, columns={**COLUMNS, "text": "name"})
    with pytest.raises(DataError, match=r"catalogue\.csv: column 'image' \(for field 'image'\) is not in the catalogue"):
        read_catalogue(path)
    with pytest.raises(DataError, match=r"unknown field\(s\) \['colour'\]"):
        read_catalogue(path, columns={**COLUMNS, "colour": "view"})


def test_missing_image_names_file_line_and_record(tmp_path):
    path = make_catalogue(tmp_path)
    (tmp_path / "img" / "2-street.png").unlink()
    with pytest.raises(DataError, match=r"1 of 12 catalogue images are missing: .*catalogue\.csv:7: item 'img/2-street\.png' image 'img/2-street\.png' not found"):
        read_catalogue(path, columns=COLUMNS)


def test_empty_catalogue_and_duplicate_ids(tmp_path):
    (tmp_path / "empty.csv").write_text("image,text\n")
    with pytest.raises(DataError, match=r"empty\.csv: empty catalogue"):
        read_catalogue(tmp_path / "empty.csv")
    (tmp_path / "dup.csv").write_text("image,item_id\na.png,1\nb.png,1\n")
    with pytest.raises(DataError, match=r"dup\.csv:3: duplicate item_id '1' \(first at .*dup\.csv:2\)"):
        read_catalogue(tmp_path / "dup.csv", check_images=False)
    with pytest.raises(DataError, match=r"nowhere: catalogue not found"):
        read_catalogue(tmp_path / "nowhere")


def test_hashed_split_is_stable_when_items_are_added(tmp_path):
    """Each identity keeps its split whatever else the catalogue holds; the default split has val and test."""
    shares = {"train": 80.0, "val": 10.0, "test": 10.0}
    before = {f"SKU{k}": split_of(f"SKU{k}", shares) for k in range(200)}
    assert {f"SKU{k}": split_of(f"SKU{k}", shares) for k in range(400)}.items() >= before.items()
    counts = {s: list(before.values()).count(s) for s in shares}
    assert 140 <= counts["train"] <= 180 and counts["val"] >= 8 and counts["test"] >= 8
    make_catalogue(tmp_path, n=40)
    _, _, load = open_dataset("catalogue", tmp_path, columns=COLUMNS)
    val, test = load("val"), load("test")
    assert val.items and test.items and not set(val.items) & set(test.items)
    assert len(load("all").items) == 80
    with pytest.raises(DataError, match=r"sum to 100"):
        open_dataset("catalogue", tmp_path, columns=COLUMNS, split_percentages={"train": 50, "test": 10})


def test_split_column_and_tasks(tmp_path):
    make_catalogue(tmp_path, split=True)
    columns = {**COLUMNS, "split": "part"}
    _, _, t2i = open_dataset("catalogue", tmp_path, columns=columns, task="t2i")
    test = t2i("test")
    assert len(test.items) == 6 and [q.text for q in test.queries] == [["red dress 1"], ["red dress 3"], ["red dress 5"]]
    assert all(len(q.positives) == 2 for q in test.queries)
    with pytest.raises(DataError, match=r"no records in split 'train' \(splits: \['test', 'val'\], or 'all' for every record\)"):
        t2i("train")
    _, _, by_domain = open_dataset("catalogue", tmp_path, columns=columns, task="id", query_domain="street")
    assert [q.query_id for q in by_domain("val").queries] == ["img/0-street.png", "img/2-street.png", "img/4-street.png"]
    _, _, every = open_dataset("catalogue", tmp_path, columns={k: v for k, v in columns.items() if k != "domain"}, task="id")
    assert len(every("val").queries) == 6  # no domains: every image queries the others


def test_datamodule_validates_on_val_by_default(tmp_path):
    """The issue's complaint: the catalogue's default split was ``test`` while ``validate`` reads ``val``."""
    from fashion_bench.data.datamodule import FashionDataModule

    make_catalogue(tmp_path, n=40)
    dm = FashionDataModule(dataset="catalogue", root=str(tmp_path), num_workers=0, adapter_args={"columns": COLUMNS})
    assert dm.protocol == "t2i" and dm.split("val").queries
    assert FashionDataModule(dataset="catalogue", root=str(tmp_path), task="id", adapter_args={"columns": COLUMNS}).protocol == "id"
