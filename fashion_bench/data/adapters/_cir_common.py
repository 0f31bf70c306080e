"""Helpers shared by the adapters of the published composed-retrieval benchmarks (FashionIQ, CIRR, Shoes,
Fashion200k): checked fields of their JSON records with errors that name the file and the record, captions as
published, and locating image files once per dataset. The files themselves are read by ``_files``."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fashion_bench.data.schema import DataError, as_id


def _value(record: Any, key: str, where: str) -> Any:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DataError(f"{where}: missing key '{key}'")
    return record[key]


def field(record: Any, key: str, where: str, expected: type | tuple[type, ...] = str) -> Any:
    """``record[key]``, checked to be present, of the expected type and not a blank string; ``where`` names file
    and record."""
    value = _value(record, key, where)
    if not isinstance(value, expected) or isinstance(value, bool):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise DataError(f"{where}: key '{key}' must be a {names}, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where}: key '{key}' is empty")
    return value


def identifier(record: Any, key: str, where: str) -> str:
    """An image name or query id: a string or a number (see :func:`~fashion_bench.data.schema.as_id`)."""
    return as_id(_value(record, key, where), where, key)


def string_list(record: dict[str, Any], key: str, where: str) -> list[str]:
    value = field(record, key, where, list)
    if not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataError(f"{where}: key '{key}' must be a non-empty list of non-empty strings, got {value!r}")
    return value


def captions(record: Any, key: str, where: str, *, required: bool) -> list[str]:
    """The caption(s) under ``key`` (one string or a list of strings), as published.

    The complete FashionIQ and CIRR files hold empty captions (``["", "has bigger image"]``): an empty caption is
    kept, adds nothing to the joined text and is counted by ``data verify``. A query that is trained on or scored
    (``required``: it has a target) must keep some text; a target-less one (for the evaluation server) may have
    none and then ranks by its reference image alone.
    """
    value = _value(record, key, where)
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise DataError(f"{where}: key '{key}' must be a string or a non-empty list of strings, got {value!r}")
    if required and not any(t.strip() for t in texts):
        raise DataError(f"{where}: key '{key}' has no text ({value!r}): a query with a target needs a non-empty caption")
    return texts


def require_known(names: Iterable[str], known: set[str] | dict[str, Any], where: str, what: str, source: Path) -> None:
    """Every name must be an image of the split (listed in ``source``)."""
    missing = [n for n in names if n not in known]
    if missing:
        raise DataError(f"{where}: {what} {missing[:3]} not in the split's image list {source}")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


class ImageIndex:
    """Image files under a folder, indexed once by file name (or by stem, for datasets whose annotations name
    images without an extension). Paths are relative to ``root``; a name found twice is an error naming both."""

    def __init__(self, root: Path, folder: Path, *, recursive: bool, by_stem: bool) -> None:
        self.root, self.folder, self.by_stem = root, folder, by_stem
        self.paths: dict[str, str] = {}
        walk = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]
        for dirpath, _, files in walk:
            for name in files:
                stem, suffix = os.path.splitext(name)
                if suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                key = stem if by_stem else name
                relative = os.path.relpath(os.path.join(dirpath, name), root)
                if key in self.paths:
                    raise DataError(
                        f"{folder}: image '{key}' found twice ({self.paths[key]} and {relative}); keep one copy"
                    )
                self.paths[key] = relative

    def common_suffix(self, default: str) -> str:
        """The most frequent file suffix of the indexed images (``default`` when there are none)."""
        suffixes = Counter(os.path.splitext(p)[1] for p in self.paths.values())
        return suffixes.most_common(1)[0][0] if suffixes else default

    def path(self, name: str, fallback: str) -> str:
        """The image's path relative to the root; ``fallback`` when the file is absent, so that the data
        module (or ``fashion-bench data verify``) reports it as missing, or skips it when asked to."""
        return self.paths.get(name, fallback)
