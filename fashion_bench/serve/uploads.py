"""What the server accepts from a client: request bodies bounded in size, images that really decode as JPEG, PNG
or WebP (checked by decoding with PIL, never by a file name or a declared content type)."""

from __future__ import annotations

import io
import json
import warnings

from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
MAX_PIXELS = 40_000_000  # a 2 kB PNG can claim 100k x 100k pixels: refuse before decoding it
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the text fields beside the image


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request too large: uploads are limited to {limit:,} bytes")


class BodySizeLimit:
    """ASGI middleware: refuse a body over ``max_bytes`` from its Content-Length before reading it, and stop
    reading a body sent without one (chunked) as soon as it passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_limit: int) -> None:
        self.app, self.max_bytes, self.upload_limit = app, max_bytes, upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, BodyTooLarge(self.upload_limit).detail)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge(self.upload_limit)
            return message

        await self.app(scope, bounded_receive, send)


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def decode_image(data: bytes, name: str, max_bytes: int) -> Image.Image:
    """An uploaded file -> an RGB image, or a 413 / 415 naming the file and what is wrong with it."""
    if len(data) > max_bytes:
        raise HTTPException(413, f"image '{name}' is {len(data):,} bytes; uploads are limited to {max_bytes:,} bytes")
    if not data:
        raise HTTPException(400, f"image '{name}' is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise HTTPException(415, f"image '{name}' is {image.format or 'of an unknown format'}; "
                                         f"accepted: {', '.join(ACCEPTED_FORMATS)}")
            if image.width * image.height > MAX_PIXELS:
                raise HTTPException(413, f"image '{name}' is {image.width}x{image.height} pixels; "
                                         f"at most {MAX_PIXELS:,} pixels are accepted")
            image.load()
    except HTTPException:
        raise
    except UnidentifiedImageError:
        raise HTTPException(415, f"image '{name}' is not an image; accepted: {', '.join(ACCEPTED_FORMATS)}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise HTTPException(413, f"image '{name}' is too large to decode ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data behind a valid header
        raise HTTPException(415, f"image '{name}' cannot be decoded ({err})") from None
    return image.convert("RGB")
