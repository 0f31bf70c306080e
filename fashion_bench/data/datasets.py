"""Torch datasets over canonical splits: training pairs / triplets and evaluation images / queries.

Every dataset reads its rows from an Arrow table (Hugging Face ``datasets``, memory-mapped, see ``store.py``)
so that loader workers share the manifest instead of copying Python lists. Images are decoded with PIL in the
workers; texts are tokenised there too.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

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

    def __init__(self, root: Path, transform: Transform, *, image_size: int, skip_missing: bool = False) -> None:
        self.root = Path(root)
        self.transform = transform
        self.image_size = image_size
        self.skip_missing = skip_missing

    def __call__(self, item_id: str, image: str) -> tuple[torch.Tensor, bool]:
        path = Path(image)
        if not path.is_absolute():
            path = self.root / path
        try:
            pil = decode_image(path, target_size=self.image_size, where=f"item '{item_id}' image {path}")
        except DataError:
            if not self.skip_missing:
                raise
            from PIL import Image

            return self.transform(Image.new("RGB", (self.image_size, self.image_size))), False
        return self.transform(pil), True


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


class PairDataset(_KeyedDataset):
    """Training images with one of their texts and an identity label (t2i and id training); without an image
    loader, the pixels are left out."""

    def __init__(self, rows, images: ImageLoader | None, tokenize: Tokenize, identity_labels: dict[str, int], seed: int = 0):
        super().__init__(rows, seed)
        self.images, self.tokenize, self.identity_labels = images, tokenize, identity_labels

    def __getitem__(self, key):
        index, epoch = self.split_key(key)
        row = self.rows[index]
        rng = sample_rng(self.seed, epoch, index)
        text = rng.choice(row["text"]) if row["text"] else ""
        sample = {"text": self.tokenize([text])[0], "label": self.identity_labels[row["identity"]], "index": index, "image_ok": True}
        if self.images is not None:
            sample["image"], sample["image_ok"] = self.images(row["item_id"], row["image"])
        return sample


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
