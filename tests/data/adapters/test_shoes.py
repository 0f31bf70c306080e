"""Shoes adapter: triplets split by reference image, eval gallery, recursive image index, bad files named."""

from __future__ import annotations

import json

import pytest
from _fixtures_cir import evaluate_split, run_experiment, truncate, write_image, write_json, write_lines

from fashion_bench.data.adapters import open_dataset
from fashion_bench.data.schema import DataError, SplitNotFound

TRAIN = [f"img_womens_boots_{n}.jpg" for n in range(1, 5)]
EVAL = [f"img_womens_clogs_{n}.jpg" for n in range(1, 6)]
TRIPLETS = [(TRAIN[0], TRAIN[1]), (EVAL[0], EVAL[1]), (TRAIN[2], TRAIN[3]), (EVAL[2], EVAL[4]), (TRAIN[1], TRAIN[0])]


def write_shoes(root):
    """Images in nested type / number folders as in the released archive; 3 train and 2 test triplets."""
    for n, image in enumerate(TRAIN + EVAL):
        kind = image.split("_")[2]
        write_image(root / f"womens_{kind}" / str(n) / image, seed=n)
    write_lines(root / "train_im_names.txt", TRAIN)
    write_lines(root / "eval_im_names.txt", EVAL)
    write_json(root / "relative_captions_shoes.json",
               [{"ImageName": t, "ReferenceImageName": r, "RelativeCaption": f"is more like {t}"} for r, t in TRIPLETS])
    return root


@pytest.fixture
def root(tmp_path):
    return write_shoes(tmp_path / "shoes")


def edit_captions(root, change) -> None:
    path = root / "relative_captions_shoes.json"
    records = json.loads(path.read_text())
    change(records)
    write_json(path, records)


def test_split_rule_by_reference_and_eval_gallery(root):
    _, _, load = open_dataset("shoes", root)
    train, test = load("train"), load("test")
    assert [q.query_id for q in train.queries] == ["shoes-0", "shoes-2", "shoes-4"]
    assert [q.query_id for q in test.queries] == ["shoes-1", "shoes-3"]
    assert test.gallery == EVAL and train.gallery == TRAIN
    q = test.queries[1]
    assert (q.image, q.positives, q.text) == (EVAL[2], [EVAL[4]], [f"is more like {EVAL[4]}"])
    assert test.items[EVAL[0]].image == f"womens_clogs/4/{EVAL[0]}" and test.items[EVAL[0]].category == "clogs"
    with pytest.raises(SplitNotFound, match="Shoes has the splits"):
        load("val")


def test_reference_excluded_and_headline(root):
    test = open_dataset("shoes", root)[2]("test")
    scores = {"shoes-1": {EVAL[0]: 1.0, EVAL[1]: 0.5}, "shoes-3": {EVAL[2]: 1.0, EVAL[0]: 0.9, EVAL[1]: 0.8, EVAL[4]: 0.5}}
    m = evaluate_split("shoes", test, scores).metrics
    assert (m["R@1"], m["R@10"], m["R@50"]) == (0.5, 1.0, 1.0)  # shoes-3: reference removed, rank 3
    assert m["headline"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)


def test_reference_in_neither_list(root):
    edit_captions(root, lambda r: r.append({"ImageName": EVAL[0], "ReferenceImageName": "img_womens_flats_1.jpg",
                                            "RelativeCaption": "x"}))
    with pytest.raises(DataError, match=r"relative_captions_shoes\.json record 5 \(reference 'img_womens_flats_1\.jpg', "
                                        r"target 'img_womens_clogs_1\.jpg'\): the reference image is in neither"):
        open_dataset("shoes", root)[2]("train")


def test_target_in_the_other_list(root):
    edit_captions(root, lambda r: r[0].update(ImageName=EVAL[3]))
    with pytest.raises(DataError, match=r"record 0 .*: the target image is not in train_im_names\.txt"):
        open_dataset("shoes", root)[2]("test")


def test_missing_key(root):
    edit_captions(root, lambda r: r[3].pop("RelativeCaption"))
    with pytest.raises(DataError, match=r"relative_captions_shoes\.json record 3 \(reference .*\): missing key 'RelativeCaption'"):
        open_dataset("shoes", root)[2]("test")


def test_truncated_json(root):
    truncate(root / "relative_captions_shoes.json")
    with pytest.raises(DataError, match=r"relative_captions_shoes\.json: malformed or truncated JSON at line"):
        open_dataset("shoes", root)[2]("test")


def test_duplicate_image_file_names(root):
    write_image(root / "copies" / EVAL[1])
    with pytest.raises(DataError, match=r"image 'img_womens_clogs_2\.jpg' found twice \(.*img_womens_clogs_2\.jpg and "
                                        r".*img_womens_clogs_2\.jpg\)"):
        open_dataset("shoes", root)


def test_missing_image_file(root):
    from fashion_bench.data.datamodule import FashionDataModule

    (root / "womens_clogs" / "8" / EVAL[4]).unlink()
    with pytest.raises(DataError, match=r"1 of 5 image files are missing \(item 'img_womens_clogs_5\.jpg'"):
        FashionDataModule("shoes", str(root), num_workers=0).split("test")


def test_validate(root, tmp_path):
    (payload,) = run_experiment("validate", "clip__shoes", root, tmp_path / "runs")
    assert payload["protocol"]["name"] == "shoes" and payload["split"] == "test"
    assert (payload["num_queries"], payload["gallery_size"]) == (2, 5)
    assert set(payload["metrics"]) >= {"R@1", "R@10", "R@50", "headline"}


def test_duplicates_are_named(root):
    """The same pair with another caption is another query; an identical record, or a name listed twice, is an
    error naming the file and the record or line."""
    edit_captions(root, lambda r: r.append({**r[1], "RelativeCaption": "is shinier"}))
    assert len(open_dataset("shoes", root)[2]("test").queries) == 3
    edit_captions(root, lambda r: r.append(dict(r[1])))
    with pytest.raises(DataError, match=r"relative_captions_shoes\.json record 6 \(reference 'img_womens_clogs_1\.jpg', "
                                        r"target 'img_womens_clogs_2\.jpg'\): duplicate record \(same reference, target and "
                                        r"caption\) \(first at .*record 1 "):
        open_dataset("shoes", root)[2]("test")
    write_lines(root / "eval_im_names.txt", EVAL + [EVAL[2]])
    with pytest.raises(DataError, match=r"eval_im_names\.txt:6: duplicate image name 'img_womens_clogs_3\.jpg' \(first at "
                                        r".*eval_im_names\.txt:3\)"):
        open_dataset("shoes", root)[2]("test")


def test_empty_caption_is_an_error(root):
    """Every Shoes query has a target, so a query without text would train or score a plain image query."""
    edit_captions(root, lambda r: r[3].update(RelativeCaption=""))
    with pytest.raises(DataError, match=r"relative_captions_shoes\.json record 3 \(reference .*\): key 'RelativeCaption' has "
                                        r"no text"):
        open_dataset("shoes", root)[2]("test")


def test_bom_crlf_and_trailing_spaces_are_read(root):
    """Name lists and captions re-saved on Windows (byte order mark, CRLF, a trailing space after a name): every
    record is kept, so the query count equals the record count."""
    (root / "eval_im_names.txt").write_bytes(b"\xef\xbb\xbf" + "".join(f"{n} \r\n" for n in EVAL).encode())
    path = root / "relative_captions_shoes.json"
    records = json.loads(path.read_text())
    records[1]["ImageName"] += " "
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(records, indent=1).replace("\n", "\r\n").encode())
    _, _, load = open_dataset("shoes", root)
    test = load("test")
    assert test.gallery == EVAL and test.queries[0].positives == [EVAL[1]]
    assert len(test.queries) + len(load("train").queries) == len(records)
