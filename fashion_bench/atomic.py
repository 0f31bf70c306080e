"""The one way fashion-bench writes a file atomically: a uniquely named temporary file in the target's folder,
flushed and fsynced, then renamed over the target. Readers never see a partial file, and concurrent writers
(seeds, ranks, processes) never share a temporary name."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on a clean exit it replaces ``path``, on an error it is
    removed and ``path`` is untouched. ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results and exports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    with atomic_open(path) as fh:
        json.dump(payload, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_open(path) as fh:
        fh.write(text)
    return Path(path)


def copy_atomic(source: str | Path, target: str | Path) -> Path:
    with atomic_open(target, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out)
    return Path(target)
