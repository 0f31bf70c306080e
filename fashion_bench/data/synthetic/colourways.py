"""synth-id-colourways: synth-id's images and splits with one garment model's colourways as ONE identity.

In synth-id every product (one colour, pattern and length) is an identity, so all of an identity's images share
its colour. Real product catalogues often file a product's colour variants under one product code: an identity
then spans large appearance changes and only the garment model's own marks (here the family signature: exact
silhouette, pattern geometry, emblem) are shared. This dataset relabels synth-id by the catalogue's colourway
families (``Item.attributes["family"]``): training identities become families, and a val / test query's
positives are every gallery image of its family, shop images of the other colourways included. Images, queries,
gallery and domains are synth-id's, so the world on disk is the same one (nothing to generate).
"""

from __future__ import annotations

from dataclasses import replace

from fashion_bench.data.schema import DataError, Item, Split


def _family(item: Item, source: str) -> str:
    family = item.attributes.get("family")
    if not isinstance(family, str) or not family:
        raise DataError(f"{source}: item '{item.item_id}' has no 'family' attribute (a synthetic world's items.jsonl needed)")
    return family


def colourway_split(split: Split, source: str = "synth-id") -> Split:
    """``split`` (a synth-id split) with identities = colourway families and family-wide query positives."""
    items = {i: replace(item, identity=_family(item, f"{source}/{split.name}")) for i, item in split.items.items()}
    family_gallery: dict[str, list[str]] = {}
    for item_id in split.gallery:
        family_gallery.setdefault(items[item_id].identity, []).append(item_id)
    queries = [
        replace(q, positives=[g for g in family_gallery[items[q.image].identity] if g not in q.exclude])
        for q in split.queries  # synth-id queries are live views: q.image is set
    ]
    result = Split(name=split.name, items=items, gallery=list(split.gallery), queries=queries)
    result.validate(f"synth-id-colourways/{split.name}")
    return result

