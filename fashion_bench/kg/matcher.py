"""Per-sample concept ids: the concepts written in a text, then their ancestors, up to ``slots``, padded with -1."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from fashion_bench.kg.chunker import Chunker
from fashion_bench.kg.graph import ConceptGraph

PAD = -1


class ConceptMatcher:
    """A ``Preprocessing.sample_fields`` function (picklable, for data-loader workers): ``(row, text) -> ids``.

    Each chunk of the text maps to its most specific concept (the phrase itself, else its longest suffix that is a
    concept). Free slots are then filled with ancestors, nearest generation first, each concept at most once.
    """

    def __init__(self, graph: ConceptGraph, chunker: Chunker, slots: int = 5) -> None:
        if slots < 1:
            raise ValueError(f"concept slots must be at least 1, got {slots}")
        self.index, self.parents, self.chunker, self.slots = dict(graph.index), list(graph.parents), chunker, slots

    def concept_of(self, words: list[str]) -> int | None:
        for k in range(len(words)):
            found = self.index.get(" ".join(words[k:]))
            if found is not None:
                return found
        return None

    def match(self, text: str) -> list[int]:
        chosen: list[int] = []
        for words, _ in self.chunker.chunks(text):
            concept = self.concept_of(words)
            if concept is not None and concept not in chosen:
                chosen.append(concept)
        generation = chosen[: self.slots]
        chosen = list(generation)
        while generation and len(chosen) < self.slots:
            generation = [p for p in dict.fromkeys(self.parents[c] for c in generation) if p >= 0 and p not in chosen]
            chosen.extend(generation)
        chosen = chosen[: self.slots]
        return chosen + [PAD] * (self.slots - len(chosen))

    def __call__(self, row: Mapping[str, Any], text: str) -> torch.Tensor:
        return torch.tensor(self.match(text), dtype=torch.long)
