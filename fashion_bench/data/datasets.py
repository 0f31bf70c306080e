"""Torch datasets over canonical splits: training pairs / triplets and evaluation images / queries.

Every dataset reads its rows from an Arrow table (Hugging Face ``datasets``, memory-mapped, see ``store.py``)
so that loader workers share the manifest instead of copying Python lists. Images are decoded with PIL in the
workers; texts are tokenised there too.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from fashion_bench.data.schema import DataError
from fashion_bench.data.transforms import decode_image

Tokenize = Callable[[Sequence[str]], torch.Tensor]
Transform = Callable[[Any], torch.Tensor]


def join_captions(captions: Sequence[str], rng: random.Random | None = None) -> str:
    """Join several captions of one query into one text ("cap1 and cap2").

    Training passes an ``rng`` (random order, as CLIP4Cir does for FashionIQ); evaluation keeps the fixed order.
    """
    parts = [c.strip().rstrip(".") for c in captions if c and c.strip()]
    if rng is not None and len(parts) > 1:
        parts = rng.sample(parts, len(parts))
    return " and ".join(parts)


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    return random.Random(f"{seed}/{epoch}/{index}")


class ImageLoader:
    """Decodes item images; optionally substitutes a blank image for missing / corrupt ones and counts them."""

    def __init__(
        self, root: Path, transform: Transform, *, image_size: int, skip_missing: bool = False,
        degrade: Callable[[Any], Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.transform = transform
        self.image_size = image_size
        self.skip_missing = skip_missing
        self.degrade = degrade  # applied to the full-resolution decode (no JPEG draft shortcut then)

    def __call__(self, item_id: str, image: str) -> tuple[torch.Tensor, bool]:
        path = Path(image)
        if not path.is_absolute():
            path = self.root / path
        try:
            target = None if self.degrade is not None else self.image_size
            pil = decode_image(path, target_size=target, where=f"item '{item_id}' image {path}")
        except DataError:
            if not self.skip_missing:
                raise
            from PIL import Image

            return self.transform(Image.new("RGB", (self.image_size, self.image_size))), False
        return self.transform(self.degrade(pil) if self.degrade is not None else pil), True


class _KeyedDataset(Dataset):
    """Accepts plain indices (evaluation) and (index, epoch) keys from the training samplers."""

    def __init__(self, rows, seed: int = 0) -> None:
        self.rows = rows
        self.seed = seed

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def split_key(key: int | tuple[int, int]) -> tuple[int, int]:
        return (key[0], key[1]) if isinstance(key, (tuple, list)) else (int(key), 0)


@dataclass
class SampleLabels:
    """Vocabularies that turn an item's identity, category and attributes into integer labels of a sample."""

    identities: list[str]
    categories: list[str] = field(default_factory=list)
    attributes: dict[str, list[str]] = field(default_factory=dict)  # name -> values

    def __post_init__(self) -> None:
        self._identity = {v: n for n, v in enumerate(self.identities)}
        self._category = {v: n for n, v in enumerate(self.categories)}
        self._attribute = {name: {v: n for n, v in enumerate(values)} for name, values in self.attributes.items()}

    def identity(self, value: str) -> int:
        return self._identity[value]

    def category(self, value: str) -> int:
        return self._category.get(value, -1)

    def attribute_labels(self, encoded: str) -> torch.Tensor:
        """[num attribute names] value index per attribute, -1 where the item lacks it or has an unseen value."""
        values = json.loads(encoded) if encoded else {}
        return torch.tensor([self._attribute[name].get(values.get(name), -1) for name in self.attributes], dtype=torch.long)


class PairDataset(_KeyedDataset):
    """Training images with one of their texts and their labels (t2i and id training).

    A sample holds ``text`` (tokens), ``label`` (identity), ``category`` and, when the split has attributes,
    ``attributes`` (see :class:`SampleLabels`), ``index`` and ``image_ok``, plus ``image`` unless the pixels are
    left out (no image loader), ``views`` [V-1, C, H, W] with ``views > 1`` (other images of the same identity,
    else the same image again) and the method's extra ``fields`` (name -> function of the row and the text).
    """

    def __init__(
        self,
        rows,
        images: ImageLoader | None,
        tokenize: Tokenize,
        labels: SampleLabels,
        seed: int = 0,
        views: int = 1,
        view_candidates: Sequence[Sequence[int]] | None = None,
        fields: Mapping[str, Callable[[Mapping[str, Any], str], Any]] | None = None,
    ):
        super().__init__(rows, seed)
        self.images, self.tokenize, self.labels = images, tokenize, labels
        self.views, self.view_candidates, self.fields = views, view_candidates, dict(fields or {})

    def __getitem__(self, key):
        index, epoch = self.split_key(key)
        row = self.rows[index]
        rng = sample_rng(self.seed, epoch, index)
        text = rng.choice(row["text"]) if row["text"] else ""
        sample = {
            "text": self.tokenize([text])[0],
            "label": self.labels.identity(row["identity"]),
            "category": self.labels.category(row["category"]),
            "index": index,
            "image_ok": True,
        }
        if self.labels.attributes:
            sample["attributes"] = self.labels.attribute_labels(row["attributes"])
        if self.images is not None:
            sample["image"], sample["image_ok"] = self.images(row["item_id"], row["image"])
            if self.views > 1:
                sample["views"], views_ok = self._views(index, rng)
                sample["image_ok"] = sample["image_ok"] and views_ok
        for name, compute in self.fields.items():
            sample[name] = compute(row, text)
        return sample

    def _views(self, index: int, rng: random.Random) -> tuple[torch.Tensor, bool]:
        candidates = self.view_candidates[index] if self.view_candidates is not None else []
        images, ok = [], True
        for _ in range(self.views - 1):
            row = self.rows[rng.choice(candidates)] if candidates else self.rows[index]
            image, image_ok = self.images(row["item_id"], row["image"])
            images.append(image)
            ok = ok and image_ok
        return torch.stack(images), ok


class TripletDataset(_KeyedDataset):
    """Composed training triplets: reference image + joined captions -> target image."""

    def __init__(self, rows, items: dict[str, dict], images: ImageLoader, tokenize: Tokenize, seed: int = 0):
        super().__init__(rows, seed)
        self.items, self.images, self.tokenize = items, images, tokenize

    def __getitem__(self, key):
        index, epoch = self.split_key(key)
        row = self.rows[index]
        rng = sample_rng(self.seed, epoch, index)
        reference, ok_ref = self.images(row["image"], self.items[row["image"]]["image"])
        target_id = rng.choice(row["positives"])
        target, ok_tgt = self.images(target_id, self.items[target_id]["image"])
        return {
            "reference": reference,
            "text": self.tokenize([join_captions(row["text"], rng)])[0],
            "target": target,
            "target_key": zlib.crc32(target_id.encode()),
            "index": index,
            "image_ok": ok_ref and ok_tgt,
        }


class EvalImageDataset(_KeyedDataset):
    """Images of the given item rows, in order (gallery, or query references missing from the gallery)."""

    def __init__(self, rows, images: ImageLoader):
        super().__init__(rows)
        self.images = images

    def __getitem__(self, key):
        index, _ = self.split_key(key)
        row = self.rows[index]
        image, ok = self.images(row["item_id"], row["image"])
        return {"image": image, "index": index, "image_ok": ok}


class QueryTextDataset(_KeyedDataset):
    """Query texts (captions joined in fixed order), tokenised; queries without text get an empty string."""

    def __init__(self, rows, tokenize: Tokenize):
        super().__init__(rows)
        self.tokenize = tokenize

    def __getitem__(self, key):
        index, _ = self.split_key(key)
        return {"text": self.tokenize([join_captions(self.rows[index]["text"])])[0], "index": index}
