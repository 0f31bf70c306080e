"""Product descriptions (paraphrase templates and synonyms), caption noise, and FashionIQ-style relative captions."""

from __future__ import annotations

import random
from typing import Callable, Mapping

from fashion_bench.data.synthetic.vocab import CATEGORY_BY_NAME, COLOUR_BY_NAME, PATTERN_BY_NAME, PLURAL_NOUNS

ATTRIBUTE_KEYS = ("colour", "pattern", "length")
_SUPER_WORDS = {
    "tops": ("top", "garment", "piece"), "bottoms": ("bottom", "garment", "piece"),
    "footwear": ("shoe", "pair of shoes", "piece of footwear"),
}
_FILLERS = ("new", "style", "classic", "casual", "trendy", "summer", "sale", "women", "men", "fit", "basic", "look")


def _article(phrase: str) -> str:
    """Indefinite article for a noun phrase; plural nouns take none."""
    if phrase.split()[-1] in PLURAL_NOUNS or phrase in PLURAL_NOUNS:
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


class Describer:
    """Draws surface forms for one product's attributes; every call is a new paraphrase."""

    def __init__(self, attributes: Mapping[str, str], emblem: Mapping[str, str], rng: random.Random) -> None:
        self.category = CATEGORY_BY_NAME[attributes["category"]]
        self.colour = COLOUR_BY_NAME[attributes["colour"]]
        self.pattern = PATTERN_BY_NAME[attributes["pattern"]]
        self.length = self.category.length(attributes["length"])
        self.emblem = emblem
        self.rng = rng

    def noun(self) -> str:
        return self.rng.choice(self.category.nouns)

    def colour_word(self, synonyms: bool = True) -> str:
        return self.rng.choice((self.colour.name, *self.colour.synonyms) if synonyms else (self.colour.name,))

    def pattern_adj(self, optional_solid: bool = True) -> str:
        if self.pattern.name == "solid" and optional_solid and self.rng.random() < 0.5:
            return ""
        return self.rng.choice(self.pattern.adjectives)

    def pattern_with(self) -> str:
        if self.pattern.name == "solid":
            return "in a single colour"
        return "with " + self.rng.choice(self.pattern.nouns)

    def length_adj(self) -> str:
        return self.rng.choice(self.length.adjectives)

    def length_phrase(self) -> str:
        return self.rng.choice(self.length.phrases)

    def super_word(self) -> str:
        return self.rng.choice(_SUPER_WORDS[self.category.super_category])

    def emblem_phrase(self) -> str:
        e = self.emblem
        return self.rng.choice((
            f"with a small {e['colour']} {e['shape']} {e['noun']} on the {e['position']}",
            f"featuring a {e['colour']} {e['shape']} {e['noun']}",
            f"with a {e['shape']}-shaped {e['colour']} {e['noun']} at the {e['position']}",
        ))


def _join(*words: str) -> str:
    return " ".join(w for w in words if w).replace(" ,", ",")


TEMPLATES: tuple[Callable[[Describer], str], ...] = (
    lambda d: _join(d.colour_word(False), d.pattern_adj(), d.length_adj(), d.noun()),
    lambda d: _join(_article(d.noun()), "in", d.colour_word(), d.pattern_with() + ",", d.length_phrase()),
    lambda d: _join(d.length_adj(), d.noun(), "in", d.colour_word() + ",", d.pattern_adj(False)),
    lambda d: _join(d.colour_word(), d.noun(), d.length_phrase() + ",", d.pattern_adj(False), "design"),
    lambda d: _join(
        "this", d.super_word(), "is", _article(_join(d.pattern_adj(), d.colour_word(), d.noun())), d.length_phrase()
    ),
    lambda d: _join(d.pattern_adj(), d.length_adj(), d.noun(), "in", d.colour_word()),
)


def describe(describer: Describer, template: int, emblem_prob: float) -> str:
    text = TEMPLATES[template](describer)
    if describer.rng.random() < emblem_prob:
        text = f"{text}, {describer.emblem_phrase()}"
    return text


def product_texts(describer: Describer, count: int, emblem_prob: float) -> list[str]:
    """``count`` distinct descriptions from distinct templates."""
    templates = describer.rng.sample(range(len(TEMPLATES)), count)
    return list(dict.fromkeys(describe(describer, t, emblem_prob) for t in templates))


def paraphrase(describer: Describer, avoid: list[str], emblem_prob: float, tries: int = 20) -> str:
    """A description that differs from every text in ``avoid`` (held-out query text)."""
    text = ""
    for _ in range(tries):
        text = describe(describer, describer.rng.randrange(len(TEMPLATES)), emblem_prob)
        if text not in avoid:
            break
    return text


def add_noise(text: str, rate: float, rng: random.Random) -> str:
    """Drop or replace words with probability ``rate`` each (web-caption noise); never returns an empty text."""
    if rate <= 0:
        return text
    words = []
    for word in text.split():
        r = rng.random()
        if r < rate / 2:
            continue
        words.append(rng.choice(_FILLERS) if r < rate else word)
    return " ".join(words) or text


def surface_forms(key: str, value: str, category: str) -> tuple[str, ...]:
    """Every phrase the generator may use for an attribute value (for consistency checks)."""
    if key == "colour":
        colour = COLOUR_BY_NAME[value]
        return (colour.name, *colour.synonyms)
    if key == "pattern":
        pattern = PATTERN_BY_NAME[value]
        return (*pattern.adjectives, *pattern.nouns)
    return CATEGORY_BY_NAME[category].length(value).adjectives


def _colour_change(old: str, new: str, rng: random.Random) -> str:
    new_word = rng.choice((new, *COLOUR_BY_NAME[new].synonyms))
    return rng.choice((
        f"is {new} instead of {old}", f"is {new_word}", f"{new} instead of {old}",
        f"change the colour to {new_word}", f"is {new_word} not {old}",
    ))


def _pattern_change(old: str, new: str, rng: random.Random) -> str:
    old_p, new_p = PATTERN_BY_NAME[old], PATTERN_BY_NAME[new]
    new_adj, new_noun = rng.choice(new_p.adjectives), rng.choice(new_p.nouns)
    if new == "solid":
        old_adj = rng.choice(old_p.adjectives)
        return rng.choice((f"is {new_adj} instead of {old_adj}", f"has {new_noun}", f"is {new_adj} with no print"))
    if old == "solid":
        return rng.choice((f"has {new_noun}", f"is {new_adj}", f"add {new_noun}"))
    old_adj, old_noun = rng.choice(old_p.adjectives), rng.choice(old_p.nouns)
    return rng.choice((f"has {new_noun} instead of {old_noun}", f"is {new_adj} rather than {old_adj}"))


def _length_change(category: str, old: str, new: str, rng: random.Random) -> str:
    cat = CATEGORY_BY_NAME[category]
    relative = length_direction(category, old, new)
    new_adj, old_adj = rng.choice(cat.length(new).adjectives), rng.choice(cat.length(old).adjectives)
    options = [f"is {new_adj} instead of {old_adj}", f"is {new_adj}", f"{relative}: {new_adj}"]
    if len(cat.lengths) == 2:  # with two values the direction alone names the target
        options.append(relative)
    return rng.choice(options)


def length_direction(category: str, old: str, new: str) -> str:
    """The relative phrase for a length change ("has longer sleeves", "is shorter")."""
    cat = CATEGORY_BY_NAME[category]
    names = [spec.name for spec in cat.lengths]
    return cat.longer if names.index(new) > names.index(old) else cat.shorter


def relative_caption(reference: Mapping[str, str], target: Mapping[str, str], rng: random.Random) -> str:
    """One FashionIQ-style caption naming every attribute in which ``target`` differs from ``reference``."""
    parts = []
    for key in rng.sample(ATTRIBUTE_KEYS, len(ATTRIBUTE_KEYS)):
        old, new = reference[key], target[key]
        if old == new:
            continue
        if key == "colour":
            parts.append(_colour_change(old, new, rng))
        elif key == "pattern":
            parts.append(_pattern_change(old, new, rng))
        else:
            parts.append(_length_change(target["category"], old, new, rng))
    return " and ".join(parts)


def relative_captions(
    reference: Mapping[str, str], target: Mapping[str, str], rng: random.Random, count: int = 2
) -> list[str]:
    """``count`` distinct captions for one pair (FashionIQ has two annotators' captions per pair)."""
    captions: list[str] = []
    for _ in range(20 * count):
        caption = relative_caption(reference, target, rng)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == count:
            break
    return captions
