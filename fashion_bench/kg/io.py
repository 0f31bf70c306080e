"""The knowledge-graph folder: ``concepts.jsonl``, ``parents.jsonl``, ``images.jsonl`` and ``summary.json``.

* concepts.jsonl: ``{"concept_id", "phrase", "prompt", "count"}`` (count: times written in the training texts);
* parents.jsonl: ``{"phrase", "parent"}`` (``""`` for a root, as in the public FashionMMKG files);
* images.jsonl: ``{"phrase", "item_ids", "scores"}`` (the MMR-kept images, best first), appended as concepts are
  done, so that an interrupted build resumes;
* summary.json: counts, settings, encoder and the evaluation against a ground truth when there is one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from fashion_bench.atomic import atomic_open, write_json_atomic
from fashion_bench.kg.graph import ROOT, ConceptGraph
from fashion_bench.kg.images import PROMPT

CONCEPTS, PARENTS, IMAGES, SUMMARY = "concepts.jsonl", "parents.jsonl", "images.jsonl", "summary.json"


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with atomic_open(path) as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """Records of a jsonl file; a malformed line or a missing key is named by file and line."""
    records = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the knowledge-graph file ({err.strerror})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise ValueError(f"{path}, line {number}: malformed JSON ({err})") from None
        missing = [k for k in required if not isinstance(record, dict) or k not in record]
        if missing:
            raise ValueError(f"{path}, line {number}: missing field(s) {missing}")
        records.append(record)
    return records


def write_graph(directory: Path, graph: ConceptGraph) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _write_jsonl(directory / CONCEPTS, (
        {"concept_id": i, "phrase": p, "prompt": PROMPT.format(p), "count": n}
        for i, (p, n) in enumerate(zip(graph.phrases, graph.counts))
    ))
    _write_jsonl(directory / PARENTS, ({"phrase": p, "parent": graph.parent_phrase(i)} for i, p in enumerate(graph.phrases)))


def read_graph(directory: Path) -> ConceptGraph:
    """The graph of a ``kg build`` folder (concepts.jsonl and parents.jsonl)."""
    directory = Path(directory)
    concepts = read_jsonl(directory / CONCEPTS, ("phrase", "count"))
    parents = read_jsonl(directory / PARENTS, ("phrase", "parent"))
    if not concepts:
        raise ValueError(f"{directory / CONCEPTS}: no concepts")
    counts = {str(r["phrase"]): int(r["count"]) for r in concepts}
    parent_of = {str(r["phrase"]): str(r["parent"] or ROOT) for r in parents}
    unknown = sorted(set(parent_of) - set(counts))
    if unknown:
        raise ValueError(f"{directory / PARENTS}: phrases {unknown[:5]} are not in {CONCEPTS}")
    try:
        return ConceptGraph.from_edges({p: parent_of.get(p, ROOT) for p in counts}, counts)
    except ValueError as err:
        raise ValueError(f"{directory / PARENTS}: {err}") from None


def done_images(directory: Path) -> set[str]:
    """Concepts whose images an earlier (interrupted) build already wrote; a torn last line is dropped."""
    path = Path(directory) / IMAGES
    if not path.exists():
        return set()
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        path.write_text("".join(line + "\n" for line in lines[:-1]), encoding="utf-8")
        lines = lines[:-1]
    return {json.loads(line)["phrase"] for line in lines if line.strip()}


def append_images(directory: Path, records: Iterable[dict[str, Any]]) -> None:
    with open(Path(directory) / IMAGES, "a", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()


def write_summary(directory: Path, summary: dict[str, Any]) -> None:
    write_json_atomic(Path(directory) / SUMMARY, summary)
