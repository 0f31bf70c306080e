"""Rows of a Hugging Face dataset saved on disk (``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``), read
offline, as (where, record) pairs like the rows of a csv or jsonl catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fashion_bench.data.schema import DataError

DATASET_MARKERS = ("dataset_dict.json", "state.json")  # a saved DatasetDict / a saved Dataset


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in DATASET_MARKERS)


def read_saved_dataset(path: Path, image_column: str) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """(columns, [(where, record)]) of every row; a DatasetDict's split names fill a ``split`` field (unless a
    row has its own). An ``Image`` column gives the path of each image file; images embedded as bytes are
    refused (a catalogue refers to image files)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable Hugging Face dataset saved with save_to_disk ({err})") from None
    named_splits = isinstance(loaded, datasets.DatasetDict)
    parts = loaded.items() if named_splits else [(None, loaded)]
    columns: list[str] = []
    rows: list[tuple[str, dict[str, Any]]] = []
    for split, table in parts:
        columns += [c for c in table.column_names if c not in columns]
        if isinstance(table.features.get(image_column), datasets.Image):
            table = table.cast_column(image_column, datasets.Image(decode=False))
        for index, record in enumerate(table):
            where = f"{path}[{split}]#{index}" if split else f"{path}#{index}"
            value = record.get(image_column)
            if isinstance(value, dict):  # an undecoded Image feature: {"bytes": ..., "path": ...}
                if not value.get("path") or value.get("bytes"):
                    raise DataError(
                        f"{where}: field '{image_column}' holds image bytes, not a file path; save the images as files "
                        "and list their paths in the catalogue"
                    )
                record = {**record, image_column: value["path"]}
            if split is not None:
                record.setdefault("split", split)
            rows.append((where, record))
    if named_splits and "split" not in columns:
        columns.append("split")
    return columns, rows
