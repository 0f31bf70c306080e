"""CIRR test-server files."""

from __future__ import annotations

import json

import pytest

from fashion_bench.retrieval import write_cirr_submission


def test_cirr_submission_files(tmp_path):
    recall = [[f"img{i}-{j}" for j in range(50)] for i in range(2)]
    subset = [["a", "b", "c"], ["d", "e", "f"]]
    recall_path, subset_path = write_cirr_submission(tmp_path / "out", [7, "12"], recall, subset)
    assert recall_path.name == "recall_submission.json" and subset_path.name == "recall_subset_submission.json"
    assert json.loads(recall_path.read_text()) == {"version": "rc2", "metric": "recall", "7": recall[0], "12": recall[1]}
    assert json.loads(subset_path.read_text()) == {
        "version": "rc2", "metric": "recall_subset", "7": ["a", "b", "c"], "12": ["d", "e", "f"]
    }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [recall_path.name, subset_path.name]


@pytest.mark.parametrize(
    "pair_ids,recall,subset,message",
    [
        ([1, 2], [["x"] * 50], [["a"] * 3] * 2, "2 pair ids, 1 recall rankings and 2 subset rankings"),
        ([1], [["x"] * 49], [["a"] * 3], "pair 1 needs exactly 50 image names for 'recall'"),
        ([1], [["x"] * 50], [["a", "b"]], "pair 1 needs exactly 3 image names for 'recall_subset'"),
        ([1, "1"], [["x"] * 50] * 2, [["a"] * 3] * 2, "duplicate pair ids ['1']"),
    ],
)
def test_cirr_submission_validation(tmp_path, pair_ids, recall, subset, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        write_cirr_submission(tmp_path, pair_ids, recall, subset)
    assert list(tmp_path.iterdir()) == []
