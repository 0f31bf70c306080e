"""Image decoding and preprocessing: PIL decoding (with JPEG draft downscaling), TargetPad, encoder transforms.

An item's ``image`` is a file path, or a *reference* to pixels that are not a file of their own:

* ``<file>.h5#<dataset>/<row>``: row ``row`` of an ``N x H x W x 3`` uint8 dataset of an HDF5 file (FashionGen),
  read lazily; each process opens the file once and keeps the handle (loader workers fork, and an HDF5 handle
  must not cross a fork, so handles are keyed by process id);
* ``<image>#crop=x1,y1,x2,y2``: the pixel box ``[x1, x2) x [y1, y2)`` of an image or HDF5 row (WAB garment boxes,
  DeepFashion In-shop boxes), cropped when decoded instead of being written to disk.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PIL import Image, UnidentifiedImageError

from fashion_bench._env import import_torchvision
from fashion_bench.contracts import ImageSpec
from fashion_bench.data.schema import DataError

ImageSource = str | Path | bytes


H5_SUFFIXES = (".h5", ".hdf5")
_CROP = re.compile(r"#crop=(-?\d+),(-?\d+),(-?\d+),(-?\d+)$")
_H5_ROW = re.compile(r"#([^#]+)/(\d+)$")


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference (see the module docstring)."""

    path: str
    h5_dataset: str | None = None
    h5_row: int | None = None
    crop: tuple[int, int, int, int] | None = None

    @classmethod
    def parse(cls, source: str | Path) -> ImageRef:
        text = str(source)
        crop = None
        match = _CROP.search(text)
        if match:
            crop = tuple(int(v) for v in match.groups())
            text = text[: match.start()]
        match = _H5_ROW.search(text)
        if match and text[: match.start()].lower().endswith(H5_SUFFIXES):
            return cls(text[: match.start()], match.group(1), int(match.group(2)), crop)  # type: ignore[arg-type]
        return cls(text, crop=crop)  # type: ignore[arg-type]


def h5_image_ref(file: str | Path, dataset: str, row: int) -> str:
    return f"{file}#{dataset}/{row}"


def crop_image_ref(image: str | Path, box: tuple[int, int, int, int]) -> str:
    return f"{image}#crop={','.join(str(int(v)) for v in box)}"


_H5_FILES: dict[tuple[int, str], Any] = {}


def open_h5(path: str | Path) -> Any:
    """This process's read-only handle of an HDF5 file (opened on first use, then cached)."""
    key = (os.getpid(), str(path))
    handle = _H5_FILES.get(key)
    if handle is None:
        import h5py

        for stale in [k for k in _H5_FILES if k[0] != key[0]]:
            del _H5_FILES[stale]  # inherited from the parent across a fork: never used here
        handle = _H5_FILES[key] = h5py.File(path, "r")
    return handle


def h5_dataset(path: str | Path, name: str, where: str) -> Any:
    """A dataset of an HDF5 file; a missing file, an unreadable file or a missing key raises DataError."""
    try:
        handle = open_h5(path)
    except FileNotFoundError:
        raise DataError(f"{where}: HDF5 file not found") from None
    except OSError as err:
        raise DataError(f"{where}: not a readable HDF5 file ({err})") from None
    if name not in handle:
        raise DataError(f"{where}: HDF5 file {path} has no dataset '{name}' (found {sorted(handle)})")
    return handle[name]


def image_available(source: str | Path) -> bool:
    """Whether the file (and HDF5 row) an image reference points at exists; an unreadable HDF5 file or a
    missing HDF5 key raises DataError, since that is a broken file rather than a missing image."""
    ref = ImageRef.parse(source)
    if not Path(ref.path).exists():
        return False
    if ref.h5_dataset is None:
        return True
    return ref.h5_row < len(h5_dataset(ref.path, ref.h5_dataset, str(source)))  # type: ignore[operator]


def decode_image(source: ImageSource, *, target_size: int | None = None, where: str = "") -> Image.Image:
    """Decode an image file, bytes or image reference (see the module docstring) to RGB.

    With ``target_size`` a JPEG is decoded at a reduced scale (``Image.draft``) no smaller than twice the target,
    which is ~3x faster when evaluation outruns decoding (not for crops, whose boxes are in full-size pixels).
    A missing or corrupt image raises DataError naming it.
    """
    label = where or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if isinstance(source, bytes):
        return _decode_file(source, target_size, label)
    ref = ImageRef.parse(source)
    if ref.h5_dataset is not None:
        image = _decode_h5_row(ref, label)
    else:
        image = _decode_file(ref.path, None if ref.crop else target_size, label)
    return _crop(image, ref.crop, label) if ref.crop else image


def _decode_file(source: str | bytes, target_size: int | None, label: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        if target_size is not None and image.format == "JPEG":
            image.draft("RGB", (2 * target_size, 2 * target_size))
        return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{label}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"{label}: corrupt or unreadable image ({err})") from None


def _decode_h5_row(ref: ImageRef, label: str) -> Image.Image:
    dataset = h5_dataset(ref.path, ref.h5_dataset, label)  # type: ignore[arg-type]
    if not ref.h5_row < len(dataset):  # type: ignore[operator]
        raise DataError(f"{label}: row {ref.h5_row} is out of range ({ref.h5_dataset} has {len(dataset)} rows)")
    try:
        array = dataset[ref.h5_row]
    except OSError as err:
        raise DataError(f"{label}: corrupt or truncated HDF5 data ({err})") from None
    if array.dtype != "uint8" or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise DataError(f"{label}: expected an H x W x 3 uint8 image, found shape {array.shape} dtype {array.dtype}")
    return Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[2] == 1 else array).convert("RGB")


def _crop(image: Image.Image, box: tuple[int, int, int, int], label: str) -> Image.Image:
    """The box clipped to the image; a box with no pixels inside the image is an error."""
    w, h = image.size
    x1, y1, x2, y2 = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
    if x2 <= x1 or y2 <= y1:
        raise DataError(f"{label}: crop box {list(box)} has no pixels inside the {w} x {h} image")
    return image.crop((x1, y1, x2, y2))


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
class Degradation:
    """Low-quality images on purpose (ENCLIP's setting: small, re-compressed product photos): resize down to
    ``size`` (width, height; e.g. 60 x 80) and back up, re-encode as JPEG at ``jpeg_quality``, then a Gaussian blur
    of radius ``blur``. Applied to the decoded full-resolution image, before the encoder's own transform."""

    size: tuple[int, int] | None = None
    jpeg_quality: int | None = None
    blur: float = 0.0

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"degrade.size must be [width, height] with positive sides, got {self.size!r}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"degrade.jpeg_quality must be in 1..95, got {self.jpeg_quality!r}")
        if self.blur < 0:
            raise ValueError(f"degrade.blur must be >= 0, got {self.blur!r}")

    def __call__(self, image: Image.Image) -> Image.Image:
        from PIL import ImageFilter

        if self.size is not None:
            original = image.size
            image = image.resize(tuple(self.size), Image.BILINEAR).resize(original, Image.BICUBIC)
        if self.jpeg_quality is not None:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=self.jpeg_quality)
            image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        if self.blur:
            image = image.filter(ImageFilter.GaussianBlur(self.blur))
        return image


INTERPOLATIONS = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "nearest": "NEAREST"}
RESIZE_MODES = ("shortest", "longest", "squash")


class SquarePad:
    """Pad an image to a square, centred, with black borders (open_clip's ``resize_mode='longest'``)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if w == h:
            return image
        side = max(w, h)
        canvas = Image.new("RGB", (side, side))
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        return canvas


def build_image_transform(
    spec: ImageSpec, *, train: bool = False, target_pad_ratio: float | None = None, augment: bool = False
) -> Callable[[Image.Image], "object"]:
    """PIL image -> normalised tensor. ``augment`` (training only) adds a mild random resized crop."""
    T = import_torchvision().transforms
    if spec.interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {spec.interpolation!r}; expected one of {sorted(INTERPOLATIONS)}")
    if spec.resize_mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize_mode {spec.resize_mode!r}; expected one of {RESIZE_MODES}")
    mode = getattr(T.InterpolationMode, INTERPOLATIONS[spec.interpolation])
    steps: list[Callable] = []
    if target_pad_ratio is not None:
        steps.append(TargetPad(target_pad_ratio))
    if train and augment:
        steps.append(T.RandomResizedCrop(spec.size, scale=(0.8, 1.0), interpolation=mode))
    elif spec.resize_mode == "squash":
        steps.append(T.Resize((spec.size, spec.size), interpolation=mode))
    elif spec.resize_mode == "longest":
        steps += [SquarePad(), T.Resize(spec.size, interpolation=mode)]
    else:
        steps += [T.Resize(spec.size, interpolation=mode), T.CenterCrop(spec.size)]
    steps += [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    return T.Compose(steps)
