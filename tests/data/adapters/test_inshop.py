"""DeepFashion In-shop: query -> gallery by item id, optional boxes, malformed list files named."""

from __future__ import annotations

import pytest
from _fixtures_t2i_id import COLOURS, validate, write_inshop

from fashion_bench.data.adapters import open_dataset
from fashion_bench.data.schema import DataError
from fashion_bench.data.transforms import decode_image


def test_query_gallery_by_item_id(tmp_path):
    root = write_inshop(tmp_path, items=5)
    _, _, load = open_dataset("inshop", root)
    train, test = load("train"), load("test")
    assert len(train.gallery) == 4 and not train.queries
    assert len(test.queries) == 3 and len(test.gallery) == 6
    assert load("val").gallery == test.gallery  # no separate validation set
    gallery = set(test.gallery)
    for query in test.queries:
        assert query.image == query.query_id and query.image not in gallery
        identity = test.items[query.query_id].identity
        assert query.positives == [g for g in test.gallery if test.items[g].identity == identity] and len(query.positives) == 2
    assert test.items[test.queries[0].query_id].category == "MEN/Dresses"


def test_boxes_crop_the_images(tmp_path):
    root = write_inshop(tmp_path, items=3)
    _, _, load = open_dataset("inshop", root, use_bbox=True)
    item = load("test").items["img/MEN/Dresses/id_00000002/00_1_front.jpg"]
    assert item.image.endswith("front.jpg#crop=4,4,40,60")
    image = decode_image(root / item.image)
    assert image.size == (36, 56) and image.getpixel((2, 2)) == pytest.approx(COLOURS[2], abs=3)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("image_name item_id", "name item_id"), r"list_eval_partition.txt:2: expected the header"),
        (lambda t: "\n".join(t.splitlines()[:-1]) + "\n", r"list_eval_partition.txt: announces 10 records but holds 9 \(truncated"),
        (lambda t: t.replace(" query\n", " probe\n", 1), r"list_eval_partition.txt:\d+: evaluation_status 'probe' is not one of"),
        (lambda t: t.replace(" id_00000003 gallery\n", "\n", 1), r"list_eval_partition.txt:\d+: expected 3 fields .* found 1"),
        (lambda t: "ten\n" + t.split("\n", 1)[1], r"list_eval_partition.txt:1: expected the record count"),
    ],
)
def test_malformed_partition_files_are_named(tmp_path, edit, message):
    root = write_inshop(tmp_path, items=4)
    path = root / "list_eval_partition.txt"
    path.write_text(edit(path.read_text()))
    with pytest.raises(DataError, match=message):
        open_dataset("inshop", root)[2]("test")


def test_missing_files_boxes_and_images_are_named(tmp_path):
    with pytest.raises(DataError, match=r"list_eval_partition.txt: file not found"):
        open_dataset("inshop", tmp_path)[2]("test")
    root = write_inshop(tmp_path, items=4)
    box = root / "list_bbox_inshop.txt"
    lines = box.read_text().splitlines()
    box.write_text("\n".join([str(len(lines) - 3), *lines[1:-1]]) + "\n")
    with pytest.raises(DataError, match=r"list_eval_partition.txt:12: image 'img/WOMEN/Dresses/id_00000003/02_3_front.jpg' has no box"):
        open_dataset("inshop", root, use_bbox=True)[2]("test")
    box.write_text(f"1\n{lines[1]}\n{lines[2].replace(' 40 ', ' 2 ')}\n")
    with pytest.raises(DataError, match=r"list_bbox_inshop.txt:3: empty box \[4, 4, 2, 60\]"):
        open_dataset("inshop", root, use_bbox=True)[2]("test")

    from fashion_bench.data.datamodule import FashionDataModule

    (root / "img/MEN/Dresses/id_00000002/01_2_front.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of 6 image files are missing \(item 'img/MEN/Dresses/id_00000002/01_2_front.jpg'"):
        FashionDataModule(dataset="inshop", root=str(root)).split("test")


def test_clip_validate(tmp_path):
    root = write_inshop(tmp_path / "inshop", items=5)
    payload = validate("clip__inshop", root, tmp_path / "runs", "--data.adapter_args.use_bbox", "true")
    assert payload["dataset"] == "inshop" and payload["protocol"]["name"] == "inshop"
    assert payload["num_queries"] == 3 and payload["gallery_size"] == 6
    assert {"R@1", "R@10", "R@20", "R@50", "mAP"} <= set(payload["metrics"])
    assert payload["metrics"]["R@10"] == 1.0


def test_duplicate_box_line_is_named(tmp_path):
    root = write_inshop(tmp_path, items=3)
    path = root / "list_bbox_inshop.txt"
    count, header, first, *rest = path.read_text().splitlines()
    path.write_text("\n".join([str(int(count) + 1), header, first, *rest, first]) + "\n")
    with pytest.raises(DataError, match=r"list_bbox_inshop\.txt:\d+: duplicate image_name 'img/MEN/Dresses/id_00000000/00_1_front"
                                        r"\.jpg' \(first at .*list_bbox_inshop\.txt:3\)"):
        open_dataset("inshop", root, use_bbox=True)[2]("test")


def test_bom_and_crlf_list_files_are_read(tmp_path):
    root = write_inshop(tmp_path, items=4)
    path = root / "list_eval_partition.txt"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_text().replace("\n", "\r\n").encode())
    assert len(open_dataset("inshop", root)[2]("test").queries) == 2
