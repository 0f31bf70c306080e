"""Readers for the annotation files every adapter parses (JSON, text lists, CSV), tolerant of what real copies of
published files contain (a UTF-8 byte order mark, CRLF line ends, trailing empty CSV columns) and strict about
the rest: malformed input raises :class:`DataError` naming the file and the line or record, and so does an id
seen twice (:class:`UniqueIds`)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from fashion_bench.data.schema import DataError, SplitNotFound

ENCODING = "utf-8-sig"  # UTF-8; a byte order mark at the start (Windows editors, Excel exports) is skipped


def read_json(path: Path, expected: type, *, split: str) -> Any:
    """Parse a JSON annotation file holding a ``list`` or a ``dict``.

    An absent file raises :class:`SplitNotFound` (the split is not on disk); a truncated or malformed one a
    :class:`DataError` with line and column; an object with a key written twice (JSON parsers silently keep the
    last) a :class:`DataError` naming the key.
    """
    if not path.is_file():
        raise SplitNotFound(f"{path}: annotation file of split '{split}' not found")
    try:
        with open(path, encoding=ENCODING) as fh:
            data = json.load(fh, object_pairs_hook=lambda pairs: _unique_keys(pairs, path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed or truncated JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    if not isinstance(data, expected):
        raise DataError(f"{path}: expected a JSON {expected.__name__}, got {type(data).__name__}")
    return data


def _unique_keys(pairs: list[tuple[str, Any]], path: Path) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) < len(pairs):
        repeated = sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise DataError(f"{path}: a JSON object has the key(s) {repeated[:3]} twice (duplicate ids or fields)")
    return data


def read_lines(path: Path, *, split: str) -> list[tuple[int, str]]:
    """(line number, stripped line) for the non-empty lines of a text file (LF or CRLF line ends)."""
    if not path.is_file():
        raise SplitNotFound(f"{path}: file of split '{split}' not found")
    with open(path, encoding=ENCODING) as fh:
        return [(n, line.strip()) for n, line in enumerate(fh, start=1) if line.strip()]


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of a CSV file with a header line; blank lines are skipped.

    Spreadsheet and pandas exports often end every line with a comma, or carry an unnamed empty last column:
    unnamed columns at the end of the header and empty fields beyond the header's width are dropped. Header
    names are stripped of surrounding whitespace. A row may still have more (non-empty) fields than the header.
    """
    with open(path, newline="", encoding=ENCODING) as fh:
        reader = csv.reader(fh)
        header = [name.strip() for name in next(reader, [])]
        while header and not header[-1]:
            header.pop()
        if not header:
            raise DataError(f"{path}: empty file (expected a header line)")
        rows = []
        for fields in reader:
            while len(fields) > len(header) and not fields[-1].strip():
                fields.pop()
            if any(f.strip() for f in fields):
                rows.append((reader.line_num, fields))
    return header, rows


class UniqueIds:
    """Ids (or whole records) seen so far and where; a second sighting raises :class:`DataError` naming both
    places, e.g. ``styles.csv:9: duplicate id '1163' (first at styles.csv:3)``."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.first: dict[Hashable, str] = {}

    def add(self, key: Hashable, where: str, *, shown: str | None = None) -> None:
        """Record ``key`` seen at ``where``; ``shown`` replaces the key in the message (e.g. for a record)."""
        if key in self.first:
            raise DataError(f"{where}: duplicate {self.what} {shown or repr(key)} (first at {self.first[key]})")
        self.first[key] = where
