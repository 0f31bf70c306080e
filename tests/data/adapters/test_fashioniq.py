"""FashionIQ adapter: splits and counts, per-category galleries and averaging, both protocols, the test split
without targets, bad files named."""

from __future__ import annotations

import io
import json

import pytest
from _fixtures_cir import evaluate_split, run_experiment, truncate, write_image, write_json

from fashion_bench.data.adapters import open_dataset
from fashion_bench.data.schema import DataError, SplitNotFound

CATEGORIES = ("dress", "shirt", "toptee")
VAL_PAIRS = {"dress": [(0, 1), (2, 3)], "shirt": [(0, 1)], "toptee": [(0, 1), (2, 3), (4, 5)]}


def name(category: str, n: int, split: str = "val") -> str:
    return f"{category[0]}{'' if split == 'val' else split[:2]}{n:02d}"


def write_fashioniq(root):
    """Per category: val 12 images and VAL_PAIRS queries, train 2 images and 1 query, test 2 images and 1 query
    without target. Dress images are JPEG, the others PNG (copies of FashionIQ come with either)."""
    sizes = {"val": 12, "train": 2, "test": 2}
    for c in CATEGORIES:
        for split, size in sizes.items():
            names = [name(c, n, split) for n in range(size)]
            write_json(root / "image_splits" / f"split.{c}.{split}.json", names)
            for n, image in enumerate(names):
                write_image(root / "images" / f"{image}.{'jpg' if c == 'dress' else 'png'}", seed=n)
        pairs = {"val": VAL_PAIRS[c], "train": [(0, 1)]}
        for split, split_pairs in pairs.items():
            write_json(
                root / "captions" / f"cap.{c}.{split}.json",
                [{"target": name(c, t, split), "candidate": name(c, r, split), "captions": [f"is {c} {t}", "is longer"]}
                 for r, t in split_pairs],
            )
        write_json(root / "captions" / f"cap.{c}.test.json", [{"candidate": name(c, 0, "test"), "captions": ["red", "short"]}])
    return root


@pytest.fixture
def root(tmp_path):
    return write_fashioniq(tmp_path / "fashioniq")


def test_splits_counts_and_records(root):
    _, _, load = open_dataset("fashioniq", root)
    val, train, test = load("val"), load("train"), load("test")
    assert len(val.queries) == 6 and len(val.gallery) == 36
    assert [q.query_id for q in val.queries] == ["dress-0", "dress-1", "shirt-0", "toptee-0", "toptee-1", "toptee-2"]
    q = val.queries[1]
    assert (q.image, q.positives, q.text, q.category, q.exclude) == ("d02", ["d03"], ["is dress 3", "is longer"], "dress", [])
    assert val.items["d05"].image == "images/d05.jpg" and val.items["s05"].image == "images/s05.png"
    assert {val.items[i].category for i in val.gallery} == set(CATEGORIES)
    assert len(train.queries) == 3 and len(train.gallery) == 6
    assert len(test.queries) == 3 and all(q.positives == [] for q in test.queries) and len(test.gallery) == 6
    assert load.image_root == root


def test_val_split_gallery_is_candidates_and_targets(root):
    _, _, load = open_dataset("fashioniq-valsplit", root)
    val = load("val")
    assert sorted(val.gallery) == sorted(["d00", "d01", "d02", "d03", "s00", "s01", *(name("toptee", n) for n in range(6))])


def scores_for_val() -> dict[str, dict[str, float]]:
    """Every other-category item scores 1.0 (above every target). Within the category: dress-1's target is
    beaten by 10 dress items (rank 11) and toptee-1's by all 11 other toptee items (rank 12); the rest rank 1."""
    others = {c: {name(o, n): 1.0 for o in CATEGORIES if o != c for n in range(12)} for c in CATEGORIES}
    scores = {}
    for c, pairs in VAL_PAIRS.items():
        for i, (_, t) in enumerate(pairs):
            scores[f"{c}-{i}"] = {**others[c], name(c, t): 0.5}
    scores["dress-1"] |= {name("dress", n): 0.9 for n in (0, 1, *range(4, 12))}
    scores["toptee-1"] |= {name("toptee", n): 0.9 for n in range(12) if n != 3}
    return scores


def test_original_protocol_per_category_galleries_average_and_headline(root):
    _, _, load = open_dataset("fashioniq", root)
    result = evaluate_split("fashioniq", load("val"), scores_for_val())
    per = result.per_subset
    assert (per["dress"]["R@10"], per["shirt"]["R@10"], per["toptee"]["R@10"]) == pytest.approx((0.5, 1.0, 2 / 3))
    assert all(per[c]["R@50"] == 1.0 for c in CATEGORIES)
    m = result.metrics
    assert m["R@10"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)  # mean over categories, not 4/6 pooled
    assert m["R@50"] == 1.0
    assert m["headline"] == pytest.approx((m["R@10"] + m["R@50"]) / 2)
    # Without per-category galleries the 24 other-category items would outrank every target.
    pooled = evaluate_split("cir", load("val"), scores_for_val()).metrics
    assert pooled["R@10"] == 0.0


def test_valsplit_protocol_uses_the_smaller_gallery(root):
    _, _, load = open_dataset("fashioniq-valsplit", root)
    result = evaluate_split("fashioniq-valsplit", load("val"), scores_for_val())
    assert result.per_subset["dress"]["R@10"] == 1.0  # dress-1: only d00, d01 remain above its target (rank 3)
    assert result.per_subset["toptee"]["R@1"] == pytest.approx(2 / 3)  # toptee-1: 5 items above (rank 6)
    assert result.gallery_size == 12


def test_image_listed_in_two_categories_gets_one_item_per_category(root):
    write_json(root / "image_splits" / "split.shirt.val.json", [name("shirt", n) for n in range(12)] + ["t05"])
    write_json(root / "captions" / "cap.shirt.val.json", [{"target": "t05", "candidate": "s00", "captions": ["a", "b"]}])
    val = open_dataset("fashioniq", root)[2]("val")
    assert val.queries[2].positives == ["shirt/t05"] and val.queries[5].positives == ["toptee/t05"]
    assert val.items["shirt/t05"].image == val.items["toptee/t05"].image and "t05" not in val.items
    assert (val.items["shirt/t05"].category, len(val.gallery)) == ("shirt", 37)


def test_missing_key_names_file_and_record(root):
    path = root / "captions" / "cap.dress.val.json"
    records = json.loads(path.read_text())
    del records[1]["captions"]
    write_json(path, records)
    with pytest.raises(DataError, match=r"cap\.dress\.val\.json record 1 \(candidate 'd02'\): missing key 'captions'"):
        open_dataset("fashioniq", root)[2]("val")


def test_caption_image_absent_from_split(root):
    path = root / "captions" / "cap.shirt.val.json"
    write_json(path, [{"target": "nowhere", "candidate": "s00", "captions": ["a", "b"]}])
    with pytest.raises(DataError, match=r"cap\.shirt\.val\.json record 0 \(candidate 's00'\): images \['nowhere'\] not in "
                                        r"the split's image list .*split\.shirt\.val\.json"):
        open_dataset("fashioniq", root)[2]("val")


def test_truncated_json(root):
    truncate(root / "image_splits" / "split.toptee.val.json")
    with pytest.raises(DataError, match=r"split\.toptee\.val\.json: malformed or truncated JSON at line \d+"):
        open_dataset("fashioniq", root)[2]("val")


def test_absent_split_and_bad_arguments(root):
    with pytest.raises(SplitNotFound, match=r"split\.dress\.extra\.json: annotation file of split 'extra' not found"):
        open_dataset("fashioniq", root)[2]("extra")
    with pytest.raises(ValueError, match="unknown categories"):
        open_dataset("fashioniq", root, categories=["coat"])
    _, _, load = open_dataset("fashioniq", root, categories=["shirt"])
    assert len(load("val").queries) == 1


def test_missing_image_files_fail_or_are_skipped(root):
    from fashion_bench.data.datamodule import FashionDataModule

    (root / "images" / "d05.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of 36 image files are missing \(item 'd05': .*d05\.(png|jpg)\).*skip_missing_images"):
        FashionDataModule("fashioniq", str(root), num_workers=0).split("val")
    assert len(FashionDataModule("fashioniq", str(root), num_workers=0, skip_missing_images=True).split("val").gallery) == 36


def test_validate_and_test_split_without_targets(root, tmp_path):
    runs = tmp_path / "runs"
    (payload,) = run_experiment("validate", "clip__fashioniq", root, runs)
    assert payload["dataset"] == "fashioniq" and payload["protocol"]["name"] == "fashioniq"
    assert payload["num_queries"] == 6 and payload["gallery_size"] == 36
    assert set(payload["per_subset"]) == set(CATEGORIES)
    assert {"R@10", "R@50", "headline"} <= set(payload["metrics"])
    with pytest.raises(DataError, match=r"split 'test' of dataset 'fashioniq' has no targets .*save_rankings"):
        run_experiment("test", "clip__fashioniq", root, runs)
    run_experiment("test", "clip__fashioniq", root, runs, "--evaluator.save_rankings", "5")
    (rankings,) = runs.glob("clip__fashioniq/*/rankings.jsonl")
    lines = [json.loads(line) for line in rankings.read_text().splitlines()]
    assert [line["query_id"] for line in lines] == ["dress-0", "shirt-0", "toptee-0"]
    assert len(list(runs.glob("clip__fashioniq/*/results.json"))) == 1  # nothing to score on test


def test_validate_valsplit_variant(root, tmp_path):
    (payload,) = run_experiment("validate", "clip__fashioniq", root, tmp_path / "runs", "--data.dataset", "fashioniq-valsplit")
    assert payload["protocol"]["name"] == "fashioniq-valsplit" and payload["gallery_size"] == 12


def edit_records(root, category: str, split: str, change) -> None:
    path = root / "captions" / f"cap.{category}.{split}.json"
    records = json.loads(path.read_text())
    change(records)
    write_json(path, records)


def test_empty_caption_is_kept_and_counted_as_a_warning(root):
    """The complete caption files hold records such as ["", "has bigger image"] in train, val and test: the
    query stays (counts equal record counts), the empty caption adds nothing to the joined text, data verify
    counts it per split."""
    from fashion_bench.data.datasets import join_captions
    from fashion_bench.data.verify import verify

    for split in ("train", "val", "test"):
        edit_records(root, "dress", split, lambda r: r[0].update(captions=["", "has bigger image"]))
    _, _, load = open_dataset("fashioniq", root)
    val = load("val")
    records = sum(len(json.loads((root / "captions" / f"cap.{c}.val.json").read_text())) for c in CATEGORIES)
    assert len(val.queries) == records == 6 and (len(load("train").queries), len(load("test").queries)) == (3, 3)
    assert val.queries[0].text == ["", "has bigger image"] and join_captions(val.queries[0].text) == "has bigger image"
    report = verify({"dataset": "fashioniq", "root": str(root)}, progress=False, out=io.StringIO())
    assert report.split_warnings == {s: {"empty_captions": 1} for s in ("train", "val", "test")}
    assert "split 'val': 1 queries with an empty caption" in " ".join(report.warnings) and not report.errors


def test_query_with_a_target_and_no_text_is_an_error(root):
    edit_records(root, "shirt", "val", lambda r: r[0].update(captions=["", " "]))
    with pytest.raises(DataError, match=r"cap\.shirt\.val\.json record 0 \(candidate 's00'\): key 'captions' has no text"):
        open_dataset("fashioniq", root)[2]("val")
    edit_records(root, "shirt", "test", lambda r: r[0].update(captions=["", ""]))
    assert open_dataset("fashioniq", root)[2]("test").queries[1].text == ["", ""]  # for the server: kept


def test_duplicates_are_named(root):
    """A pair annotated twice with other captions is two queries; an identical record twice, or an image id
    listed twice in a split file, is an error naming the file and the record."""
    edit_records(root, "toptee", "val", lambda r: r.append({**r[0], "captions": ["is shorter", "is red"]}))
    assert len(open_dataset("fashioniq", root)[2]("val").queries) == 7
    edit_records(root, "toptee", "val", lambda r: r.append(dict(r[0])))
    with pytest.raises(DataError, match=r"cap\.toptee\.val\.json record 4 \(candidate 't00'\): duplicate record \(same "
                                        r"candidate, target and captions\) \(first at .*record 0 "):
        open_dataset("fashioniq", root)[2]("val")
    write_json(root / "image_splits" / "split.dress.val.json", [name("dress", n) for n in range(12)] + ["d03"])
    with pytest.raises(DataError, match=r"split\.dress\.val\.json entry 12: duplicate image id 'd03' \(first at .*entry 3\)"):
        open_dataset("fashioniq", root)[2]("val")


def test_bom_crlf_numeric_ids_and_trailing_spaces_are_read(root):
    """Files re-saved on Windows (byte order mark, CRLF) and ids written as numbers or with a trailing space
    read as the published ones."""
    path = root / "captions" / "cap.dress.val.json"
    records = json.loads(path.read_text())
    records[0]["candidate"] += " "
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(records, indent=1).replace("\n", "\r\n").encode())
    write_json(root / "image_splits" / "split.shirt.val.json", [name("shirt", n) for n in range(12)] + [123])
    val = open_dataset("fashioniq", root)[2]("val")
    assert val.queries[0].image == "d00" and "123" in val.items and len(val.gallery) == 37
