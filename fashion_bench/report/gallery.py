"""Self-contained HTML pages of retrieval results from a run's ``rankings.jsonl``.

Each line of rankings.jsonl is one query::

    {"query_id": str, "query_text": [str], "query_image": path | null,
     "results": [{"item_id": str, "image": path, "score": float, "positive": bool}, ...]}

A page shows N queries chosen by the smallest SHA-1 of their ``query_id`` (deterministic, and the same
queries for every run that shares them), each with its top-5 results: positives outlined in green, the others
in red, scores shown. Images are embedded as small JPEG thumbnails in data URIs; all text is escaped.
Malformed lines and unreadable images are reported as warnings, never errors.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from pathlib import Path
from typing import Any, Iterator, Sequence

from fashion_bench.report.collect import Run, display_path, safe_name

TOP_K = 5
THUMBNAIL_PX = 128
_MAX_LISTED = 5

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
.query { display: flex; gap: 1.5rem; align-items: flex-start; border-top: 1px solid #ddd; padding: 1rem 0; }
.query-side { width: 220px; flex: none; }
.query-side h2 { font-size: 0.95rem; word-break: break-all; margin: 0 0 0.4rem; }
.query-text { font-size: 0.9rem; padding-left: 1.1rem; margin: 0.4rem 0; }
.results { display: flex; gap: 0.9rem; list-style: none; padding: 0; margin: 0; }
.result { width: 140px; font-size: 0.8rem; text-align: center; word-break: break-all; }
.result img, .query-image { max-width: 128px; max-height: 128px; display: block; margin: 4px auto; }
.result.positive img, .result.positive .missing { outline: 4px solid #2e9d44; }
.result.negative img, .result.negative .missing { outline: 4px solid #d43c3c; }
.score { font-family: monospace; }
.missing { width: 120px; height: 90px; margin: 4px auto; background: #eee; font-size: 0.7rem; }
.positive-label { color: #2e9d44; font-weight: bold; } .negative-label { color: #d43c3c; font-weight: bold; }
table { border-collapse: collapse; } td, th { padding: 0.3rem 0.8rem; border-bottom: 1px solid #ddd; }
"""


@dataclass(frozen=True)
class GalleryPage:
    run: Run
    filename: str
    html: str
    shown: int
    total: int

    @property
    def label(self) -> str:
        return f"{self.run.experiment} · {self.run.run_name} ({self.run.split})"


def gallery_page(run: Run, num_queries: int) -> tuple[GalleryPage, list[str]]:
    """The HTML page of ``run``'s rankings.jsonl and the warnings met while building it."""
    path = run.rankings_path
    queries, total, bad_lines = sample_queries(path, num_queries)
    warnings = []
    if bad_lines:
        listed = ", ".join(bad_lines[:_MAX_LISTED]) + (", ..." if len(bad_lines) > _MAX_LISTED else "")
        warnings.append(f"{display_path(path)}: skipped {len(bad_lines)} malformed line(s): {listed}")
    images = _Thumbnails(path.parent)
    sections = [_query_section(index, query, images) for index, query in enumerate(queries)]
    if images.failed:
        warnings.append(f"{display_path(path)}: {len(images.failed)} image(s) could not be read "
                        f"(first: {images.failed[0]})")
    title = f"Retrieval gallery: {run.experiment} / {run.run_name}"
    body = [
        f"<h1>{escape(title)}</h1>",
        '<p><a href="index.html">All galleries</a></p>',
        f'<p class="meta">{escape(run.dataset)} · split {escape(run.split)} · task {escape(run.task)} · '
        f"{len(queries)} of {total} queries (chosen by a hash of the query id) · top-{TOP_K} results: "
        '<span class="positive-label">green</span> = positive, <span class="negative-label">red</span> = not '
        "a positive.</p>",
        *sections,
    ]
    page = GalleryPage(run, safe_name(f"{run.experiment}__{run.run_name}") + ".html", _document(title, body),
                       len(queries), total)
    return page, warnings


def gallery_index(pages: Sequence[GalleryPage]) -> str:
    """The index page linking every gallery page."""
    rows = [
        f'<tr><td><a href="{escape(p.filename)}">{escape(p.run.experiment)}</a></td>'
        f"<td>{escape(p.run.run_name)}</td><td>{escape(p.run.dataset)}</td><td>{escape(p.run.split)}</td>"
        f"<td>{p.shown} of {p.total}</td></tr>"
        for p in pages
    ]
    body = [
        "<h1>Retrieval galleries</h1>",
        "<table><tr><th>experiment</th><th>run</th><th>dataset</th><th>split</th><th>queries</th></tr>",
        *rows,
        "</table>",
    ]
    return _document("Retrieval galleries", body)


def sample_queries(path: Path, n: int) -> tuple[list[dict[str, Any]], int, list[str]]:
    """The ``n`` (>= 1) valid queries with the smallest id hash (in that order), the number of valid queries, and
    ``line N (reason)`` for each malformed line. Streams the file: memory holds ``n`` queries."""
    bad: list[str] = []
    total = 0

    def valid() -> Iterator[tuple[str, int, dict[str, Any]]]:
        nonlocal total
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    query = _parse_query(line)
                except ValueError as err:
                    bad.append(f"line {number} ({err})")
                    continue
                total += 1
                yield hashlib.sha1(query["query_id"].encode()).hexdigest(), number, query

    chosen = heapq.nsmallest(n, valid()) if n > 0 else []
    return [query for _, _, query in chosen], total, bad


def _parse_query(line: str) -> dict[str, Any]:
    try:
        query = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"corrupt JSON: {err.msg}") from None
    if not isinstance(query, dict):
        raise ValueError("not a JSON object")
    if not isinstance(query.get("query_id"), str):
        raise ValueError("missing or non-string 'query_id'")
    text = query.get("query_text") or []
    if isinstance(text, str):
        text = [text]
    if not isinstance(text, list):
        raise ValueError("'query_text' is not a list of strings")
    query["query_text"] = [str(t) for t in text]
    results = query.get("results")
    if not isinstance(results, list):
        raise ValueError("missing 'results' list")
    for result in results[:TOP_K]:
        ok = isinstance(result, dict) and isinstance(result.get("score"), (int, float)) and "item_id" in result
        if not ok:
            raise ValueError("a result lacks 'item_id' or a numeric 'score'")
    return query


def _query_section(index: int, query: dict[str, Any], images: _Thumbnails) -> str:
    side = [f'<h2 class="query-id">{escape(query["query_id"])}</h2>']
    if query.get("query_image"):
        side.append(images.tag(str(query["query_image"]), "query image", "query-image"))
    if query["query_text"]:
        side.append('<ul class="query-text">' + "".join(f"<li>{escape(t)}</li>" for t in query["query_text"])
                    + "</ul>")
    results = []
    for rank, result in enumerate(query["results"][:TOP_K], 1):
        positive = result.get("positive") is True
        item = str(result["item_id"])
        results.append(
            f'<li class="result {"positive" if positive else "negative"}">'
            + images.tag(str(result.get("image") or ""), item)
            + f'<div class="rank">#{rank} {escape(item)}</div>'
            + f'<div class="score">{float(result["score"]):.4f}</div></li>'
        )
    return (f'<section class="query" id="query-{index}"><div class="query-side">{"".join(side)}</div>'
            f'<ol class="results">{"".join(results)}</ol></section>')


def _document(title: str, body: Sequence[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        *body,
        "</body></html>",
        "",
    ])


class _Thumbnails:
    """Image tags with thumbnail data URIs; relative image paths resolve against the run directory."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.failed: list[str] = []

    def tag(self, image: str, alt: str, css_class: str = "") -> str:
        path = Path(image)
        uri = thumbnail_uri(str(path if path.is_absolute() else self.base / path)) if image else None
        if uri is None:
            self.failed.append(image or "(no image)")
            return f'<div class="missing">image unavailable: {escape(image)}</div>'
        cls = f' class="{css_class}"' if css_class else ""
        return f'<img{cls} src="{uri}" alt="{escape(alt)}">'


@lru_cache(maxsize=2048)
def thumbnail_uri(path: str) -> str | None:
    """A ``data:image/jpeg;base64,...`` thumbnail of the image at ``path``, or None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))
            thumb = image.convert("RGB")
        thumb.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buffer = io.BytesIO()
        thumb.save(buffer, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
