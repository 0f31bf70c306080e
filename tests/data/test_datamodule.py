"""FashionDataModule and the canonical / manifest adapters on small hand-written fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from fashion_bench.contracts import Preprocessing
from fashion_bench.data.datamodule import FashionDataModule
from fashion_bench.data.schema import (
    DataError, Item, Query, Split, item_record, query_from_dict, query_record, write_jsonl, write_split,
)


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


def test_query_groups_are_read_as_ids_and_written_only_where_set():
    grouped = query_from_dict({"query_id": "q1", "positives": ["a"], "text": "red", "group": 17}, "queries.jsonl: line 1")
    assert grouped.group == "17" and query_record(grouped)["group"] == "17"
    plain = query_from_dict({"query_id": "q2", "positives": ["a"], "text": "red"}, "queries.jsonl: line 2")
    assert plain.group == "" and "group" not in query_record(plain)
    with pytest.raises(DataError, match=r"queries.jsonl: line 3: field 'group' must be a string or an integer id"):
        query_from_dict({"query_id": "q3", "positives": ["a"], "text": "red", "group": [1]}, "queries.jsonl: line 3")


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


# --- contract v2: what training samples carry, task / protocol checks, P x K epochs ---------------------------
def with_attributes(root: Path) -> Path:
    """Give every item of the catalogue a colour (and the odd ones a sleeve) attribute."""
    lines = [json.loads(line) for line in (root / "items.jsonl").read_text().splitlines()]
    for n, record in enumerate(lines):
        record["attributes"] = {"colour": ["red", "blue"][n % 2], **({"sleeve": "long"} if n % 2 else {})}
    write_jsonl(root / "items.jsonl", lines)
    return root


def test_training_samples_carry_category_attributes_fields_and_views(tmp_path, tiny_encoder):
    root = with_attributes(make_catalogue(tmp_path))
    fields = {"first_word": FirstWordLength()}
    pre = Preprocessing(image_spec=tiny_encoder.image_spec, tokenize=tiny_encoder.tokenize, views=3, sample_fields=fields)
    dm = datamodule(root, pre)
    assert dm.categories == ["bottoms", "tops"] and dm.attribute_vocab == {"colour": ["blue", "red"], "sleeve": ["long"]}
    dataset, _ = dm.train_dataset()
    sample = dataset[0]
    row = dataset.rows[0]
    assert sample["category"] == dm.categories.index(row["category"])
    values = json.loads(row["attributes"])
    expected = [dm.attribute_vocab[name].index(values[name]) if name in values else -1 for name in dm.attribute_vocab]
    assert sample["attributes"].tolist() == expected and -1 in [dataset[i]["attributes"][1].item() for i in range(4)]
    assert sample["first_word"] == len(row["text"][0].split()[0])
    assert sample["views"].shape == (2, 3, 64, 64)
    batch = next(iter(dm.train_dataloader()))
    assert batch["views"].shape == (4, 2, 3, 64, 64) and batch["attributes"].shape == (4, 2) and batch["category"].shape == (4,)


class FirstWordLength:
    """A picklable per-sample field (loader workers fork)."""

    def __call__(self, row, text: str) -> int:
        return len(text.split()[0])


def test_overriding_the_task_selects_its_protocol_and_a_mismatch_is_named(tmp_path, preprocessing):
    root = make_catalogue(tmp_path)
    assert datamodule(root, preprocessing, subdir="t2i").protocol == "t2i"
    assert datamodule(root, preprocessing, subdir="t2i", task="id").protocol == "id"
    with pytest.raises(ValueError, match="protocol 'cir' scores task 'cir', but the task is 'id'"):
        datamodule(root, preprocessing, subdir="t2i", task="id", protocol="cir")
    with pytest.raises(ValueError, match="unknown protocol 'nope'"):
        datamodule(root, preprocessing, protocol="nope")
    with pytest.raises(ValueError, match="primary_metric 'R@7'"):
        datamodule(root, preprocessing, protocol={"name": "mine", "task": "t2i", "primary_metric": "R@7"})


def test_manifest_with_task_id_is_scored_with_an_id_protocol(tmp_path):
    """A perfect model (embedding = identity one-hot) gets R@1 = 1: the query's own image is excluded."""
    import torch

    from fashion_bench.retrieval.callback import build_eval_inputs
    from fashion_bench.retrieval.engine import run_protocol

    (tmp_path / "img").mkdir()
    records = []
    for p in range(4):
        for domain in ("shop", "live"):
            name = f"img/p{p}-{domain}.png"
            Image.new("RGB", (8, 8)).save(tmp_path / name)
            records.append({"item_id": f"p{p}-{domain}", "image": name, "identity": f"p{p}", "domain": domain.replace("live", "query"), "text": [f"item {p}"], "split": "test"})
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    dm = FashionDataModule(dataset="manifest", root=str(tmp_path), task="id", num_workers=0)
    assert dm.protocol == "id"
    split = dm.split("test")
    onehot = {i: torch.nn.functional.one_hot(torch.tensor(int(it.identity[1:])), 4).float() for i, it in split.items.items()}
    gallery = torch.stack([onehot[i] for i in split.gallery])
    queries = torch.stack([onehot[q.image] for q in split.queries])

    class Data:  # the slice of EvalSplit that build_eval_inputs reads
        gallery_ids = split.gallery

    Data.split = split
    result = run_protocol(dm.protocol, build_eval_inputs(Data, queries, gallery))
    assert result.metrics["R@1"] == 1.0 and result.metrics["mAP"] == 1.0


def test_pk_epoch_shows_every_image_once_without_repeated_batches():
    from fashion_bench.data.samplers import IdentityBatchSampler

    identities = [f"id{i}" for i in range(50) for _ in range(40)]
    order = [i for i, _ in IdentityBatchSampler(identities, 16, 4, seed=0)]
    batches = [tuple(sorted(order[i:i + 64])) for i in range(0, len(order), 64)]
    assert len(batches) == 31 and len(set(batches)) == 31
    assert len(set(order)) == len(order) == 31 * 64  # each image at most once; 16 left over (fewer than P x K)
    assert all(len({identities[i] for i in b}) == 16 for b in batches)


def test_ddp_ranks_share_each_global_batch():
    from fashion_bench.data.samplers import EpochShuffleSampler

    whole = [i for i, _ in EpochShuffleSampler(40, 8, seed=3)]
    halves = [[i for i, _ in EpochShuffleSampler(40, 4, seed=3, num_replicas=2, rank=r)] for r in (0, 1)]
    for b in range(5):
        assert halves[0][4 * b:4 * b + 4] + halves[1][4 * b:4 * b + 4] == whole[8 * b:8 * b + 8]


def test_degradation_and_limited_training_data(tmp_path, preprocessing):
    from fashion_bench.data.transforms import Degradation

    root = make_catalogue(tmp_path, n_products=8)
    full = datamodule(root, preprocessing)
    limited = datamodule(root, preprocessing, train_fraction=0.5, degrade={"size": [4, 6], "jpeg_quality": 30}, degrade_on="train")
    kept = {limited.split("train").items[i].identity for i in limited.split("train").gallery}
    assert len(kept) == 4 and kept == {datamodule(root, preprocessing, train_fraction=0.5).split("train").items[i].identity
                                       for i in datamodule(root, preprocessing, train_fraction=0.5).split("train").gallery}
    assert all(i.split("-")[0] in kept for i in limited.split("train").gallery)  # every image of a kept product
    assert len(datamodule(root, preprocessing, max_train_items=5).split("train").gallery) == 5
    assert limited.split("val").gallery == full.split("val").gallery  # evaluation splits are untouched
    item = full.split("train").gallery[0]
    image = full.split("train").items[item].image
    clean, _ = full._images(train=True)(item, image)
    degraded, _ = limited._images(train=True)(item, image)
    assert not torch.equal(clean, degraded) and torch.equal(limited._images(train=False)(item, image)[0], full._images(train=False)(item, image)[0])
    small = Degradation(size=(2, 2))(Image.new("RGB", (32, 48), (200, 10, 10)))
    assert small.size == (32, 48)
    with pytest.raises(ValueError, match="train_fraction must be in"):
        datamodule(root, preprocessing, train_fraction=0.0)
    with pytest.raises(ValueError, match="unknown degrade_on 'gallery'"):
        datamodule(root, preprocessing, degrade={"blur": 1.0}, degrade_on="gallery")
    with pytest.raises(ValueError, match="jpeg_quality must be in 1..95"):
        datamodule(root, preprocessing, degrade={"jpeg_quality": 0})
