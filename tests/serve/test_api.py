"""The JSON API with a real HTTP client (httpx) against a real uvicorn server on localhost."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def client(server: str):
    with httpx.Client(base_url=server, timeout=30) as http:
        yield http


def png_bytes(size: tuple[int, int] = (48, 64), colour: str = "red", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt)
    return buffer.getvalue()


def first_hit(client: httpx.Client, text: str = "red striped dress") -> dict:
    response = client.post("/api/search", json={"text": text, "k": 5})
    assert response.status_code == 200, response.text
    return response.json()["hits"][0]


def test_info_describes_the_index(client, searcher):
    info = client.get("/api/info").json()
    assert info["count"] == len(searcher) > 0
    assert info["query_kinds"] == ["text", "image", "image+text"]
    assert info["index"]["method_name"] == "clip" and info["index"]["kind"] == "flat"
    assert info["max_upload_bytes"] == 1024 * 1024 and info["categories"] == searcher.categories != []


def test_text_search_json_and_form_agree(client):
    by_json = client.post("/api/search", json={"text": "red striped dress", "k": 7}).json()
    by_form = client.post("/api/search", data={"text": "red striped dress", "k": "7"}).json()
    assert by_json["query"]["kind"] == "text" and len(by_json["hits"]) == 7
    assert [h["item_id"] for h in by_json["hits"]] == [h["item_id"] for h in by_form["hits"]]
    scores = [h["score"] for h in by_json["hits"]]
    assert scores == sorted(scores, reverse=True) and [h["rank"] for h in by_json["hits"]] == list(range(1, 8))
    hit = by_json["hits"][0]
    assert hit["image_url"].startswith("/images/") and "image" not in hit  # no server file path leaves the server


def test_image_upload_and_composed_refinement(client):
    uploaded = client.post("/api/search", files={"image": ("q.png", png_bytes(), "image/png")}, data={"k": "3"})
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["query"]["kind"] == "image" and len(uploaded.json()["hits"]) == 3
    reference = first_hit(client)["item_id"]
    refined = client.post("/api/search", data={"reference": reference, "text": "in blue", "k": "4"})
    assert refined.status_code == 200, refined.text
    query = refined.json()["query"]
    assert query == {"kind": "image+text", "text": "in blue", "reference": reference, "image": False, "k": 4,
                     "category": None}
    by_reference = client.post("/api/search", json={"reference": reference, "k": 1}).json()
    assert by_reference["query"]["kind"] == "image" and by_reference["hits"][0]["item_id"] == reference


def test_category_filter(client, searcher):
    category = searcher.categories[0]
    hits = client.post("/api/search", json={"text": "a dress", "k": 10, "category": category}).json()["hits"]
    assert hits and {h["category"] for h in hits} == {category}


def test_items_images_and_random_picks(client, searcher):
    hit = first_hit(client)
    item = client.get(f"/api/items/{hit['item_id']}").json()
    assert item["item_id"] == hit["item_id"] and item["score"] is None
    image = client.get(hit["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == searcher.image_path(hit["item_id"]).read_bytes()
    picks = client.get("/api/random", params={"n": 5}).json()["items"]
    assert len(picks) == 5 and len({p["item_id"] for p in picks}) == 5


def test_the_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="search-form"' in page.text and 'id="error"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", [
    "/images/../../../etc/passwd", "/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/images/..%2F..%2Fetc%2Fpasswd",
    "/images//etc/passwd", "/images/images%2Fp000000-shop.jpg", "/api/items/..%2Fitems.jsonl",
])
def test_no_path_outside_the_index_is_served(client, path):
    response = client.get(path)
    assert response.status_code == 404, (path, response.text)
    assert "root:" not in response.text


@pytest.mark.parametrize(("request_kwargs", "status", "words"), [
    ({"json": {}}, 400, "empty query"),
    ({"json": {"text": "   "}}, 400, "empty query"),
    ({"data": {"k": "5"}}, 400, "empty query"),
    ({"json": {"reference": "no-such-item"}}, 404, "unknown item 'no-such-item'"),
    ({"json": {"text": "dress", "k": 0}}, 422, "'k' must be a whole number"),
    ({"json": {"text": "dress", "k": "many"}}, 422, "'k' must be a whole number"),
    ({"json": {"text": ["a", "b"]}}, 422, "'text' must be a string"),
    ({"json": {"text": "x" * 5000}}, 422, "at most 1000"),
    ({"json": ["text"]}, 400, "must be an object"),
    ({"json": {"txt": "dress"}}, 422, "unknown field(s) 'txt'; a search takes text, reference, k, category, image"),
    ({"json": {"image": "/etc/passwd"}}, 422, "'image' must be a file"),
    ({"data": {"image": "p000000-shop.jpg"}}, 422, "'image' must be a file"),
    ({"files": {"file": ("q.png", b"x", "image/png")}}, 422, "unknown field(s) 'file'"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": b"text=dress", "headers": {"content-type": "text/plain"}}, 415, "application/json or multipart"),
    ({"json": {"text": "dress", "category": "spacesuits"}}, 400, "no indexed item has category 'spacesuits'"),
])
def test_bad_searches_get_a_clear_4xx(client, request_kwargs, status, words):
    response = client.post("/api/search", **request_kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_bad_uploads_get_a_clear_4xx(client):
    def upload(name: str, data: bytes, **fields: str) -> httpx.Response:
        return client.post("/api/search", files={"image": (name, data, "image/png")}, data=fields)

    not_image = upload("shoe.png", b"%PDF-1.4 this is not a picture")
    assert not_image.status_code == 415 and "'shoe.png' is not an image" in not_image.json()["detail"]
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    assert upload("anim.png", gif.getvalue()).status_code == 415  # decoded as GIF whatever the name says
    truncated = upload("cut.png", png_bytes((300, 300), "blue")[:200])
    assert truncated.status_code == 415 and "cannot be decoded" in truncated.json()["detail"]
    too_big = upload("huge.png", b"\x89PNG" + b"0" * (2 * 1024 * 1024))
    assert too_big.status_code == 413 and "limited to 1,048,576 bytes" in too_big.json()["detail"]
    both = upload("q.webp", png_bytes(fmt="WEBP"), reference=first_hit(client)["item_id"])
    assert both.status_code == 400 and "not both" in both.json()["detail"]


def test_a_chunked_body_over_the_limit_is_cut_off(client):
    def chunks():  # a well-formed start of a multipart upload, then 2.5 MB without a Content-Length
        yield b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        yield b"Content-Type: image/png\r\n\r\n"
        for _ in range(40):
            yield b"0" * 65536

    response = client.post("/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413


def test_unsupported_query_kind_names_the_supported_ones(searcher):
    from fastapi.testclient import TestClient

    from fashion_bench.serve.app import create_app

    class TextOnly:  # the app asks the searcher which kinds it answers, and refuses the others before searching
        def __getattr__(self, name):
            return getattr(searcher, name)

        def __len__(self) -> int:
            return len(searcher)

        query_kinds = ("text",)

    response = TestClient(create_app(TextOnly())).post("/api/search", json={"reference": "anything"})
    assert response.status_code == 400
    assert response.json()["detail"] == "this index's method does not answer image queries; supported: text"


def test_an_unexpected_error_is_a_500_without_traceback(searcher):
    from fastapi.testclient import TestClient

    from fashion_bench.serve.app import create_app

    class Broken:
        def __getattr__(self, name):
            return getattr(searcher, name)

        def __len__(self) -> int:
            return len(searcher)

        def search(self, **query):
            raise RuntimeError("secret internals at /home/someone")

    response = TestClient(create_app(Broken()), raise_server_exceptions=False).post("/api/search", json={"text": "a"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error (RuntimeError); see the server log"}
