"""The web app over one search index: a JSON API and one static page.

Only indexed images are served, looked up by item id: a client never names a file, and hits carry image URLs,
not file paths (``/api/info`` does show the index's provenance: run, checkpoint and catalogue). Every client
mistake gets a 4xx JSON ``{"detail": "..."}`` that says what to change; anything else gets a 500 whose body holds
no traceback (the traceback goes to the server log).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fashion_bench.search.searcher import Hit, Searcher, SearchError
from fashion_bench.serve.uploads import FORM_OVERHEAD, BodySizeLimit, decode_image

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_K = 100
MAX_TEXT_CHARS = 1000
SEARCH_FIELDS = ("text", "reference", "k", "category", "image")
log = logging.getLogger("fashion_bench.serve")


@dataclass
class SearchRequest:
    text: str | None
    reference: str | None
    image: Image.Image | None
    k: int
    category: str | None

    @property
    def kind(self) -> str | None:
        """The query kind: an uploaded image or a reference item is the image side, text the text side."""
        has_image = self.image is not None or self.reference is not None
        if has_image and self.text:
            return "image+text"
        return "image" if has_image else ("text" if self.text else None)


def hit_json(hit: Hit) -> dict[str, Any]:
    """A hit as the API returns it; an item looked up by id (rank 0) has no score."""
    return {"rank": hit.rank, "item_id": hit.item_id, "score": round(float(hit.score), 6) if hit.rank else None,
            "image_url": f"/images/{quote(hit.item_id, safe='')}", "identity": hit.identity,
            "category": hit.category, "text": hit.text}


def create_app(
    searcher: Searcher, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, allowed_hosts: Collection[str] | None = None,
) -> FastAPI:
    """The app serving ``searcher``; uploads (and so request bodies) are limited to ``max_upload_bytes``.
    ``allowed_hosts``: the host names requests may address (the Host header), None for any: a server on
    localhost accepts only local names, so that a web page elsewhere cannot reach it by DNS rebinding."""
    app = FastAPI(title="fashion-bench search", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.add_middleware(BodySizeLimit, max_bytes=max_upload_bytes + FORM_OVERHEAD, upload_limit=max_upload_bytes)
    _add_error_handlers(app)
    item_ids = searcher.item_ids
    lock = threading.Lock()  # one query at a time: encoders need not be re-entrant, and torch uses every core anyway

    def run_search(query: SearchRequest) -> list[Hit]:
        with lock:
            return searcher.search(text=query.text, image=query.image, reference=query.reference, k=query.k,
                                   category=query.category)

    def lookup(item_id: str) -> Hit:
        try:
            return searcher.item(item_id)
        except SearchError:
            raise HTTPException(404, f"unknown item '{item_id}': it is not in this index") from None

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {"index": searcher.info, "count": len(searcher), "query_kinds": list(searcher.query_kinds),
                "categories": searcher.categories, "max_upload_bytes": max_upload_bytes, "max_k": MAX_K}

    @app.post("/api/search")
    async def search(request: Request) -> dict[str, Any]:
        query = await parse_search_request(request, max_upload_bytes)
        if query.kind is None:
            raise HTTPException(400, "empty query: give a text, an image or a reference item id")
        if query.kind not in searcher.query_kinds:
            raise HTTPException(400, f"this index's method does not answer {query.kind} queries; "
                                     f"supported: {', '.join(searcher.query_kinds)}")
        if query.reference is not None:
            lookup(query.reference)
        started = time.perf_counter()
        try:
            hits = await run_in_threadpool(run_search, query)
        except SearchError as err:
            raise HTTPException(400, str(err)) from None
        return {"query": {"kind": query.kind, "text": query.text, "reference": query.reference,
                          "image": query.image is not None, "k": query.k, "category": query.category},
                "took_ms": round(1000 * (time.perf_counter() - started), 2),
                "hits": [hit_json(hit) for hit in hits]}

    @app.get("/api/items/{item_id:path}")
    def item(item_id: str) -> dict[str, Any]:
        return hit_json(lookup(item_id))

    @app.get("/api/random")
    def random_items(n: int = 12) -> dict[str, Any]:
        picked = random.sample(item_ids, min(max(n, 0), len(item_ids), MAX_K))
        return {"items": [hit_json(searcher.item(item_id)) for item_id in picked]}

    @app.get("/images/{item_id:path}")
    def image(item_id: str) -> FileResponse:
        try:
            path = searcher.image_path(item_id)
        except SearchError:
            raise HTTPException(404, f"unknown item '{item_id}': only indexed images are served") from None
        if not path.is_file():
            raise HTTPException(404, f"the image file of item '{item_id}' is missing on the server")
        return FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    _add_page(app)
    _add_host_check_and_headers(app, allowed_hosts)
    return app


def _add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _add_host_check_and_headers(app: FastAPI, allowed_hosts: Collection[str] | None) -> None:
    @app.middleware("http")
    async def host_check_and_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        if allowed_hosts is not None and request.url.hostname not in allowed_hosts:
            return JSONResponse({"detail": f"host '{request.url.hostname}' is not served here; use "
                                           f"{' or '.join(sorted(allowed_hosts))}"}, status_code=400)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' blob:; object-src 'none'"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


async def parse_search_request(request: Request, max_upload_bytes: int) -> SearchRequest:
    """A search from a JSON body (text, reference, k, category) or a multipart form (the same fields + ``image``)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    image = None
    if content_type == "application/json":
        try:
            fields = await request.json()
        except ValueError:
            raise HTTPException(400, "the request body is not valid JSON") from None
        if not isinstance(fields, dict):
            raise HTTPException(400, "the JSON body must be an object: {\"text\": ..., \"reference\": ..., \"k\": ...}")
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields = dict((await request.form(max_files=1, max_fields=10)).items())
        upload = fields.get("image")
        if isinstance(upload, UploadFile):
            del fields["image"]
            if upload.filename:  # a form's empty file input sends a part without a file name
                image = decode_image(await upload.read(max_upload_bytes + 1), upload.filename, max_upload_bytes)
    else:
        raise HTTPException(415, "send the search as application/json or multipart/form-data "
                                 f"(got '{content_type or 'no content type'}')")
    unknown = sorted(set(fields) - set(SEARCH_FIELDS))
    if unknown:
        raise HTTPException(422, f"unknown field(s) {', '.join(map(repr, unknown))}; a search takes "
                                 f"{', '.join(SEARCH_FIELDS)} (image: a file in a multipart/form-data upload)")
    if "image" in fields:  # a JSON value or a plain form field, not a file
        raise HTTPException(422, "'image' must be a file, uploaded as multipart/form-data")
    return SearchRequest(text=_text_field(fields, "text"), reference=_text_field(fields, "reference"), image=image,
                         k=_k_field(fields.get("k")), category=_text_field(fields, "category"))


def _text_field(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise HTTPException(422, f"'{name}' must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise HTTPException(422, f"'{name}' is {len(value)} characters long; at most {MAX_TEXT_CHARS} are accepted")
    return value.strip() or None


def _k_field(value: Any) -> int:
    if value is None or value == "":
        return 20
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise HTTPException(422, f"'k' must be a whole number from 1 to {MAX_K}, got {value!r}") from None
    if isinstance(value, bool) or not 1 <= k <= MAX_K or (isinstance(value, float) and k != value):
        raise HTTPException(422, f"'k' must be a whole number from 1 to {MAX_K}, got {value!r}")
    return k


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in err.errors())
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("error while serving %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(err).__name__}); see the server log"}, status_code=500)
