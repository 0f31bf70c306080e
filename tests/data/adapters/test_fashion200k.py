"""Fashion200k adapter (TIRG protocol): label files, templated test queries, caption-level hits, seeded training
pairs of one-word-apart captions, bad files named."""

from __future__ import annotations

import pytest
from _fixtures_cir import evaluate_split, run_experiment, write_image, write_lines

from fashion_bench.data.adapters import open_dataset
from fashion_bench.data.adapters.fashion200k import modification_text
from fashion_bench.data.schema import DataError, SplitNotFound

DRESS = "women/dresses/casual_and_day_dresses"
TEST_LABELS = {
    "dress": [(f"{DRESS}/1/1_0.jpeg", "red floral dress"), (f"{DRESS}/2/2_0.jpeg", "blue floral dress"),
              (f"{DRESS}/3/3_0.jpeg", "blue floral dress"), (f"{DRESS}/4/4_0.jpeg", "green striped dress")],
    "top": [("women/tops/blouses/5/5_0.jpeg", "white cotton top"), ("women/tops/blouses/6/6_0.jpeg", "black cotton top")],
}
TRAIN_LABELS = {
    "dress": [(f"{DRESS}/10/10_0.jpeg", "black long dress"), (f"{DRESS}/11/11_0.jpeg", "white long dress"),
              (f"{DRESS}/12/12_0.jpeg", "black short dress"), (f"{DRESS}/13/13_0.jpeg", "plain shirt dress sale")],
}
QUERIES = [(0, 1), (4, 5)]  # indices into the flattened test labels


def flat(labels):
    return [path for rows in labels.values() for path, _ in rows]


def write_fashion200k(root):
    for split, labels in (("test", TEST_LABELS), ("train", TRAIN_LABELS)):
        for category, rows in labels.items():
            write_lines(root / "labels" / f"{category}_{split}_detect_all.txt",
                        [f"{path}\t0.{n + 5}\t{caption}" for n, (path, caption) in enumerate(rows)])
            for n, (path, _) in enumerate(rows):
                write_image(root / path, seed=n, size=12)
    paths = flat(TEST_LABELS)
    write_lines(root / "test_queries.txt", [f"{paths[s]} {paths[t]}" for s, t in QUERIES])
    return root


@pytest.fixture
def root(tmp_path):
    return write_fashion200k(tmp_path / "fashion200k")


def test_modification_text_is_tirgs_template():
    assert modification_text("red floral dress", "blue floral dress") == "replace red with blue"
    assert modification_text("white cotton top", "black cotton top") == "replace white with black"


def test_test_queries_with_caption_level_positives(root):
    _, _, load = open_dataset("fashion200k", root)
    test = load("test")
    paths = flat(TEST_LABELS)
    assert (len(test.queries), len(test.gallery)) == (2, 6)
    q = test.queries[0]
    assert (q.image, q.text, q.exclude) == (paths[0], ["replace red with blue"], [paths[0]])
    assert q.positives == [paths[1], paths[2]]  # both images captioned "blue floral dress"
    assert test.items[paths[4]].category == "top" and test.items[paths[0]].text == ["red floral dress"]
    with pytest.raises(SplitNotFound, match="no label files"):
        load("val")


def test_an_image_with_the_target_caption_is_a_hit(root):
    test = open_dataset("fashion200k", root)[2]("test")
    paths = flat(TEST_LABELS)
    # q0: the source (1.0) is removed; the other "blue floral dress" image (0.9) comes first: a hit at 1.
    # q1: "green striped dress" (0.9) beats the target "black cotton top" (0.5): rank 2.
    scores = {"test-0": {paths[0]: 1.0, paths[2]: 0.9, paths[1]: 0.1}, "test-1": {paths[3]: 0.9, paths[5]: 0.5}}
    m = evaluate_split("fashion200k", test, scores).metrics
    assert (m["R@1"], m["R@5"]) == (0.5, 1.0)


def test_training_pairs_differ_by_one_word_and_are_seeded(root):
    _, _, load = open_dataset("fashion200k", root, triplets_per_image=2, seed=3)
    train = load("train")
    captions = {i: it.text[0] for i, it in train.items.items()}
    # "plain shirt dress sale" has no caption one word apart: not a source. The three others give 2 pairs each.
    assert len(train.queries) == 6 and len(train.gallery) == 4
    for q in train.queries:
        source, target = captions[q.image], captions[q.positives[0]]
        assert source != target and len(set(source.split()) ^ set(target.split())) == 2
        assert q.text == [modification_text(source, target)]
    again = open_dataset("fashion200k", root, triplets_per_image=2, seed=3)[2]("train")
    assert [(q.image, q.positives) for q in again.queries] == [(q.image, q.positives) for q in train.queries]


def test_malformed_label_line(root):
    path = root / "labels" / "top_test_detect_all.txt"
    path.write_text(path.read_text() + "women/tops/7_0.jpeg 0.9 no tabs here\n")
    with pytest.raises(DataError, match=r"top_test_detect_all\.txt:3: expected 'path<TAB>detection score<TAB>caption'"):
        open_dataset("fashion200k", root)[2]("test")


def test_conflicting_duplicate_label(root):
    path = root / "labels" / "top_test_detect_all.txt"
    path.write_text(path.read_text() + f"{DRESS}/1/1_0.jpeg\t0.9\tyellow floral dress\n")
    with pytest.raises(DataError, match=r"top_test_detect_all\.txt:3: image '.*1_0\.jpeg' repeats .*dress_test_detect_all"
                                        r"\.txt:1 with another caption"):
        open_dataset("fashion200k", root)[2]("test")


def test_query_image_absent_from_labels(root):
    path = root / "test_queries.txt"
    path.write_text(path.read_text() + f"women/nowhere.jpeg {flat(TEST_LABELS)[0]}\n")
    with pytest.raises(DataError, match=r"test_queries\.txt:3: source image 'women/nowhere\.jpeg' is not in the 'test' label"):
        open_dataset("fashion200k", root)[2]("test")


def test_missing_test_queries_file(root):
    (root / "test_queries.txt").unlink()
    with pytest.raises(DataError, match=r"test_queries\.txt: not found; .*TIRG"):
        open_dataset("fashion200k", root)[2]("test")


def test_validate(root, tmp_path):
    (payload,) = run_experiment("validate", "clip__fashion200k", root, tmp_path / "runs")
    assert payload["protocol"]["name"] == "fashion200k" and payload["split"] == "test"
    assert (payload["num_queries"], payload["gallery_size"]) == (2, 6)
    assert set(payload["metrics"]) >= {"R@1", "R@5", "R@10", "R@50"}


def test_repeated_query_line_is_named(root):
    paths = flat(TEST_LABELS)
    write_lines(root / "test_queries.txt", [f"{paths[s]} {paths[t]}" for s, t in (*QUERIES, QUERIES[0])])
    with pytest.raises(DataError, match=r"test_queries\.txt:3: duplicate query '.*1_0\.jpeg .*2_0\.jpeg' \(first at "
                                        r".*test_queries\.txt:1\)"):
        open_dataset("fashion200k", root)[2]("test")


def test_bom_and_crlf_label_files_are_read(root):
    path = root / "labels" / "dress_test_detect_all.txt"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_text().replace("\n", "\r\n").encode())
    test = open_dataset("fashion200k", root)[2]("test")
    assert flat(TEST_LABELS)[0] in test.items and len(test.queries) == len(QUERIES)
