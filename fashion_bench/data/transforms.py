"""Image decoding and preprocessing: PIL decoding (with JPEG draft downscaling), TargetPad, encoder transforms."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, UnidentifiedImageError

from fashion_bench._env import import_torchvision
from fashion_bench.data.schema import DataError

ImageSource = str | Path | bytes


def decode_image(source: ImageSource, *, target_size: int | None = None, where: str = "") -> Image.Image:
    """Decode an image file or bytes to RGB.

    With ``target_size`` a JPEG is decoded at a reduced scale (``Image.draft``) no smaller than twice the target,
    which is ~3x faster when evaluation outruns decoding. A missing or corrupt image raises DataError naming it.
    """
    label = where or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        if target_size is not None and image.format == "JPEG":
            image.draft("RGB", (2 * target_size, 2 * target_size))
        return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{label}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"{label}: corrupt or unreadable image ({err})") from None


class TargetPad:
    """Pad an image to a square only when its aspect ratio exceeds ``ratio`` (CLIP4Cir's "targetpad").

    Padding is centred and black; images closer to square are left as they are and later centre-cropped.
    """

    def __init__(self, ratio: float = 1.25) -> None:
        if ratio < 1.0:
            raise ValueError(f"TargetPad ratio must be >= 1, got {ratio}")
        self.ratio = ratio

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if max(w, h) / min(w, h) < self.ratio:
            return image
        side = max(w, h)
        canvas = Image.new(image.mode, (side, side))
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        return canvas

    def __repr__(self) -> str:
        return f"TargetPad(ratio={self.ratio})"


@dataclass(frozen=True)
class ImageSpec:
    """What an encoder expects of its images."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def build_image_transform(
    spec: ImageSpec, *, train: bool = False, target_pad_ratio: float | None = None, augment: bool = False
) -> Callable[[Image.Image], "object"]:
    """PIL image -> normalised tensor. ``augment`` (training only) adds a mild random resized crop."""
    T = import_torchvision().transforms
    steps: list[Callable] = []
    if target_pad_ratio is not None:
        steps.append(TargetPad(target_pad_ratio))
    if train and augment:
        steps.append(T.RandomResizedCrop(spec.size, scale=(0.8, 1.0), interpolation=T.InterpolationMode.BICUBIC))
    else:
        steps += [T.Resize(spec.size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(spec.size)]
    steps += [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    return T.Compose(steps)
