"""Catalogue manifest adapter and the canonical checks every split passes: duplicate ids named (file and line),
csv manifests as spreadsheets write them (byte order mark, CRLF, trailing commas), ids as numbers or strings."""

from __future__ import annotations

import json

import pytest

from fashion_bench.data.adapters import open_dataset
from fashion_bench.data.schema import DataError, Query, Split


def write_jsonl(path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def open_manifest(root, **kwargs):
    """The adapter on a catalogue without image files and without a split column: every record in ``test``."""
    return open_dataset("manifest", root, check_images=False, **{"split_percentages": {"test": 100}, **kwargs})


def catalogue(n: int = 3) -> list[dict]:
    return [{"item_id": f"p{k}-{d}", "image": f"img/{k}-{d}.jpg", "identity": f"p{k}", "domain": d, "text": f"dress {k}"}
            for k in range(n) for d in ("shop", "query")]


def test_duplicate_item_id_is_named(tmp_path):
    """A gallery listing one id twice would let the copy that is not a positive win a tie: it is rejected."""
    records = catalogue()
    write_jsonl(tmp_path / "manifest.jsonl", [*records, {**records[0], "image": "img/other.jpg"}])
    with pytest.raises(DataError, match=r"manifest\.jsonl:7: duplicate item_id 'p0-shop' \(first at .*manifest\.jsonl:1\)"):
        open_manifest(tmp_path, task="id")


def test_same_id_as_number_and_string_is_one_id(tmp_path):
    write_jsonl(tmp_path / "manifest.jsonl", [{"item_id": 7, "image": "a.jpg"}, {"item_id": "7 ", "image": "b.jpg"}])
    with pytest.raises(DataError, match=r"manifest\.jsonl:2: duplicate item_id '7' \(first at .*manifest\.jsonl:1\)"):
        open_manifest(tmp_path)
    write_jsonl(tmp_path / "manifest.jsonl", [{"item_id": 7, "image": "a.jpg", "identity": 3}, {"item_id": "8", "image": "b.jpg", "identity": "3"}])
    split = open_manifest(tmp_path)[2]("test")
    assert set(split.items) == {"7", "8"} and split.items["7"].identity == split.items["8"].identity == "3"


def test_duplicate_image_path_without_item_id_is_named(tmp_path):
    (tmp_path / "cat.csv").write_text("image,identity\na.jpg,p1\nb.jpg,p1\na.jpg,p2\n")
    with pytest.raises(DataError, match=r"cat\.csv:4: duplicate item_id 'a\.jpg' \(first at .*cat\.csv:2\)"):
        open_manifest(tmp_path, manifest="cat.csv")


def test_csv_with_bom_crlf_and_trailing_commas(tmp_path):
    """Every line ends with a comma (and the header with an unnamed column), CRLF line ends, a byte order mark:
    every record is kept, with no empty extra column."""
    lines = ["image,text,identity,domain,split,", *(f"{k}-{d}.jpg,dress {k},p{k},{d},test," for k in range(3) for d in ("shop", "query"))]
    (tmp_path / "cat.csv").write_bytes(b"\xef\xbb\xbf" + "".join(f"{line}\r\n" for line in lines).encode())
    split = open_dataset("manifest", tmp_path, manifest="cat.csv", task="id", check_images=False)[2]("test")
    assert len(split.items) == 6 and len(split.queries) == 3
    assert split.items["0-shop.jpg"].domain == "shop" and split.items["0-shop.jpg"].text == ["dress 0"]
    (tmp_path / "bad.csv").write_text("image,text\na.jpg,t,EXTRA\n")
    with pytest.raises(DataError, match=r"bad\.csv:2: malformed csv line \(more fields than the header\)"):
        open_manifest(tmp_path, manifest="bad.csv")


def test_jsonl_with_bom(tmp_path):
    (tmp_path / "manifest.jsonl").write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\r\n" for r in catalogue()).encode())
    assert len(open_manifest(tmp_path, task="t2i")[2]("test").queries) == 3


def test_split_rejects_repeated_gallery_and_query_ids():
    """The backstop behind every adapter (and the canonical layout's gallery.txt / queries.jsonl)."""
    from fashion_bench.data.schema import Item

    items = {i: Item(i, f"{i}.jpg") for i in ("a", "b")}
    with pytest.raises(DataError, match=r"src: split 'val' gallery: id 'a' at position 2 repeats position 0"):
        Split("val", items, ["a", "b", "a"], []).validate("src")
    queries = [Query("q", ["a"], image="b"), Query("q", ["b"], image="a")]
    with pytest.raises(DataError, match=r"src: split 'val' queries: id 'q' at position 1 repeats position 0"):
        Split("val", items, ["a", "b"], queries).validate("src")
