"""FashionDataModule and the canonical / manifest adapters on small hand-written fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from fashion_bench.contracts import Preprocessing
from fashion_bench.data.datamodule import FashionDataModule
from fashion_bench.data.schema import DataError, Item, Query, Split, item_record, write_jsonl, write_split


def make_catalogue(root: Path, *, n_products: int = 6, views: int = 3) -> Path:
    """A canonical layout: `views` images per product, t2i and cir splits for train and val."""
    (root / "images").mkdir(parents=True)
    records, splits = [], {}
    for split, products in (("train", range(n_products)), ("val", range(n_products, 2 * n_products))):
        items = {}
        for p in products:
            for v in range(views):
                item_id = f"p{p}-v{v}"
                Image.new("RGB", (32, 48), (40 * v, 20 * p % 255, 100)).save(root / "images" / f"{item_id}.png")
                domain = "shop" if v == 0 else "live"
                items[item_id] = Item(item_id, f"images/{item_id}.png", [f"product {p} view {v}"], identity=f"p{p}", domain=domain, category="tops" if p % 2 else "bottoms")
                records.append(item_record(items[item_id], split))
        shops = [i for i in items if i.endswith("-v0")]
        t2i_queries = [Query(f"q{p}", positives=[f"p{p}-v0"], text=[f"product {p}"]) for p in products]
        splits[("t2i", split)] = Split(split, items, list(items) if split == "train" else shops, [] if split == "train" else t2i_queries)
        cir = [Query(f"c{a}", positives=[b], image=a, text=["is darker", "has stripes"], category=items[a].category) for a, b in zip(shops, shops[1:])]
        splits[("cir", split)] = Split(split, items, shops, cir)
    write_jsonl(root / "items.jsonl", records)
    for (name, _), split in splits.items():
        write_split(root, name, split)
    return root


@pytest.fixture
def preprocessing(tiny_encoder):
    return Preprocessing(image_spec=tiny_encoder.image_spec, tokenize=tiny_encoder.tokenize)


def datamodule(root: Path, preprocessing, **kwargs) -> FashionDataModule:
    dm = FashionDataModule(dataset="canonical", root=str(root), num_workers=0, batch_size=4, eval_batch_size=5, adapter_args={"subdir": kwargs.pop("subdir", "t2i")}, **kwargs)
    dm.attach_preprocessing(preprocessing)
    return dm


def test_pair_loader_shapes(tmp_path, preprocessing):
    dm = datamodule(make_catalogue(tmp_path), preprocessing)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["text"].ndim == 2 and batch["label"].shape == (4,)


def test_pk_loader_balances_identities(tmp_path, preprocessing):
    dm = datamodule(make_catalogue(tmp_path), preprocessing, task="id", sampler="pk", pk_identities=3, pk_instances=2)
    batch = next(iter(dm.train_dataloader()))
    labels = batch["label"].tolist()
    assert len(labels) == 6 and len(set(labels)) == 3 and all(labels.count(x) == 2 for x in labels)


def test_triplet_loader_and_eval_split(tmp_path, preprocessing):
    dm = datamodule(make_catalogue(tmp_path), preprocessing, task="cir", subdir="cir")
    batch = next(iter(dm.train_dataloader()))
    assert batch["reference"].shape == batch["target"].shape == (4, 3, 64, 64)
    data = dm.eval_split("val")
    assert data.reference_loader is None  # every reference is a gallery item: looked up, not re-encoded
    assert len(data.gallery_ids) == 6 and len(data.queries) == 5
    gallery = next(iter(data.gallery_loader))
    assert gallery["index"].tolist() == [0, 1, 2, 3, 4]


def test_missing_images_fail_with_the_list_or_are_counted(tmp_path, preprocessing):
    root = make_catalogue(tmp_path)
    (root / "images" / "p7-v0.png").unlink()
    with pytest.raises(DataError, match=r"1 of 6 image files are missing \(item 'p7-v0': .*p7-v0.png\).*skip_missing_images"):
        datamodule(root, preprocessing).eval_split("val")
    dm = datamodule(root, preprocessing, skip_missing_images=True)
    oks = [ok for b in dm.eval_split("val").gallery_loader for ok in b["image_ok"].tolist()]
    assert oks.count(False) == 1


def test_corrupt_image_names_item_and_file(tmp_path, preprocessing):
    root = make_catalogue(tmp_path)
    (root / "images" / "p0-v1.png").write_bytes(b"\x89PNG broken")
    dm = datamodule(root, preprocessing)
    with pytest.raises(DataError, match=r"item 'p0-v1' image .*p0-v1.png: corrupt or unreadable image"):
        for _ in dm.train_dataloader():
            pass


def test_malformed_manifest_line_is_located(tmp_path, preprocessing):
    root = make_catalogue(tmp_path)
    with open(root / "items.jsonl", "a") as fh:
        fh.write('{"item_id": "x", "image": \n')
    with pytest.raises(DataError, match=r"items.jsonl:37: malformed JSON line"):
        datamodule(root, preprocessing).split("train")


def test_missing_required_field_is_named(tmp_path, preprocessing):
    root = make_catalogue(tmp_path)
    with open(root / "items.jsonl", "a") as fh:
        fh.write(json.dumps({"item_id": "x", "split": "train"}) + "\n")
    with pytest.raises(DataError, match=r"items.jsonl:37: missing required field 'image'"):
        datamodule(root, preprocessing).split("train")


def test_positive_outside_gallery_is_reported(tmp_path, preprocessing):
    root = make_catalogue(tmp_path)
    path = root / "t2i" / "val" / "queries.jsonl"
    lines = path.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["positives"] = ["p6-v1"]  # an item of the split, but not in its gallery
    path.write_text("\n".join([json.dumps(bad), *lines[1:]]) + "\n")
    with pytest.raises(DataError, match=r"query 'q6' field 'positives': \['p6-v1'\] not in the 'val' gallery"):
        datamodule(root, preprocessing).split("val")


def test_unknown_adapter_args_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"does not take adapter_args \['colour'\]"):
        FashionDataModule(dataset="canonical", root=str(tmp_path), adapter_args={"colour": 1})


def test_manifest_adapter_csv_and_jsonl(tmp_path, preprocessing):
    (tmp_path / "img").mkdir()
    rows = []
    for p in range(4):
        for domain in ("shop", "query"):
            name = f"img/{p}-{domain}.jpg"
            Image.new("RGB", (20, 20), (p * 50, 0, 0)).save(tmp_path / name)
            rows.append({"image": name, "text": f"red dress {p}|a dress", "identity": f"p{p}", "domain": domain, "split": "test"})
    header = "image,text,identity,domain,split\n"
    (tmp_path / "cat.csv").write_text(header + "".join(f"{r['image']},{r['text']},{r['identity']},{r['domain']},{r['split']}\n" for r in rows))
    dm = FashionDataModule(dataset="manifest", root=str(tmp_path), task="id", num_workers=0, adapter_args={"manifest": "cat.csv"}, test_split="test")
    split = dm.split("test")
    assert len(split.queries) == 4 and all(len(q.positives) == 1 for q in split.queries)
    t2i = FashionDataModule(dataset="manifest", root=str(tmp_path), task="t2i", num_workers=0, adapter_args={"manifest": "cat.csv"})
    assert {q.text[0] for q in t2i.split("test").queries} == {f"red dress {p}" for p in range(4)}
    (tmp_path / "bad.csv").write_text(header + "a.jpg,t,p,d,test,EXTRA\n")
    with pytest.raises(DataError, match=r"bad.csv:2: malformed csv line"):
        FashionDataModule(dataset="manifest", root=str(tmp_path), adapter_args={"manifest": "bad.csv"})
