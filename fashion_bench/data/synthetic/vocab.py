"""The fixed vocabulary of the synthetic world: categories, lengths, colours, patterns and emblems.

Every attribute value has its canonical name (stored in ``Item.attributes``) and the surface forms the text
generator draws from (synonyms), so that captions paraphrase while the ground truth stays canonical.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]
Anchors = tuple[tuple[str, float, float], ...]  # emblem positions (name, x, y) inside a silhouette


@dataclass(frozen=True)
class Length:
    """A length / sleeve value; ``adjectives`` go before the noun, ``phrases`` after it ("with long sleeves")."""

    name: str
    adjectives: tuple[str, ...]
    phrases: tuple[str, ...]


@dataclass(frozen=True)
class Category:
    name: str
    super_category: str
    nouns: tuple[str, ...]
    lengths: tuple[Length, ...]  # ordered from shortest / lowest to longest / highest
    longer: str  # relative words for a longer / shorter value ("has longer sleeves")
    shorter: str
    anchors: Anchors

    def length(self, name: str) -> Length:
        return next(spec for spec in self.lengths if spec.name == name)


@dataclass(frozen=True)
class Colour:
    name: str
    rgb: RGB
    synonyms: tuple[str, ...]

    @property
    def achromatic(self) -> bool:
        return max(self.rgb) - min(self.rgb) < 20


@dataclass(frozen=True)
class Pattern:
    name: str
    adjectives: tuple[str, ...]  # "striped", "stripy"
    nouns: tuple[str, ...]  # "stripes" (used in "with stripes", "has stripes")


def _sleeves(*names: str) -> tuple[Length, ...]:
    table = {
        "sleeveless": Length("sleeveless", ("sleeveless",), ("without sleeves", "with no sleeves")),
        "short sleeve": Length("short sleeve", ("short-sleeve", "short-sleeved", "short sleeve"), ("with short sleeves",)),
        "long sleeve": Length(
            "long sleeve", ("long-sleeve", "long-sleeved", "long sleeve"), ("with long sleeves", "with full sleeves")
        ),
    }
    return tuple(table[name] for name in names)


_TOP_ANCHORS: Anchors = (
    ("left chest", 0.41, 0.36), ("right chest", 0.59, 0.36), ("centre front", 0.5, 0.5),
    ("lower left", 0.42, 0.6), ("lower right", 0.58, 0.6),
)


def _top(name: str, nouns: tuple[str, ...], sleeves: tuple[str, ...], anchors: Anchors = _TOP_ANCHORS) -> Category:
    return Category(name, "tops", nouns, _sleeves(*sleeves), "has longer sleeves", "has shorter sleeves", anchors)

_BOTTOM_ANCHORS = (("left hip", 0.42, 0.25), ("right hip", 0.58, 0.25), ("front", 0.5, 0.3))

CATEGORIES: tuple[Category, ...] = (
    _top("t-shirt", ("t-shirt", "tee", "tshirt"), ("short sleeve", "long sleeve")),
    _top("shirt", ("shirt", "button-down shirt", "button-up shirt"), ("short sleeve", "long sleeve")),
    _top("sweater", ("sweater", "jumper", "pullover"), ("sleeveless", "long sleeve")),
    _top("hoodie", ("hoodie", "hooded sweatshirt", "hooded top"), ("short sleeve", "long sleeve"), _TOP_ANCHORS[:3]),
    Category(
        "jacket", "tops", ("jacket", "zip jacket", "coat"),
        (
            Length("cropped", ("cropped", "short"), ("cut at the waist",)),
            Length("hip-length", ("hip-length", "regular-length"), ("that reaches the hips",)),
            Length("long", ("long", "longline"), ("that falls to the thigh",)),
        ),
        "is longer", "is shorter",
        (("left chest", 0.38, 0.36), ("right chest", 0.62, 0.36), ("lower left", 0.4, 0.55), ("lower right", 0.6, 0.55)),
    ),
    Category(
        "trousers", "bottoms", ("trousers", "pants", "slacks"),
        (
            Length("cropped", ("cropped", "ankle-grazing"), ("cut above the ankle",)),
            Length("full-length", ("full-length", "long"), ("in full length",)),
        ),
        "is longer", "is shorter", _BOTTOM_ANCHORS,
    ),
    Category(
        "leggings", "bottoms", ("leggings", "tights", "yoga pants"),
        (
            Length("cropped", ("cropped", "capri"), ("ending at mid-calf",)),
            Length("full-length", ("full-length", "ankle-length"), ("down to the ankle",)),
        ),
        "is longer", "is shorter", _BOTTOM_ANCHORS,
    ),
    Category(
        "shorts", "bottoms", ("shorts", "short pants"),
        (
            Length("mid-thigh", ("mid-thigh", "short"), ("ending mid-thigh",)),
            Length("knee-length", ("knee-length", "bermuda"), ("reaching the knee",)),
        ),
        "is longer", "is shorter", _BOTTOM_ANCHORS,
    ),
    Category(
        "skirt", "bottoms", ("skirt", "a-line skirt", "flared skirt"),
        (
            Length("mini", ("mini", "short"), ("above the knee",)),
            Length("midi", ("midi", "mid-length"), ("falling below the knee",)),
            Length("maxi", ("maxi", "floor-length"), ("down to the ankles",)),
        ),
        "is longer", "is shorter", _BOTTOM_ANCHORS,
    ),
    Category(
        "sneaker", "footwear", ("sneaker", "trainer", "running shoe"),
        (
            Length("low-top", ("low-top", "low-cut"), ("with a low collar",)),
            Length("high-top", ("high-top", "high-cut"), ("covering the ankle",)),
        ),
        "is higher", "is lower", (("heel", 0.27, 0.53), ("side", 0.5, 0.56), ("toe", 0.72, 0.6)),
    ),
    Category(
        "boot", "footwear", ("boot", "leather boot", "bootie"),
        (
            Length("ankle", ("ankle", "short"), ("ending at the ankle",)),
            Length("knee-high", ("knee-high", "tall"), ("reaching the knee",)),
        ),
        "is taller", "is shorter", (("shaft", 0.36, 0.47), ("side", 0.46, 0.62), ("toe", 0.7, 0.66)),
    ),
    Category(
        "sandal", "footwear", ("sandal", "strappy sandal", "open-toe sandal"),
        (
            Length("flat", ("flat", "flat-soled"), ("with a flat sole",)),
            Length("heeled", ("heeled", "high-heeled"), ("with a heel",)),
        ),
        "has a higher heel", "has a lower heel", (("front strap", 0.62, 0.6), ("ankle strap", 0.33, 0.5)),
    ),
)
CATEGORY_BY_NAME = {c.name: c for c in CATEGORIES}
SUPER_CATEGORIES = tuple(dict.fromkeys(c.super_category for c in CATEGORIES))
PLURAL_NOUNS = {"trousers", "pants", "slacks", "leggings", "tights", "yoga pants", "shorts", "short pants"}

COLOURS: tuple[Colour, ...] = (
    Colour("red", (200, 32, 40), ("crimson", "scarlet")),
    Colour("orange", (240, 128, 24), ("tangerine", "bright orange")),
    Colour("yellow", (244, 208, 40), ("mustard", "lemon yellow")),
    Colour("green", (40, 150, 64), ("emerald", "grass green")),
    Colour("teal", (16, 140, 140), ("turquoise", "petrol blue")),
    Colour("blue", (36, 80, 204), ("cobalt", "royal blue")),
    Colour("purple", (124, 48, 164), ("violet", "plum")),
    Colour("pink", (240, 120, 172), ("rose", "fuchsia")),
    Colour("brown", (120, 74, 40), ("chocolate", "coffee")),
    Colour("black", (24, 24, 28), ("jet black", "ebony")),
    Colour("white", (246, 246, 242), ("ivory", "snow white")),
    Colour("grey", (132, 132, 138), ("gray", "slate grey")),
)
COLOUR_BY_NAME = {c.name: c for c in COLOURS}

PATTERNS: tuple[Pattern, ...] = (
    Pattern("solid", ("solid", "plain", "solid-colour"), ("no pattern", "a plain finish")),
    Pattern("striped", ("striped", "stripy", "pinstriped"), ("stripes", "a striped pattern")),
    Pattern("dotted", ("polka-dot", "dotted", "spotted"), ("polka dots", "dots")),
    Pattern("checked", ("checked", "plaid", "gingham"), ("checks", "a check pattern", "a plaid pattern")),
    Pattern("zigzag", ("zigzag", "chevron"), ("a zigzag pattern", "chevrons")),
)
PATTERN_BY_NAME = {p.name: p for p in PATTERNS}

EMBLEM_SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "ring")
EMBLEM_NOUNS = ("logo", "emblem", "badge", "patch")
EMBLEM_COLOURS = ("white", "black", "yellow", "red", "blue", "green", "pink")

ROOT_CONCEPT = "fashion"
