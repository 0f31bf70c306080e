"""Search results as a terminal table, a JSON document, or a self-contained HTML page (thumbnails as data URIs)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from fashion_bench.search.searcher import Hit, SearchResult

THUMBNAIL = 256
PROVENANCE_KEYS = ("method_name", "class_path", "experiment", "run", "seed", "checkpoint", "checkpoint_sha256",
                   "encoder", "kind", "count", "recall_at_10")


def table(result: SearchResult, width: int = 48) -> str:
    header = ("rank", "score", "item id", "identity", "category", "text", "image")
    rows = [(str(h.rank), f"{h.score:.4f}", h.item_id, h.identity or "", h.category or "", _clip(h.text or "", width),
             str(h.image)) for h in result.hits]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in [header, *rows]]
    return "\n".join([_note(result), *lines]) if _note(result) else "\n".join(lines)


def document(result: SearchResult, query: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    return {
        "query": {**query, "kind": result.kind, "encoder": result.encoder},
        "index": {key: info.get(key) for key in PROVENANCE_KEYS},
        "hits": [{**asdict(h), "image": str(h.image)} for h in result.hits],
    }


def page(result: SearchResult, query: dict[str, Any], info: dict[str, Any]) -> str:
    """One HTML file with the query, the index's provenance and a grid of result thumbnails."""
    asked = ", ".join(f"{k}: {v}" for k, v in query.items() if v not in (None, ""))
    cards = "\n".join(_card(h) for h in result.hits)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fashion-bench search: {html.escape(asked)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 1rem; }}
figure {{ margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: .5rem; }}
img {{ width: 100%; aspect-ratio: 1; object-fit: contain; background: #f4f4f4; }}
figcaption {{ font-size: .8rem; }} .meta {{ color: #555; font-size: .85rem; }}
</style></head><body>
<h1>{html.escape(asked)}</h1>
<p class="meta">{html.escape(_note(result) or f"{result.kind} query")} &middot; method {html.escape(str(info.get("method_name")))}
({html.escape(str(info.get("experiment")))}, seed {html.escape(str(info.get("seed")))}) &middot; {info.get("count")} items,
{html.escape(str(info.get("kind")))} index, recall@10 vs exact {info.get("recall_at_10")}</p>
<div class="grid">
{cards}
</div></body></html>
"""


def _card(hit: Hit) -> str:
    details = " &middot; ".join(html.escape(v) for v in (hit.identity, hit.category) if v)
    return (f'<figure><img src="{_data_uri(hit.image)}" alt="{html.escape(hit.item_id)}"><figcaption>'
            f"<b>#{hit.rank}</b> {hit.score:.4f} <code>{html.escape(hit.item_id)}</code><br>{details}<br>"
            f"{html.escape(hit.text or '')}</figcaption></figure>")


def _data_uri(path: Path) -> str:
    """A JPEG thumbnail of the image as a data URI (an empty one when the file cannot be read any more)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
    except OSError:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _note(result: SearchResult) -> str:
    if result.encoder == "gallery":
        return "image query embedded as a gallery item (image-to-image search: the method has no image query encoder)"
    return ""


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
