"""Manifest storage in Arrow (Hugging Face ``datasets``), cached on disk and memory-mapped.

Loader workers then share one memory-mapped table instead of each holding a copy of Python lists, and a
re-run skips parsing the source annotation files. The cache key is a hash of the rows themselves, so a changed
manifest never reads a stale table.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def _key(kind: str, rows: list[dict[str, Any]]) -> str:
    digest = hashlib.sha1(kind.encode())
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def arrow_rows(kind: str, rows: list[dict[str, Any]], cache_dir: Path | None):
    """Rows as a ``datasets.Dataset`` (cached under ``cache_dir`` when given, else in memory)."""
    import datasets

    datasets.disable_progress_bars()
    if not rows:
        return datasets.Dataset.from_list([])
    if cache_dir is None:
        return datasets.Dataset.from_list(rows)
    path = Path(cache_dir) / f"{kind}-{_key(kind, rows)}"
    if not (path / "dataset_info.json").exists():
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        datasets.Dataset.from_list(rows).save_to_disk(str(tmp))
        try:
            tmp.rename(path)
        except OSError:
            if not (path / "dataset_info.json").exists():
                raise
    return datasets.load_from_disk(str(path))
