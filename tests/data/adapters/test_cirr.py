"""CIRR adapter: pairid queries, the reference excluded, subsets of the five other members, the whole split as
gallery, test1 without targets exported for the server, bad files named."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from _fixtures_cir import evaluate_split, run_experiment, truncate, write_image, write_json

from fashion_bench.data.adapters import open_dataset
from fashion_bench.data.schema import DataError, SplitNotFound


def members(prefix: str, group: int) -> list[str]:
    return [f"{prefix}-{group}-{m}-img0" for m in range(6)]


A, B = members("dev", 1), members("dev", 2)
EXTRA = ["dev-9-0-img0", "dev-9-1-img0"]
T = members("test1", 1)
T_EXTRA = [f"test1-{n}-0-img1" for n in range(100, 150)]


def record(pair_id: int, reference: str, target: str | None, group: list[str], set_id: int) -> dict:
    out = {"pairid": pair_id, "reference": reference, "caption": f"caption of {pair_id}",
           "img_set": {"id": set_id, "members": group, "reference_rank": group.index(reference)}}
    if target is not None:
        out |= {"target_hard": target, "target_soft": {target: 1.0}}
        out["img_set"]["target_rank"] = group.index(target)
    return out


def write_cirr(root, annotations=None):
    """val: two image sets and two stray images (14 images), 3 queries; test1: one set plus 50 strays (56 images,
    enough for the 50 names the server wants), 2 queries without targets; train: one set, 1 query."""
    annotations = annotations or root
    images = {"val": A + B + EXTRA, "test1": T + T_EXTRA, "train": members("train", 5)}
    folders = {"val": "./dev", "test1": "./test1", "train": "./train/34"}
    for split, names in images.items():
        write_json(annotations / "image_splits" / f"split.rc2.{split}.json", {n: f"{folders[split]}/{n}.png" for n in names})
        for n, image in enumerate(names):
            write_image(root / folders[split] / f"{image}.png", seed=n)
    write_json(annotations / "captions" / "cap.rc2.val.json",
               [record(10, A[0], A[1], A, 1), record(11, A[2], A[3], A, 1), record(12, B[0], B[4], B, 2)])
    write_json(annotations / "captions" / "cap.rc2.test1.json", [record(20, T[0], None, T, 1), record(21, T[3], None, T, 1)])
    train = members("train", 5)
    write_json(annotations / "captions" / "cap.rc2.train.json", [record(30, train[0], train[2], train, 7)])
    return root


@pytest.fixture
def root(tmp_path):
    return write_cirr(tmp_path / "cirr")


def test_splits_and_query_records(root):
    _, _, load = open_dataset("cirr", root)
    val, test1, train = load("val"), load("test1"), load("train")
    assert (len(val.queries), len(val.gallery)) == (3, 14)
    assert (len(test1.queries), len(test1.gallery)) == (2, 56)
    assert (len(train.queries), len(train.gallery)) == (1, 6)
    q = val.queries[0]
    assert (q.query_id, q.image, q.positives, q.text) == ("10", A[0], [A[1]], ["caption of 10"])
    assert q.exclude == [A[0]] and q.subset == A[1:]
    assert [q.query_id for q in test1.queries] == ["20", "21"] and all(not q.positives for q in test1.queries)
    assert val.items[A[0]].image == f"dev/{A[0]}.png" and train.items[train.gallery[0]].image.startswith("train/34/")
    with pytest.raises(SplitNotFound):
        load("test2")


def test_clip4cir_layout_with_annotations_in_cirr_folder(tmp_path):
    root = write_cirr(tmp_path / "cirr_dataset", annotations=tmp_path / "cirr_dataset" / "cirr")
    assert len(open_dataset("cirr", root)[2]("val").queries) == 3


def test_reference_never_ranked_and_subset_over_the_other_five(root):
    val = open_dataset("cirr", root)[2]("val")
    # Every reference scores highest. q10: stray E0 (0.9) and member A2 (0.6) beat target A1 -> rank 3, subset
    # rank 2. q11: rank 1 both. q12: the six A images (0.8, not in B's set) beat B4 -> rank 7, subset rank 1.
    scores = {
        "10": {A[0]: 1.0, A[1]: 0.5, A[2]: 0.6, EXTRA[0]: 0.9},
        "11": {A[2]: 1.0, A[3]: 0.5},
        "12": {B[0]: 1.0, B[4]: 0.5, **{a: 0.8 for a in A}},
    }
    result = evaluate_split("cirr", val, scores, top_n=13)
    m = result.metrics
    assert (m["R@1"], m["R@5"], m["R@10"]) == pytest.approx((1 / 3, 2 / 3, 1.0))
    assert (m["Rsubset@1"], m["Rsubset@2"], m["Rsubset@3"]) == pytest.approx((2 / 3, 1.0, 1.0))
    assert m["headline"] == pytest.approx((m["R@5"] + m["Rsubset@1"]) / 2)
    position = {item: i for i, item in enumerate(val.gallery)}
    for q, row, subset_row in zip(val.queries, result.topk.tolist(), result.subset_topk.tolist()):
        assert position[q.image] not in row
        assert {val.gallery[i] for i in subset_row if i >= 0} <= set(q.subset)
        assert q.image not in q.subset and len(q.subset) == 5
    assert val.gallery[result.subset_topk[0, 0]] == A[2]


def test_missing_key_names_pairid(root):
    path = root / "captions" / "cap.rc2.val.json"
    records = json.loads(path.read_text())
    del records[1]["reference"]
    write_json(path, records)
    with pytest.raises(DataError, match=r"cap\.rc2\.val\.json record 1 \(pairid 11\): missing key 'reference'"):
        open_dataset("cirr", root)[2]("val")


def test_target_absent_from_split(root):
    path = root / "captions" / "cap.rc2.val.json"
    records = json.loads(path.read_text())
    records[2]["target_hard"] = "dev-404-0-img0"
    write_json(path, records)
    with pytest.raises(DataError, match=r"record 2 \(pairid 12\): images \['dev-404-0-img0'\] not in the split's image "
                                        r"list .*split\.rc2\.val\.json"):
        open_dataset("cirr", root)[2]("val")


def test_reference_outside_its_image_set(root):
    path = root / "captions" / "cap.rc2.val.json"
    records = json.loads(path.read_text())
    records[0]["reference"] = B[1]
    write_json(path, records)
    with pytest.raises(DataError, match=r"record 0 \(pairid 10\): reference 'dev-2-1-img0' is not among its img_set members"):
        open_dataset("cirr", root)[2]("val")


def test_truncated_json(root):
    truncate(root / "captions" / "cap.rc2.val.json")
    with pytest.raises(DataError, match=r"cap\.rc2\.val\.json: malformed or truncated JSON at line \d+ column \d+"):
        open_dataset("cirr", root)[2]("val")


def test_missing_image_file_named(root):
    from fashion_bench.data.datamodule import FashionDataModule

    shutil.rmtree(root / "dev")
    with pytest.raises(DataError, match=r"14 of 14 image files are missing \(item 'dev-1-0-img0': .*dev/dev-1-0-img0\.png"):
        FashionDataModule("cirr", str(root), num_workers=0).split("val")


def test_validate_and_server_export(root, tmp_path):
    runs = tmp_path / "runs"
    (payload,) = run_experiment("validate", "clip__cirr", root, runs)
    assert payload["protocol"]["name"] == "cirr" and payload["num_queries"] == 3 and payload["gallery_size"] == 14
    assert {"R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3", "headline"} <= set(payload["metrics"])
    edit_captions(root, "test1", lambda r: r[1].update(caption=""))  # as in the complete test1 file
    run_experiment("test", "clip__cirr", root, runs, "--evaluator.cirr_export", "true")
    (folder,) = runs.glob("clip__cirr/*/cirr_submission")
    recall = json.loads((folder / "recall_submission.json").read_text())
    subset = json.loads((folder / "recall_subset_submission.json").read_text())
    assert recall["version"] == "rc2" and set(recall) - {"version", "metric"} == {"20", "21"}
    assert len(recall["20"]) == 50 and T[0] not in recall["20"]
    assert set(subset["21"]) <= set(T) - {T[3]} and len(subset["21"]) == 3


def edit_captions(root, split: str, change) -> None:
    path = root / "captions" / f"cap.rc2.{split}.json"
    records = json.loads(path.read_text())
    change(records)
    write_json(path, records)


def test_empty_test1_caption_is_kept_and_counted(root):
    """The complete test1 file holds a record whose caption is empty: the server expects a ranking for it, so
    it stays (ranked by its reference image alone) and data verify counts it."""
    from fashion_bench.data.verify import verify

    edit_captions(root, "test1", lambda r: r[1].update(caption=""))
    test1 = open_dataset("cirr", root)[2]("test1")
    assert [q.query_id for q in test1.queries] == ["20", "21"] and test1.queries[1].text == [""]
    report = verify({"dataset": "cirr", "root": str(root), "test_split": "test1"}, progress=False, out=io.StringIO())
    assert report.split_warnings == {"test1": {"empty_captions": 1, "no_text": 1}} and not report.errors


def test_empty_caption_with_a_target_is_an_error(root):
    edit_captions(root, "val", lambda r: r[2].update(caption=" "))
    with pytest.raises(DataError, match=r"cap\.rc2\.val\.json record 2 \(pairid 12\): key 'caption' has no text"):
        open_dataset("cirr", root)[2]("val")


def test_duplicate_pairid_and_image_name_are_named(root):
    """A pairid written once as a number and once as a string is the same id; a name written twice in the split
    file (JSON keeps only the last) is an error too."""
    edit_captions(root, "val", lambda r: r[2].update(pairid="10"))
    with pytest.raises(DataError, match=r"cap\.rc2\.val\.json record 2: duplicate pairid 10 \(first at .*record 0\)"):
        open_dataset("cirr", root)[2]("val")
    path = root / "image_splits" / "split.rc2.test1.json"
    path.write_text(path.read_text().replace("{", '{"test1-1-0-img0": "./test1/x.png", ', 1))
    with pytest.raises(DataError, match=r"split\.rc2\.test1\.json: a JSON object has the key\(s\) \['test1-1-0-img0'\] twice"):
        open_dataset("cirr", root)[2]("test1")


def test_bom_and_string_pairids_are_read(root):
    path = root / "captions" / "cap.rc2.val.json"
    records = json.loads(path.read_text())
    records[0]["pairid"] = "10"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(records).encode())
    assert [q.query_id for q in open_dataset("cirr", root)[2]("val").queries] == ["10", "11", "12"]
