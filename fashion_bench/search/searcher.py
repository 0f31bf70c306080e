"""The Python search API (used by ``fashion-bench search`` and ``serve``): an index directory plus the method that
built it, answering text, image and composed queries with the method's own query encoder.

>>> searcher = Searcher.load("indexes/shop")
>>> hits = searcher.search(text="red striped dress", k=10)
>>> refined = searcher.search(reference=hits[0].item_id, text="in blue")   # composed refinement
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fashion_bench.data.schema import DataError
from fashion_bench.data.transforms import decode_image
from fashion_bench.search.index import restore_depth, search
from fashion_bench.search.model import LoadedMethod, image_transform
from fashion_bench.search.query import EncodedQuery, SearchError, answerable_kinds, encode_query, image_features
from fashion_bench.search.store import IndexDir, IndexedItem, read_index_dir

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Hit", "SearchError", "SearchResult", "Searcher"]

MAX_K = 1000


@dataclass(frozen=True)
class Hit:
    rank: int
    item_id: str
    score: float
    image: Path
    identity: str | None
    category: str | None
    text: str | None


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    kind: str  # text | image | image+text
    encoder: str  # "query", or "gallery" for an image-only query embedded as a gallery item (image-to-image)


class Searcher:
    def __init__(self, contents: IndexDir, loaded: LoadedMethod, directory: Path) -> None:
        self._contents = contents
        self._loaded = loaded
        self._transform = image_transform(loaded)
        self._rows = {item.item_id: row for row, item in enumerate(contents.items)}
        self._categories = np.array([item.category or "" for item in contents.items])
        self.directory = directory
        self.info: dict[str, Any] = contents.info
        self.query_kinds: tuple[str, ...] = answerable_kinds(loaded.method)
        restore_depth(contents.index, self.info["kind"], self.info.get("params", {}))

    @classmethod
    def load(cls, index_dir: str | Path, device: str = "cpu") -> Searcher:
        """Read an index directory and reload its method (from the recorded checkpoint) on ``device``."""
        from fashion_bench.search.build import reload_method

        contents = read_index_dir(index_dir)
        return cls(contents, reload_method(contents.info, None, device), Path(index_dir))

    def __len__(self) -> int:
        return len(self._contents.items)

    @property
    def item_ids(self) -> list[str]:
        """The indexed item ids, in index order (``serve`` picks random ones for "pick an image")."""
        return [item.item_id for item in self._contents.items]

    @property
    def categories(self) -> list[str]:
        return sorted({c for c in self._categories.tolist() if c})

    def search(
        self, *, text: str | None = None, image: Image.Image | None = None, reference: str | None = None,
        k: int = 20, category: str | None = None,
    ) -> list[Hit]:
        """The top ``k`` items for a text, an image (uploaded, or ``reference`` = an indexed item id), or both."""
        return self.run(text=text, image=image, reference=reference, k=k, category=category).hits

    def run(
        self, *, text: str | None = None, image: Image.Image | None = None, reference: str | None = None,
        k: int = 20, category: str | None = None,
    ) -> SearchResult:
        """:meth:`search` with what kind of query it was and which encoder embedded it."""
        if image is not None and reference is not None:
            raise SearchError("give an image or a reference item, not both")
        if not 1 <= k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}, got {k}")
        allowed = self._allowed(category)
        features = self._features(image, reference)
        query = encode_query(self._loaded.method, text=text, features=features, category=category or "")
        return SearchResult(self._hits(query, k, allowed), query.kind, query.encoder)

    def item(self, item_id: str) -> Hit:
        row = self._row(item_id)
        return self._hit(row, rank=0, score=float("nan"))

    def image_path(self, item_id: str) -> Path:
        return Path(self._contents.items[self._row(item_id)].image)

    # --- internals ----------------------------------------------------------------------------------------------
    def _row(self, item_id: str) -> int:
        row = self._rows.get(item_id)
        if row is None:
            raise SearchError(f"item '{item_id}' is not in the index {self.directory}")
        return row

    def _allowed(self, category: str | None) -> np.ndarray | None:
        if not category:
            return None
        rows = np.flatnonzero(self._categories == category)
        if rows.size == 0:
            raise SearchError(f"no indexed item has category '{category}'; categories: {self.categories}")
        return rows

    def _features(self, image: Image.Image | None, reference: str | None) -> torch.Tensor | None:
        if reference is not None:
            path = self.image_path(reference)
            try:
                image = decode_image(path, where=f"indexed item '{reference}' image {path}")
            except DataError as err:
                raise SearchError(str(err)) from err
        if image is None:
            return None
        try:
            pixels = self._transform(image.convert("RGB"))
        except (OSError, ValueError) as err:
            raise SearchError(f"cannot read the query image: {err}") from err
        return image_features(self._loaded.method, pixels)

    def _hits(self, query: EncodedQuery, k: int, allowed: np.ndarray | None) -> list[Hit]:
        scores, rows = search(self._contents.index, query.vector, min(k, len(self)), allowed)
        return [self._hit(int(row), rank, float(score))
                for rank, (score, row) in enumerate(zip(scores[0], rows[0]), 1) if row >= 0]

    def _hit(self, row: int, rank: int, score: float) -> Hit:
        item: IndexedItem = self._contents.items[row]
        return Hit(rank, item.item_id, score, Path(item.image), item.identity, item.category, item.text)
