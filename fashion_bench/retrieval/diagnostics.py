"""Per-query values a method reports beside its query embeddings (``encode_query_with_diagnostics``, e.g. the
image / text weights of progressive's composed queries): collected in query order across DDP ranks, written on
``test`` beside results.json and read back by the report. They never enter a metric.

File format (``query_diagnostics.jsonl``, :data:`fashion_bench.contracts.QUERY_DIAGNOSTICS_NAME`): UTF-8 JSON lines,
one per query that reported a value::

    {"query_id": "cir-p000009-p000010", "category": "bottoms", "changed": "colour", "values": {"w_image": 0.41, "w_text": 0.59}}

``changed`` names the item attributes (sorted, joined by ``+``) in which a query's reference image and its first
positive differ, e.g. which attributes a composed query asks to change; it is absent when either item has no
attributes (real datasets without them) or the query has no reference image.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from fashion_bench.atomic import atomic_open
from fashion_bench.data.schema import DataError, iter_jsonl


def changed_attributes(reference: Mapping[str, Any], target: Mapping[str, Any]) -> str | None:
    """The attributes whose values differ between two items, sorted and joined by ``+`` (None without attributes)."""
    if not reference or not target:
        return None
    return "+".join(sorted(k for k in reference.keys() & target.keys() if reference[k] != target[k])) or "none"


def write_query_diagnostics(path: Path, queries: Sequence, items: Mapping[str, Any], values: Mapping[str, Sequence[float]]) -> int:
    """Write one line per query with at least one finite value (NaN: the method reported nothing for that query);
    returns the number of lines. ``queries`` are the split's queries in the order of ``values``."""
    lines = 0
    with atomic_open(path) as fh:
        for i, query in enumerate(queries):
            row = {name: float(column[i]) for name, column in values.items() if math.isfinite(float(column[i]))}
            if not row:
                continue
            line: dict[str, Any] = {"query_id": query.query_id, "category": query.category}
            if query.image is not None and query.positives:
                changed = changed_attributes(items[query.image].attributes, items[query.positives[0]].attributes)
                if changed is not None:
                    line["changed"] = changed
            line["values"] = row
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            lines += 1
    return lines


def read_query_diagnostics(path: Path) -> list[dict[str, Any]]:
    """The lines of a diagnostics file, checked: ``query_id`` (str), ``category`` (str), ``values`` ({name: number}).
    Raises :class:`fashion_bench.data.schema.DataError` naming the file, the line and the field."""
    rows = []
    for number, row in iter_jsonl(path):
        for name in ("query_id", "category"):
            if not isinstance(row.get(name), str):
                raise DataError(f"{path}:{number}: field '{name}' must be a string, got {row.get(name)!r}")
        values = row.get("values")
        if not isinstance(values, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
            raise DataError(f"{path}:{number} (query '{row['query_id']}'): field 'values' must map names to numbers, got {values!r}")
        rows.append(row)
    return rows
