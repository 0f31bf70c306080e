"""The canonical items of the world and the splits of synth-t2i, synth-id and synth-cir built from them."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Callable

from fashion_bench.data.schema import Item, Query, Split
from fashion_bench.data.synthetic.catalogue import SPLITS, Product
from fashion_bench.data.synthetic.config import WorldConfig
from fashion_bench.data.synthetic.render import View
from fashion_bench.data.synthetic.text import ATTRIBUTE_KEYS, add_noise, relative_captions

SYNTHETIC_DATASETS = ("synth-t2i", "synth-id", "synth-cir")


def image_path(item_id: str) -> str:
    return f"images/{item_id}.jpg"


def build_items(products: list[Product], views: list[list[View]]) -> dict[str, Item]:
    """Every image of the world as a canonical Item (views[i] belongs to products[i]).

    ``Item.category`` is the super-category, the group a query is evaluated in (synth-cir ranks each query among
    its group's gallery, like FashionIQ); the category name is ``attributes["category"]``.
    """
    items: dict[str, Item] = {}
    for product, product_views in zip(products, views):
        for view in product_views:
            items[view.item_id] = Item(
                item_id=view.item_id, image=image_path(view.item_id), text=list(product.texts),
                identity=product.product_id, domain=view.domain, category=product.super_category,
                attributes={**product.attributes(), "low_quality": view.low_quality},
            )
    return items


class World:
    """Products and items grouped by split, with the lookups the dataset builders need; ``products`` excludes the
    distractors (``distractors``), which only synth-cir's evaluation galleries use."""

    def __init__(self, products: list[Product], items: dict[str, Item], cfg: WorldConfig, seed: int) -> None:
        self.cfg, self.seed = cfg, seed
        self.products = {s: [p for p in products if p.split == s and not p.distractor] for s in SPLITS}
        self.distractors = {s: [p for p in products if p.split == s and p.distractor] for s in SPLITS}
        self.views: dict[str, list[str]] = defaultdict(list)  # product id -> item ids, shop view first (render order)
        for item in items.values():
            self.views[item.identity].append(item.item_id)
        self.split_items = {
            s: {i: items[i] for p in self.products[s] + self.distractors[s] for i in self.views[p.product_id]}
            for s in SPLITS
        }

    def shop(self, product: Product) -> str:
        return self.views[product.product_id][0]

    def live(self, product: Product) -> list[str]:
        return self.views[product.product_id][1:]

    def rng(self, dataset: str, split: str) -> random.Random:
        return random.Random(f"fashion-bench/{dataset}/{self.seed}/{split}")

    def split(self, name: str, gallery: list[str], queries: list[Query]) -> Split:
        return Split(name=name, items=self.split_items[name], gallery=gallery, queries=queries)


def t2i_split(world: World, split: str) -> Split:
    """Train: every image with its product's texts. Val / test: one held-out paraphrase per product -> its shop image."""
    products = world.products[split]
    if split == "train":
        return world.split(split, [i for p in products for i in world.views[p.product_id]], [])
    queries = [
        Query(query_id=f"t2i-{p.product_id}", text=[p.query_text], positives=[world.shop(p)], category=p.super_category,
              group=p.family)
        for p in products
    ]
    return world.split(split, [world.shop(p) for p in products], queries)


def id_split(world: World, split: str) -> Split:
    """Train: every image with its identity. Val / test: live views query the shop images and the other live views."""
    products = world.products[split]
    if split == "train":
        return world.split(split, [i for p in products for i in world.views[p.product_id]], [])
    k = world.cfg.id_queries_per_product
    gallery = [i for p in products for i in [world.shop(p), *world.live(p)[k:]]]
    queries = [
        Query(query_id=f"id-{live}", image=live, positives=[world.shop(p), *world.live(p)[k:]],
              category=p.super_category, group=p.family)
        for p in products
        for live in world.live(p)[:k]
    ]
    return world.split(split, gallery, queries)


def _attribute_changes(a: Product, b: Product) -> int:
    return sum(a.style[key] != b.style[key] for key in ATTRIBUTE_KEYS)


def cir_split(world: World, split: str) -> Split:
    """FashionIQ-style triplets within a family (same garment model, one or two attributes changed).

    Val / test: up to ``cir_eval_per_product`` queries per reference product (one per target); train: up to
    ``cir_train_per_product`` per reference, with caption noise. The training triplets do not depend on
    ``cir_eval_per_product`` (each split has its own random stream). The gallery is the split's shop images,
    distractors included, and the reference is not excluded (FashionIQ's protocol). Every query's ``group`` is the
    family: a family's queries share references and targets, so the bootstrap draws them together.
    """
    rng = world.rng("synth-cir", split)
    products = world.products[split]
    family: dict[str, list[Product]] = defaultdict(list)
    for product in products:
        family[product.family].append(product)
    per_reference = world.cfg.cir_train_per_product if split == "train" else world.cfg.cir_eval_per_product
    noise_rate = world.cfg.caption_noise if split == "train" else 0.0
    queries = []
    for reference in products:
        candidates = [t for t in family[reference.family] if 1 <= _attribute_changes(reference, t) <= 2]
        for target in rng.sample(candidates, min(per_reference, len(candidates))):
            captions = relative_captions(reference.style, target.style, rng)
            queries.append(Query(
                query_id=f"cir-{reference.product_id}-{target.product_id}", image=world.shop(reference),
                text=[add_noise(c, noise_rate, rng) for c in captions], positives=[world.shop(target)],
                category=reference.super_category, group=reference.family,
            ))
    return world.split(split, [world.shop(p) for p in products + world.distractors[split]], queries)


BUILDERS: dict[str, Callable[[World, str], Split]] = {"synth-t2i": t2i_split, "synth-id": id_split, "synth-cir": cir_split}
