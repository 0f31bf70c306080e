"""WAB adapter: garment crops of shop images and live frames, intra- / cross-domain protocol, bad annotations."""

from __future__ import annotations

import json

import pytest
from _fixtures_t2i_id import COLOURS, validate, write_wab_part

from fashion_bench.data.adapters import open_dataset
from fashion_bench.data.schema import DataError
from fashion_bench.data.transforms import decode_image
from fashion_bench.data.wab_frames import extract_frames


@pytest.fixture
def root(tmp_path):
    write_wab_part(tmp_path, "train_part1", [1, 2])
    write_wab_part(tmp_path, "val_part1", [3, 4, 5])
    extract_frames(tmp_path, tmp_path / "frames", progress=False)
    return tmp_path


def test_crops_domains_and_live_queries(root):
    _, _, load = open_dataset("wab", root)
    train, val = load("train"), load("val")
    assert len(train.gallery) == 2 * (2 + 3) and not train.queries  # 2 shop + 3 frame crops per instance
    assert len(val.gallery) == 3 * 5 and len(val.queries) == 3 * 3
    domains = {d: sum(it.domain == d for it in val.items.values()) for d in ("shop", "live")}
    assert domains == {"shop": 6, "live": 9}  # distractors (instance_id 0) are not items
    query = next(q for q in val.queries if q.query_id == "val_part1/live/video4/2/0")
    assert query.image == query.query_id and not query.exclude
    assert sorted(query.positives) == ["val_part1/live/video4/0/0", "val_part1/live/video4/4/0",
                                       "val_part1/shop/item4/0/0", "val_part1/shop/item4/1/0"]
    shop = val.items["val_part1/shop/item4/1/0"]
    assert shop.identity == "4" and shop.image == "val_part1/image/item4/1.jpg#crop=4,4,40,60"
    assert shop.text == ["title of item4"] and shop.category == "shirt" and shop.attributes["viewpoint"] == 1
    live = val.items[query.query_id]
    assert live.image == "frames/val_part1/video4/2.jpg#crop=8,8,56,56"
    frame = decode_image(root / live.image)
    assert frame.size == (48, 48) and frame.getpixel((20, 20)) == pytest.approx(COLOURS[2], abs=8)


def test_exclude_same_video(root):
    _, _, load = open_dataset("wab", root, exclude_same_video=True)
    query = next(q for q in load("val").queries if q.query_id == "val_part1/live/video4/2/0")
    assert sorted(query.exclude) == ["val_part1/live/video4/0/0", "val_part1/live/video4/4/0"]
    assert sorted(query.positives) == ["val_part1/shop/item4/0/0", "val_part1/shop/item4/1/0"]


def test_parts_mapping_and_single_part_root(root):
    _, _, load = open_dataset("wab", root, parts={"test": ["train_part1"]})
    assert {it.identity for it in load("test").items.values()} == {"1", "2"}
    with pytest.raises(DataError, match=r"no part folder matches \['test\*'\] for split 'test' \(parts found: \['train_part1', 'val_part1'\]\)"):
        open_dataset("wab", root)[2]("test")
    part = root / "val_part1"
    extract_frames(part, part / "frames", progress=False)
    _, _, single = open_dataset("wab", part)
    val = single("val")
    assert val.items["val_part1/shop/item3/0/0"].image == "image/item3/0.jpg#crop=4,4,40,60"
    assert decode_image(part / val.items["val_part1/live/video3/0/0"].image).getpixel((1, 1)) == pytest.approx(COLOURS[0], abs=8)


def test_frames_not_extracted_says_how_to_extract(tmp_path):
    write_wab_part(tmp_path, "val_part1", [3])
    with pytest.raises(DataError, match=r"val_part1: the video frames are not extracted .* run `fashion-bench data wab-frames --root"):
        open_dataset("wab", tmp_path)[2]("val")


def _edit(path, change):
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("target", "change", "message"),
    [
        ("image_annotation/item3/1.json", lambda r: r["annotations"][0].pop("box"),
         r"image_annotation/item3/1.json annotations\[0\]: missing key 'box'"),
        ("image_annotation/item3/0.json", lambda r: r.pop("img_name"), r"image_annotation/item3/0.json: missing key 'img_name'"),
        ("image_annotation/item3/0.json", lambda r: r["annotations"][0].update(box=[5, 5, 2, 9]),
         r"item3/0.json annotations\[0\]: empty box \[5, 5, 2, 9\]"),
        ("image_annotation/item3/0.json", lambda r: r["annotations"][1].update(instance_id="x"),
         r"item3/0.json annotations\[1\]: 'instance_id' must be an integer, got 'x'"),
        ("video_annotation/video3.json", lambda r: r["frames"][1].pop("frame_index"),
         r"video_annotation/video3.json: frames\[1\]: missing key 'frame_index'"),
        ("video_annotation/video3.json", lambda r: r["frames"][2]["annotations"][0].update(box=[1, 2, 3]),
         r"video3.json: frame 4 annotations\[0\]: 'box' must be \[x1, y1, x2, y2\], got \[1, 2, 3\]"),
    ],
)
def test_bad_annotations_are_named(root, target, change, message):
    _edit(root / "val_part1" / target, change)
    with pytest.raises(DataError, match=message):
        open_dataset("wab", root)[2]("val")


def test_malformed_json_and_missing_images_are_named(root):
    from fashion_bench.data.datamodule import FashionDataModule

    (root / "val_part1/image/item5/1.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of 15 image files are missing \(item 'val_part1/shop/item5/1/0': .*item5/1.jpg#crop=4,4,40,60\)"):
        FashionDataModule(dataset="wab", root=str(root)).split("val")
    (root / "val_part1/video_annotation/video5.json").write_text('{"video_id": "video5", "frames": [')
    with pytest.raises(DataError, match=r"video_annotation/video5.json: malformed JSON"):
        open_dataset("wab", root)[2]("val")


def test_crop_outside_the_image_is_named(root):
    with pytest.raises(DataError, match=r"crop box \[100, 100, 120, 130\] has no pixels inside the 64 x 64 image"):
        decode_image(root / "val_part1/image/item3/0.jpg#crop=100,100,120,130")


def test_clip_validate_intra_and_cross(root, tmp_path):
    payload = validate("clip__wab", root, tmp_path / "runs")
    assert payload["dataset"] == "wab" and payload["protocol"]["name"] == "id-intra-cross"
    assert payload["num_queries"] == 9 and payload["gallery_size"] == 15
    assert set(payload["per_subset"]) == {"intra", "cross"}
    for subset in ("intra", "cross"):
        assert {"mAP", "R@1"} <= set(payload["per_subset"][subset])
    assert {"mAP", "rank1", "R@1", "R@5", "R@10"} <= set(payload["metrics"])


def test_crop_annotated_twice_is_named(root):
    """Two video annotation files with one video_id describe the same crops (a copied file): both are named."""
    video = root / "val_part1" / "video_annotation"
    (video / "video3-copy.json").write_text((video / "video3.json").read_text())
    with pytest.raises(DataError, match=r"video3\.json: frame 0: duplicate annotation of crop 'val_part1/live/video3/0/0' "
                                        r".*\(first at .*video3-copy\.json: frame 0\)"):
        open_dataset("wab", root)[2]("val")


def test_bom_and_numeric_ids_are_read(root):
    path = root / "val_part1" / "image_annotation" / "item3" / "0.json"
    record = json.loads(path.read_text())
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({**record, "item_id": 3}).encode())
    assert "val_part1/shop/3/0/0" in open_dataset("wab", root)[2]("val").items
