"""Catalogue images -> gallery embeddings with the method's own gallery encoder (as the evaluator embeds them).

Each image is decoded and transformed like an evaluation image of the data layer (``ImageLoader``), encoded by
``method.encode_images`` and then ``method.encode_gallery``; batched, under ``torch.inference_mode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fashion_bench.data.datasets import ImageLoader
from fashion_bench.methods.base import RetrievalMethod


class _Images(Dataset):
    def __init__(self, items: Sequence[tuple[str, str]], images: ImageLoader) -> None:
        self.items = items
        self.images = images

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images(*self.items[index])[0]


@torch.inference_mode()
def embed_gallery(
    method: RetrievalMethod, items: Sequence[tuple[str, str]], transform: Callable[[Any], torch.Tensor], *,
    batch_size: int = 64, num_workers: int = 0, progress: bool = True,
) -> np.ndarray:
    """float32 [N, D] L2-normalised gallery embeddings of ``items`` = (item id, absolute image path) pairs."""
    images = ImageLoader(Path("/"), transform, image_size=method.preprocessing().image_spec.size)
    loader = DataLoader(_Images(items, images), batch_size=batch_size, num_workers=num_workers)
    out = [
        gallery_embedding(method, batch.to(method.device))
        for batch in tqdm(loader, desc=f"embedding {len(items)} images", disable=not progress, unit="batch")
    ]
    dim = out[0].shape[1] if out else 0
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def gallery_embedding(method: RetrievalMethod, pixels: torch.Tensor) -> np.ndarray:
    """float32 embeddings as the evaluator ranks them (``encode_gallery`` already L2-normalises)."""
    features = method.encode_images(pixels)
    return np.ascontiguousarray(method.encode_gallery({"image_features": features}).float().cpu().numpy())
