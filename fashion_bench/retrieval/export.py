"""Prediction files for evaluation servers."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from fashion_bench.atomic import write_json_atomic

CIRR_RECALL_K = 50
CIRR_SUBSET_K = 3


def write_cirr_submission(
    out_dir: str | os.PathLike[str],
    pair_ids: Sequence[str | int],
    recall_top50: Sequence[Sequence[str]],
    subset_top3: Sequence[Sequence[str]],
) -> tuple[Path, Path]:
    """Write the two CIRR test-server files (``recall_submission.json``, ``recall_subset_submission.json``):
    ``{"version": "rc2", "metric": ..., "<pairid>": [image names], ...}`` with 50 and 3 names per pair."""
    if not len(pair_ids) == len(recall_top50) == len(subset_top3):
        raise ValueError(
            f"CIRR submission: {len(pair_ids)} pair ids, {len(recall_top50)} recall rankings and "
            f"{len(subset_top3)} subset rankings; all three must have one entry per pair"
        )
    keys = [str(p) for p in pair_ids]
    duplicates = sorted(k for k, n in Counter(keys).items() if n > 1)
    if duplicates:
        raise ValueError(f"CIRR submission: duplicate pair ids {duplicates[:10]}")
    files = {"recall": (recall_top50, CIRR_RECALL_K), "recall_subset": (subset_top3, CIRR_SUBSET_K)}
    for metric, (rankings, k) in files.items():
        for key, names in zip(keys, rankings, strict=True):
            if len(names) != k or not all(isinstance(n, str) and n for n in names):
                raise ValueError(
                    f"CIRR submission: pair {key} needs exactly {k} image names for {metric!r}, got {list(names)!r}"
                )
    recall_path, subset_path = (
        write_json_atomic(
            Path(out_dir) / f"{metric}_submission.json",
            {"version": "rc2", "metric": metric} | {key: list(n) for key, n in zip(keys, rankings, strict=True)},
        )
        for metric, (rankings, _) in files.items()
    )
    return recall_path, subset_path
