"""Retrieval gallery pages: structure, thumbnails, escaping, deterministic sampling, bad lines."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_fixtures import results, write_run
from PIL import Image

from fashion_bench.report.collect import load_run
from fashion_bench.report.gallery import gallery_index, gallery_page, sample_queries

NUM_QUERIES = 12


class _Structure(HTMLParser):
    """Queries (section.query), their results (li.result), and every img src."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[list[str]] = []
        self.images: list[str] = []
        self.tags: set[str] = set()
        self.query_texts: list[str] = []
        self._in_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        classes = (dict(attrs).get("class") or "").split()
        if tag == "section" and "query" in classes:
            self.queries.append([])
        if tag == "li" and "result" in classes:
            self.queries[-1].append(" ".join(classes))
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        self._in_text = tag == "ul" and "query-text" in classes or self._in_text

    def handle_endtag(self, tag: str) -> None:
        if tag == "ul":
            self._in_text = False

    def handle_data(self, data: str) -> None:
        if self._in_text:
            self.query_texts.append(data)


def _image(path: Path, colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (300, 400), colour).save(path)
    return str(path)


@pytest.fixture
def ranked_run(tmp_path: Path):
    path = write_run(tmp_path / "runs", results("clip4cir__synth-cir", 0, {"headline": 0.5}))
    images = [_image(tmp_path / "img" / f"{i}.jpg", (20 * i, 100, 200)) for i in range(8)]
    lines = []
    for q in range(NUM_QUERIES):
        ranked = [{"item_id": f"item{(q + r) % 8}", "image": images[(q + r) % 8], "score": 1 - 0.1 * r,
                   "positive": r == q % 3} for r in range(10)]
        lines.append(json.dumps({"query_id": f"q{q}", "query_text": [f"is red <script>alert({q})</script>"],
                                 "query_image": images[q % 8] if q % 2 else None, "results": ranked}))
    lines.insert(3, "{not json")
    lines.insert(5, json.dumps({"query_id": "no-results"}))
    (path.parent / "rankings.jsonl").write_text("\n".join(lines) + "\n")
    return load_run(path)


def test_page_structure(ranked_run) -> None:
    page, warnings = gallery_page(ranked_run, 5)
    parsed = _Structure()
    parsed.feed(page.html)
    assert len(parsed.queries) == 5 and (page.shown, page.total) == (5, NUM_QUERIES)
    assert all(len(results) == 5 for results in parsed.queries)
    assert all(sum("positive" in c for c in results) == 1 for results in parsed.queries)
    assert all(c in ("result positive", "result negative") for results in parsed.queries for c in results)
    assert parsed.images and all(src.startswith("data:image/jpeg;base64,") for src in parsed.images)
    thumb = Image.open(io.BytesIO(base64.b64decode(parsed.images[0].split(",", 1)[1])))
    assert max(thumb.size) <= 128
    assert "script" not in parsed.tags and any("<script>" in text for text in parsed.query_texts)
    assert "score" in page.html and "1.0000" in page.html
    assert warnings == [f"{ranked_run.rankings_path}: skipped 2 malformed line(s): line 4 (corrupt JSON: "
                        "Expecting property name enclosed in double quotes), line 6 (missing 'results' list)"]
    assert page.filename == "clip4cir__synth-cir__20240101-000000_seed0.html"


def test_sampling_is_deterministic_and_by_query_id(ranked_run, tmp_path: Path) -> None:
    first, _, _ = sample_queries(ranked_run.rankings_path, 4)
    shuffled = tmp_path / "shuffled.jsonl"
    lines = ranked_run.rankings_path.read_text().splitlines()
    shuffled.write_text("\n".join(reversed(lines)))
    second, total, _ = sample_queries(shuffled, 4)
    assert [q["query_id"] for q in first] == [q["query_id"] for q in second]
    assert total == NUM_QUERIES


def test_missing_images_are_placeholders_and_warned(ranked_run) -> None:
    first = json.loads(ranked_run.rankings_path.read_text().splitlines()[0])
    first["query_id"] = "only"
    first["results"][0]["image"] = "/nowhere/x.jpg"
    ranked_run.rankings_path.write_text(json.dumps(first) + "\n")
    page, warnings = gallery_page(ranked_run, 5)
    assert 'class="missing"' in page.html and "/nowhere/x.jpg" in page.html
    assert warnings == [f"{ranked_run.rankings_path}: 1 image(s) could not be read (first: /nowhere/x.jpg)"]


def test_index_links_every_page(ranked_run) -> None:
    page, _ = gallery_page(ranked_run, 2)
    index = gallery_index([page])
    assert f'href="{page.filename}"' in index and "2 of 12" in index
