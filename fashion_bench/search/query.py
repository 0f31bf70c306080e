"""A search query -> one embedding, with the method's own query encoder (as the evaluator builds query batches).

The batch is the evaluator's layout (docs/contract.md): ``text`` tokens (``method.preprocessing().tokenize``)
and / or ``image_features`` (``method.encode_images`` of the reference image), plus ``category`` (list of str).
A composed query needs a method that answers ``image+text`` queries. An image-only query on a method without an
``image`` query kind is embedded as a gallery item (image-to-image search), and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from fashion_bench.contracts import QUERY_KINDS, query_kind
from fashion_bench.methods.base import RetrievalMethod

GALLERY_ENCODER = "gallery"
QUERY_ENCODER = "query"


class SearchError(ValueError):
    """A user's mistake in a search (empty query, unsupported kind, unknown item id, bad image)."""


@dataclass(frozen=True)
class EncodedQuery:
    vector: np.ndarray  # float32 [1, D]
    kind: str  # text | image | image+text
    encoder: str  # "query" (method.encode_query) or "gallery" (image-to-image through method.encode_gallery)


def method_query_kinds(method: RetrievalMethod) -> tuple[str, ...]:
    """The query kinds the method's query encoder embeds, over every task it supports."""
    supported = {kind for kinds in method.supports.values() for kind in kinds}
    return tuple(kind for kind in QUERY_KINDS if kind in supported)


def answerable_kinds(method: RetrievalMethod) -> tuple[str, ...]:
    """What a search can answer: the method's query kinds, and always ``image`` (through the gallery encoder)."""
    own = method_query_kinds(method)
    return tuple(kind for kind in QUERY_KINDS if kind in own or kind == "image")


def image_features(method: RetrievalMethod, pixels: torch.Tensor) -> torch.Tensor:
    """``method.encode_images`` of one transformed image [C, H, W] -> [1, F]."""
    with torch.inference_mode():
        return method.encode_images(pixels[None].to(method.device))


def encode_query(
    method: RetrievalMethod, *, text: str | None, features: torch.Tensor | None, category: str = "",
    tokenize: Callable[[Any], torch.Tensor] | None = None,
) -> EncodedQuery:
    """Embed a text, an image (its ``features``) or both. Raises SearchError for an empty or unsupported query."""
    text = text.strip() if text else None
    if not text and features is None:
        raise SearchError("empty query: give a text, an image, or both")
    kind = query_kind(bool(text), features is not None)
    own = method_query_kinds(method)
    with torch.inference_mode():
        if kind == "image" and kind not in own:
            vector = method.encode_gallery({"image_features": features})
            return EncodedQuery(_array(vector), kind, GALLERY_ENCODER)
        if kind not in own:
            raise SearchError(
                f"method '{method.method_name}' ({type(method).__name__}) does not answer {kind} queries; it answers "
                f"{list(answerable_kinds(method))}"
            )
        batch: dict[str, Any] = {"category": [category]}
        if text:
            batch["text"] = (tokenize or method.preprocessing().tokenize)([text]).to(method.device)
        if features is not None:
            batch["image_features"] = features
        return EncodedQuery(_array(method.encode_query(batch)), kind, QUERY_ENCODER)


def _array(vector: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(vector.float().cpu().numpy().reshape(1, -1))
