"""The concept graph: phrases with one "is-a" parent each (a forest; a root concept's parent is -1)."""

from __future__ import annotations

from dataclasses import dataclass, field

ROOT = ""  # the parent written for a root concept (as in the public FashionMMKG files)


@dataclass
class ConceptGraph:
    phrases: list[str]
    parents: list[int]  # index of each concept's parent, -1 for a root
    counts: list[int]  # times the phrase was written in the texts (0: created by dropping modifiers)
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (len(self.phrases) == len(self.parents) == len(self.counts)):
            raise ValueError("ConceptGraph: phrases, parents and counts differ in length")
        self.index = {p: i for i, p in enumerate(self.phrases)}
        if len(self.index) != len(self.phrases):
            dupes = sorted({p for p in self.phrases if self.phrases.count(p) > 1})
            raise ValueError(f"ConceptGraph: repeated concepts {dupes[:5]}")
        bad = [i for i, p in enumerate(self.parents) if not -1 <= p < len(self.phrases) or p == i]
        if bad:
            raise ValueError(f"ConceptGraph: concept '{self.phrases[bad[0]]}' has an invalid parent {self.parents[bad[0]]}")

    def __len__(self) -> int:
        return len(self.phrases)

    def parent_phrase(self, i: int) -> str:
        return ROOT if self.parents[i] < 0 else self.phrases[self.parents[i]]

    def edges(self) -> list[tuple[str, str]]:
        """(child, parent) of every concept with a parent."""
        return [(p, self.phrases[q]) for p, q in zip(self.phrases, self.parents) if q >= 0]

    @classmethod
    def from_edges(cls, parent_of: dict[str, str], counts: dict[str, int]) -> ConceptGraph:
        """From phrase -> parent phrase (``ROOT`` for none); every named parent must be a concept itself."""
        phrases = sorted(parent_of)
        index = {p: i for i, p in enumerate(phrases)}
        missing = sorted({q for q in parent_of.values() if q != ROOT and q not in index})
        if missing:
            raise ValueError(f"parents {missing[:5]} are not concepts themselves")
        return cls(phrases, [index.get(parent_of[p], -1) for p in phrases], [counts.get(p, 0) for p in phrases])
