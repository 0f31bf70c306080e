"""Helpers shared by the adapters of the published composed-retrieval benchmarks (FashionIQ, CIRR, Shoes,
Fashion200k): reading their JSON / text annotation files with errors that name the file and the record, and
locating image files once per dataset."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fashion_bench.data.schema import DataError, SplitNotFound


def read_json(path: Path, expected: type, *, split: str) -> Any:
    """Parse a JSON annotation file holding a ``list`` or a ``dict``.

    An absent file raises :class:`SplitNotFound` (the split is not on disk); a truncated or malformed one a
    :class:`DataError` with line and column.
    """
    if not path.is_file():
        raise SplitNotFound(f"{path}: annotation file of split '{split}' not found")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed or truncated JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    if not isinstance(data, expected):
        raise DataError(f"{path}: expected a JSON {expected.__name__}, got {type(data).__name__}")
    return data


def read_lines(path: Path, *, split: str) -> list[tuple[int, str]]:
    """(line number, stripped line) for the non-empty lines of a text file."""
    if not path.is_file():
        raise SplitNotFound(f"{path}: file of split '{split}' not found")
    with open(path, encoding="utf-8") as fh:
        return [(n, line.strip()) for n, line in enumerate(fh, start=1) if line.strip()]


def field(record: Any, key: str, where: str, expected: type | tuple[type, ...] = str) -> Any:
    """``record[key]``, checked to be present and of the expected type; ``where`` names file and record."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DataError(f"{where}: missing key '{key}'")
    value = record[key]
    if not isinstance(value, expected) or isinstance(value, bool):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise DataError(f"{where}: key '{key}' must be a {names}, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where}: key '{key}' is empty")
    return value


def string_list(record: dict[str, Any], key: str, where: str) -> list[str]:
    value = field(record, key, where, list)
    if not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataError(f"{where}: key '{key}' must be a non-empty list of non-empty strings, got {value!r}")
    return value


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
