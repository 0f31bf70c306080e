"""Mining the concept graph from texts: chunks ending in a product noun, "is-a" edges by dropping modifiers.

"red striped long sleeve shirt" is-a "striped long sleeve shirt" is-a "long sleeve shirt" is-a "shirt": the parent
is the phrase without its first modifier. A modifier may span several words ("long sleeve"): a word counts as the
start of a modifier only if some text begins a phrase with it ("sleeve" never does, so "sleeve shirt" is not
made). Parents are concepts even when no text writes them alone.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from tqdm.auto import tqdm

from fashion_bench.kg.chunker import Chunker
from fashion_bench.kg.graph import ROOT, ConceptGraph


def parent_phrase(words: list[str], starters: set[str]) -> str:
    """The phrase without its first modifier: the longest proper suffix that begins with a phrase-starting word
    (the head noun alone at the latest)."""
    for k in range(1, len(words)):
        if words[k] in starters or k == len(words) - 1:
            return " ".join(words[k:])
    return ROOT


def mine_graph(texts: Iterable[str], chunker: Chunker, *, min_count: int = 2, progress: bool = False) -> ConceptGraph:
    """Concepts written at least ``min_count`` times, and their ancestors by dropping modifiers."""
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    counts: Counter[str] = Counter()
    starters: set[str] = set()
    for text in tqdm(texts, desc="mining concepts", unit="text", disable=not progress, leave=False):
        for words, folded in chunker.chunks(text):
            counts[" ".join(words)] += 1
            starters.update((words[0], words[folded]))
    parent_of: dict[str, str] = {}
    todo = [p for p, n in counts.items() if n >= min_count]
    while todo:
        phrase = todo.pop()
        if phrase in parent_of:
            continue
        parent_of[phrase] = parent_phrase(phrase.split(), starters)
        if parent_of[phrase] != ROOT:
            todo.append(parent_of[phrase])
    return ConceptGraph.from_edges(parent_of, dict(counts))
