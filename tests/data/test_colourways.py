"""synth-id-colourways: synth-id relabelled by colourway family (fashion_bench/data/synthetic/colourways.py)."""

from __future__ import annotations

import pytest

from fashion_bench.data.adapters import open_configured
from fashion_bench.data.schema import DataError, Item, Query, Split
from fashion_bench.data.synthetic.colourways import colourway_split


@pytest.fixture(scope="module")
def loaders(tiny_world):
    _, _, by_product = open_configured("synth-id", None, adapter_args={"world_dir": str(tiny_world)})
    _, _, by_family = open_configured("synth-id-colourways", None, adapter_args={"world_dir": str(tiny_world)})
    return by_product, by_family


@pytest.mark.parametrize("name", ["train", "val", "test"])
def test_same_images_identities_are_families(loaders, name):
    product_split, family_split = (load(name) for load in loaders)
    assert family_split.gallery == product_split.gallery
    assert [q.query_id for q in family_split.queries] == [q.query_id for q in product_split.queries]
    for item_id in family_split.gallery:
        assert family_split.items[item_id].identity == product_split.items[item_id].attributes["family"]
    assert len({family_split.items[i].identity for i in family_split.gallery}) < len(
        {product_split.items[i].identity for i in product_split.gallery}
    )


def test_positives_span_the_family_colourways(loaders):
    product_split, family_split = (load("test") for load in loaders)
    items = family_split.items
    for product_query, query in zip(product_split.queries, family_split.queries):
        family = items[query.image].identity
        assert set(product_query.positives) <= set(query.positives)
        assert set(query.positives) == {g for g in family_split.gallery if items[g].identity == family}
    assert any(len({items[p].attributes["colour"] for p in q.positives}) > 1 for q in family_split.queries)


def test_item_without_family_is_named():
    item = Item(item_id="a", image="images/a.jpg", identity="p1", domain="shop")
    split = Split(name="test", items={"a": item}, gallery=["a"], queries=[Query(query_id="q", image="a", positives=["a"])])
    with pytest.raises(DataError, match="synth-id/test: item 'a' has no 'family' attribute"):
        colourway_split(split)
