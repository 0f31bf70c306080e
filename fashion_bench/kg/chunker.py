"""Rule-based fashion noun-phrase chunker: phrases of 1 to ``max_words`` words that end in a product noun.

A chunk is the longest run of modifier words directly before a product noun ("red striped long sleeve shirt"). A
trailing "in <modifiers>" with no noun of its own is folded in front ("short sleeve t-shirt in white" -> "white
short sleeve t-shirt"), so that one concept has one surface order. No model is needed; when a spaCy English model
is installed, :class:`SpacyChunker` takes the modifiers from its parser's noun chunks instead.
"""

from __future__ import annotations

import re
from typing import Iterable, Protocol

# Garment, footwear and accessory nouns (singular; plurals are recognised by a trailing "s" / "es").
PRODUCT_NOUNS = frozenset("""
t-shirt tshirt tee shirt blouse top tank camisole polo sweater jumper pullover cardigan hoodie sweatshirt
jacket coat blazer parka vest gilet suit tuxedo dress gown jumpsuit romper playsuit overalls dungarees
trousers pants slacks jeans chinos joggers leggings tights shorts skirt kilt sarong bodysuit bra briefs boxers
lingerie pyjamas swimsuit bikini trunks kimono poncho cape shawl scarf tie bowtie belt hat cap beanie beret
gloves mittens socks stockings shoe sneaker trainer boot bootie sandal slipper loafer moccasin pump heel mule
clog espadrille oxford brogue flip-flop slide bag handbag backpack tote clutch wallet purse satchel
sunglasses glasses watch necklace bracelet earring ring jewellery jewelry
""".split())

# Words that end a chunk: determiners, pronouns, prepositions, conjunctions, verbs of the templates, numbers.
STOP_WORDS = frozenset("""
a an the this that these those it its is are was be been has have had with without in on at of for from to by
and or but not no as into onto over under up down out off so than then very this our your their his her my
featuring features feature made make comes come perfect ideal great available which who what where when
""".split())

TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (hyphenated words kept whole) and punctuation marks."""
    return TOKEN.findall(text.lower())


def is_product_noun(word: str, nouns: frozenset[str] = PRODUCT_NOUNS) -> bool:
    if word in nouns:
        return True
    return (word.endswith("es") and word[:-2] in nouns) or (word.endswith("s") and word[:-1] in nouns)


def is_modifier(word: str) -> bool:
    return word[0].isalpha() and word not in STOP_WORDS


class Chunker(Protocol):
    kind: str
    max_words: int

    def __call__(self, text: str) -> list[str]: ...

    def chunks(self, text: str) -> list[tuple[list[str], int]]: ...


class RuleChunker:
    """Noun phrases ending in a product noun, by word rules (picklable: runs in data-loader workers)."""

    kind = "rule"

    def __init__(self, max_words: int = 6, extra_nouns: Iterable[str] = ()) -> None:
        if max_words < 1:
            raise ValueError(f"max_words must be at least 1, got {max_words}")
        self.max_words = max_words
        self.nouns = PRODUCT_NOUNS | frozenset(w.lower() for w in extra_nouns)

    def __call__(self, text: str) -> list[str]:
        return [" ".join(words) for words, _ in self.chunks(text)]

    def chunks(self, text: str) -> list[tuple[list[str], int]]:
        """(words, number of folded words in front) of each chunk; ``words[folded]`` began the written phrase."""
        words = tokenize(text)
        found = []
        for end, word in enumerate(words):
            if not is_product_noun(word, self.nouns):
                continue
            start = end
            while start > 0 and is_modifier(words[start - 1]) and not is_product_noun(words[start - 1], self.nouns):
                start -= 1
            trailing = self._folded_modifiers(words, end + 1)
            chunk = [*trailing, *words[start : end + 1]][-self.max_words :]
            found.append((chunk, max(0, len(chunk) - (end + 1 - start))))
        return found

    def _folded_modifiers(self, words: list[str], after: int) -> list[str]:
        """The modifiers of "in <modifiers>" right after a noun, when they end the clause without a noun."""
        if after >= len(words) or words[after] != "in":
            return []
        end = after + 1
        while end < len(words) and is_modifier(words[end]) and not is_product_noun(words[end], self.nouns):
            end += 1
        own_noun = end < len(words) and is_product_noun(words[end], self.nouns)
        return words[after + 1 : end] if not own_noun else []


class SpacyChunker(RuleChunker):
    """The parser's noun chunks whose last word is a product noun (modifiers as the parser delimits them)."""

    kind = "spacy"

    def __init__(self, model: str = "en_core_web_sm", max_words: int = 6, extra_nouns: Iterable[str] = ()) -> None:
        super().__init__(max_words, extra_nouns)
        import spacy

        self.model = model
        self.nlp = spacy.load(model, disable=["ner"])

    def chunks(self, text: str) -> list[tuple[list[str], int]]:
        found = []
        for chunk in self.nlp(text.lower()).noun_chunks:
            words = [t.text for t in chunk if t.pos_ not in ("DET", "PRON", "PUNCT")]
            if words and is_product_noun(words[-1], self.nouns):
                found.append((words[-self.max_words :], 0))
        return found


def make_chunker(kind: str = "auto", max_words: int = 6, extra_nouns: Iterable[str] = ()) -> Chunker:
    """``rule``, ``spacy`` (fails without spaCy and its model) or ``auto`` (spaCy when installed, else rules)."""
    if kind not in ("auto", "rule", "spacy"):
        raise ValueError(f"unknown chunker '{kind}'; expected 'auto', 'rule' or 'spacy'")
    if kind == "rule":
        return RuleChunker(max_words, extra_nouns)
    try:
        return SpacyChunker(max_words=max_words, extra_nouns=extra_nouns)
    except (ImportError, OSError) as err:
        if kind == "spacy":
            raise ValueError(f"chunker 'spacy' needs spaCy and its en_core_web_sm model ({err})") from None
        return RuleChunker(max_words, extra_nouns)
