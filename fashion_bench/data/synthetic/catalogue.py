"""The product catalogue: families of colourways, per-product signatures, splits, texts and the concept hierarchy.

A *family* is one garment model (category, silhouette width, pattern geometry, emblem) sold in several
*colourways* (products) that differ in colour, pattern or length. Products are the identities; families give
synth-cir its reference / target pairs (same emblem, one or two attributes changed), and products of other
families that share the attributes make instance retrieval depend on the signature. *Look-alike* families copy
the styles of an earlier family of the same category and split (another brand's version of the same garment), so
that evaluation galleries hold products that only their signature tells apart. *Distractors* (validation and
test only) are more such products, one shop image each, that only stand in synth-cir's galleries: every
colourway gets ``cir_distractors`` copies of its style under other signatures, so a composed query must carry
the reference's signature to find its target among products with the target's attributes.
"""

from __future__ import annotations

import colorsys
import random
from dataclasses import dataclass, field

from fashion_bench.data.synthetic.config import WorldConfig
from fashion_bench.data.synthetic.text import ATTRIBUTE_KEYS, Describer, add_noise, paraphrase, product_texts
from fashion_bench.data.synthetic.vocab import (
    CATEGORIES,
    CATEGORY_BY_NAME,
    COLOUR_BY_NAME,
    COLOURS,
    EMBLEM_COLOURS,
    EMBLEM_NOUNS,
    EMBLEM_SHAPES,
    PATTERN_BY_NAME,
    PATTERNS,
    RGB,
    ROOT_CONCEPT,
)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Signature:
    """What makes one family recognisable beyond its attributes (rendering parameters)."""

    width: float  # silhouette width factor
    orientation: float  # pattern angle in degrees
    period: float  # pattern period as a fraction of the image side
    duty: float  # fraction of the period in the secondary colour (stripe / dot size)
    contrast: float  # how far the secondary colour is pushed towards white / black
    emblem_shape: str
    emblem_colour: str
    emblem_noun: str
    emblem_position: str
    emblem_xy: tuple[float, float]


@dataclass
class Product:
    product_id: str
    index: int
    family: str
    split: str
    category: str
    colour: str
    pattern: str
    length: str
    signature: Signature
    main_rgb: RGB
    phase: tuple[float, float]  # pattern offset (per product)
    texts: list[str] = field(default_factory=list)
    query_text: str = ""  # held-out paraphrase used as the synth-t2i query
    distractor: bool = False  # a synth-cir gallery-only product (shop view only, in no query and no other dataset)

    @property
    def super_category(self) -> str:
        return CATEGORY_BY_NAME[self.category].super_category

    @property
    def style(self) -> dict[str, str]:
        return {"category": self.category, "colour": self.colour, "pattern": self.pattern, "length": self.length}

    def attributes(self) -> dict[str, str]:
        return {"category": self.category, "super_category": self.super_category, "colour": self.colour,
                "pattern": self.pattern, "length": self.length, "family": self.family}

    def emblem(self) -> dict[str, str]:
        s = self.signature
        return {"shape": s.emblem_shape, "colour": s.emblem_colour, "noun": s.emblem_noun, "position": s.emblem_position}


def _popularity(n: int, skew: float) -> list[float]:
    return [1.0 / (rank + 1) ** skew for rank in range(n)]


def _signature(category: str, rng: random.Random) -> Signature:
    position, x, y = rng.choice(CATEGORY_BY_NAME[category].anchors)
    return Signature(
        width=rng.uniform(0.9, 1.1),
        orientation=rng.choice((0.0, 90.0, 45.0, -45.0)),
        period=rng.uniform(0.07, 0.13),
        duty=rng.uniform(0.3, 0.55),
        contrast=rng.uniform(0.55, 0.85),
        emblem_shape=rng.choice(EMBLEM_SHAPES),
        emblem_colour=rng.choice(EMBLEM_COLOURS),
        emblem_noun=rng.choice(EMBLEM_NOUNS),
        emblem_position=position,
        emblem_xy=(x + rng.uniform(-0.03, 0.03), y + rng.uniform(-0.03, 0.03)),
    )


class _StyleSampler:
    """Draws attribute values with popularity weights (a per-world colour ranking, solid patterns first)."""

    def __init__(self, cfg: WorldConfig, rng: random.Random) -> None:
        self.rng = rng
        self.colours = [c.name for c in rng.sample(COLOURS, len(COLOURS))]
        self.patterns = [p.name for p in PATTERNS]
        self.colour_weights = _popularity(len(self.colours), cfg.popularity_skew)
        self.pattern_weights = _popularity(len(self.patterns), cfg.popularity_skew)

    def value(self, key: str, category: str, exclude: str = "") -> str:
        if key == "length":
            choices = [spec.name for spec in CATEGORY_BY_NAME[category].lengths]
            weights = [1.0] * len(choices)
        elif key == "colour":
            choices, weights = self.colours, self.colour_weights
        else:
            choices, weights = self.patterns, self.pattern_weights
        pairs = [(c, w) for c, w in zip(choices, weights) if c != exclude]
        return self.rng.choices([c for c, _ in pairs], [w for _, w in pairs])[0]

    def family_styles(self, category: str, size: int, start: list[dict[str, str]]) -> list[dict[str, str]]:
        """``size`` distinct styles: ``start`` (a look-alike's model) or a random one, then styles each derived from
        an earlier one by changing one attribute."""
        styles = start[:size] or [{"category": category, **{k: self.value(k, category) for k in ATTRIBUTE_KEYS}}]
        for _ in range(50 * size):
            if len(styles) == size:
                break
            base = self.rng.choice(styles)
            key = self.rng.choice(("colour", "colour", "pattern", "length"))
            candidate = {**base, key: self.value(key, category, exclude=base[key])}
            if candidate not in styles:
                styles.append(candidate)
        return styles


def _jitter(rgb: RGB, cfg: WorldConfig, rng: random.Random) -> RGB:
    """The product's exact colour: its named colour moved in hue and tone (the finest part of the signature)."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    h = (h + rng.uniform(-cfg.hue_jitter, cfg.hue_jitter) / 360) % 1.0
    s = min(1.0, max(0.0, s * (1 + rng.uniform(-cfg.tone_jitter, cfg.tone_jitter))))
    v = min(1.0, max(0.0, v * (1 + rng.uniform(-cfg.tone_jitter, cfg.tone_jitter))))
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _family_sizes(cfg: WorldConfig, rng: random.Random) -> list[int]:
    """Family sizes summing to ``num_products``; the last family absorbs a remainder too small to stand alone."""
    sizes: list[int] = []
    remaining = cfg.num_products
    while remaining > 0:
        size = rng.randint(*cfg.family_size)
        if remaining - size < cfg.family_size[0]:
            size = remaining
        sizes.append(size)
        remaining -= size
    return sizes


def _assign_splits(categories: list[str], cfg: WorldConfig, rng: random.Random) -> list[str]:
    """Split families (so products and synth-cir pairs never cross splits), stratified by super-category."""
    splits = ["train"] * len(categories)
    by_super: dict[str, list[int]] = {}
    for i, category in enumerate(categories):
        by_super.setdefault(CATEGORY_BY_NAME[category].super_category, []).append(i)
    for members in by_super.values():
        rng.shuffle(members)
        n_val = max(1, round(cfg.split_fractions[1] * len(members)))
        n_test = max(1, round(cfg.split_fractions[2] * len(members)))
        for i in members[:n_val]:
            splits[i] = "val"
        for i in members[n_val : n_val + n_test]:
            splits[i] = "test"
    return splits


def build_catalogue(cfg: WorldConfig, seed: int) -> list[Product]:
    """Every product of the world, in a deterministic order (product index = position)."""
    rng = random.Random(f"fashion-bench/catalogue/{seed}")
    sampler = _StyleSampler(cfg, rng)
    sizes = _family_sizes(cfg, rng)
    order = [c.name for c in CATEGORIES]
    categories = [order[i % len(order)] for i in range(len(sizes))]  # balanced: every category has families
    rng.shuffle(categories)
    splits = _assign_splits(categories, cfg, rng)
    products: list[Product] = []
    models: dict[tuple[str, str], list[list[dict[str, str]]]] = {}  # (category, split) -> styles of its families
    for f, (size, category, split) in enumerate(zip(sizes, categories, splits)):
        signature = _signature(category, rng)
        earlier = models.setdefault((category, split), [])
        start = rng.choice(earlier) if earlier and rng.random() < cfg.lookalike_fraction else []
        styles = sampler.family_styles(category, size, start)
        earlier.append(styles)
        for style in styles:
            products.append(_product(len(products), f"f{f:05d}", split, signature, style, cfg, rng))
    products += _distractors(products, cfg, seed)
    for product in products:
        _write_texts(product, cfg, seed)
    return products


def _product(
    index: int, family: str, split: str, signature: Signature, style: dict[str, str], cfg: WorldConfig,
    rng: random.Random, distractor: bool = False,
) -> Product:
    return Product(
        product_id=f"p{index:06d}", index=index, family=family, split=split, signature=signature,
        main_rgb=_jitter(COLOUR_BY_NAME[style["colour"]].rgb, cfg, rng), phase=(rng.random(), rng.random()),
        category=style["category"], colour=style["colour"], pattern=style["pattern"], length=style["length"],
        distractor=distractor,
    )


def _distractors(products: list[Product], cfg: WorldConfig, seed: int) -> list[Product]:
    """``cir_distractors`` copies of every validation / test product's style, each under a signature of its own.

    They come after the catalogue's products and draw from their own random stream, so the training products
    (indices, signatures, images) do not depend on how many there are.
    """
    rng = random.Random(f"fashion-bench/distractors/{seed}")
    families = len({p.family for p in products})
    out: list[Product] = []
    for product in (p for p in products if p.split != "train"):
        for _ in range(cfg.cir_distractors):
            index, family = len(products) + len(out), f"f{families + len(out):05d}"
            signature = _signature(product.category, rng)
            out.append(_product(index, family, product.split, signature, product.style, cfg, rng, distractor=True))
    return out


def _write_texts(product: Product, cfg: WorldConfig, seed: int) -> None:
    rng = random.Random(f"fashion-bench/text/{seed}/{product.product_id}")
    describer = Describer(product.style, product.emblem(), rng)
    clean = product_texts(describer, rng.randint(*cfg.texts_per_item), cfg.emblem_text_prob)
    product.query_text = paraphrase(describer, clean, cfg.emblem_text_prob)
    product.texts = [add_noise(text, cfg.caption_noise, rng) for text in clean]


def secondary_rgb(product: Product) -> RGB:
    """The pattern's second colour: the main colour pushed towards white (dark garments) or black (light ones)."""
    r, g, b = product.main_rgb
    luminance = (0.299 * r + 0.587 * g + 0.114 * b) / 255
    target = 255 if luminance < 0.55 else 0
    a = product.signature.contrast
    return tuple(round(c + a * (target - c)) for c in product.main_rgb)  # type: ignore[return-value]


def concept_phrases(product: Product) -> list[str]:
    """The product's concept chain, most specific first ("red striped long sleeve shirt" ... "tops")."""
    pattern = PATTERN_BY_NAME[product.pattern].adjectives[0]
    length_cat = f"{product.length} {product.category}"
    style = f"{pattern} {length_cat}"
    return [f"{product.colour} {style}", style, length_cat, product.category, product.super_category]


def concept_edges(products: list[Product]) -> list[list[str]]:
    """[child, parent] edges of the ground-truth concept tree (root: ``ROOT_CONCEPT``), sorted."""
    parent: dict[str, str] = {}
    for product in products:
        chain = [*concept_phrases(product), ROOT_CONCEPT]
        for child, up in zip(chain, chain[1:]):
            parent[child] = up
    for category in CATEGORIES:
        parent.setdefault(category.name, category.super_category)
        parent.setdefault(category.super_category, ROOT_CONCEPT)
    return sorted([child, up] for child, up in parent.items())
