"""Fashion200k under the TIRG protocol (Vo et al., CVPR 2019): composed retrieval with templated text.

Expected layout under the root::

    labels/<dress|jacket|pants|skirt|top>_<train|test>_detect_all.txt   path <TAB> detection score <TAB> caption
    test_queries.txt                                                   "<source path> <target path>" per line
    women/...                                                          the images, at the label files' paths

The modification text of a (source, target) pair is ``replace <a> with <b>``: ``a`` is the source caption's first
word absent from the target caption, ``b`` the target caption's first word absent from the source caption.

* ``test``: the queries of ``test_queries.txt``; the gallery is every test image; a retrieved image is a hit when
  its caption equals the target's, so the positives are all test images carrying the target caption; the source
  image is removed from its ranking (protocol ``fashion200k``, R@1/5/10/50).
* ``train``: TIRG draws its training pairs at random among images whose captions become equal when one word
  is dropped from each (captions sharing a "parent"); here ``triplets_per_image`` such pairs are drawn once per
  source image with a seeded generator, so the training set is fixed and reproducible.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from pathlib import Path
from typing import Callable

from fashion_bench.data.adapters import DatasetInfo, register
from fashion_bench.data.adapters._files import UniqueIds, read_lines
from fashion_bench.data.schema import DataError, Item, Query, Split, SplitNotFound

log = logging.getLogger(__name__)

TEST_QUERIES = "test_queries.txt"


def modification_text(source_caption: str, target_caption: str) -> str:
    """TIRG's template: ``replace <first source word not in the target> with <first target word not in the
    source>`` (the last word when every word is shared, as TIRG's loop leaves it)."""
    source, target = source_caption.split(), target_caption.split()
    a = next((w for w in source if w not in target), source[-1])
    b = next((w for w in target if w not in source), target[-1])
    return f"replace {a} with {b}"


def fashion200k_loader(
    root: Path, dataset: str, *, image_dir: str = "", triplets_per_image: int = 1, seed: int = 0
) -> Callable[[str], Split]:
    """Args:
    image_dir: the folder the label files' paths are relative to, relative to the root (default: the root).
    triplets_per_image: training pairs drawn per source image whose caption has a one-word sibling.
    seed: seed of that draw.
    """
    if triplets_per_image < 1:
        raise ValueError(f"dataset '{dataset}': triplets_per_image must be >= 1, got {triplets_per_image}")

    def load(split: str) -> Split:
        items = read_labels(root, split, image_dir)
        if split == "train":
            queries = training_triplets(items, triplets_per_image, random.Random(seed))
        else:
            queries = test_queries(root / TEST_QUERIES, items, split)
        result = Split(split, items, list(items), queries)
        result.validate(str(root / "labels"))
        return result

    load.image_root = root  # type: ignore[attr-defined]
    return load


def read_labels(root: Path, split: str, image_dir: str) -> dict[str, Item]:
    """Items of ``labels/*_<split>_detect_all.txt``, keyed by image path; the caption is the item's text."""
    files = sorted((root / "labels").glob(f"*_{split}_detect_all.txt"))
    if not files:
        raise SplitNotFound(f"{root / 'labels'}: no label files '<category>_{split}_detect_all.txt' for split '{split}'")
    items: dict[str, Item] = {}
    first_seen: dict[str, str] = {}
    repeated = 0
    for path in files:
        category = path.name.removesuffix(f"_{split}_detect_all.txt")
        for lineno, line in read_lines(path, split=split):
            where = f"{path}:{lineno}"
            parts = line.split("\t")
            if len(parts) < 3 or not parts[0].strip() or not parts[2].strip():
                raise DataError(f"{where}: expected 'path<TAB>detection score<TAB>caption', got {line[:120]!r}")
            image, caption = parts[0].strip(), " ".join(parts[2].split())
            if image in items:
                if items[image].text != [caption]:
                    raise DataError(
                        f"{where}: image '{image}' repeats {first_seen[image]} with another caption "
                        f"({caption!r} vs {items[image].text[0]!r})"
                    )
                repeated += 1
                continue
            first_seen[image] = where
            items[image] = Item(item_id=image, image=str(Path(image_dir) / image) if image_dir else image,
                                text=[caption], category=category)
    if repeated:
        log.warning("Fashion200k split '%s': %d repeated label lines (same image, same caption) counted once", split, repeated)
    return items


def test_queries(path: Path, items: dict[str, Item], split: str) -> list[Query]:
    """Queries of ``test_queries.txt``; positives = every image of the split with the target's caption. A line
    repeated (same source and target) is an error: it would count one query twice."""
    if not path.is_file():
        raise DataError(f"{path}: not found; the TIRG test queries come with the TIRG code (github.com/google/tirg)")
    by_caption: dict[str, list[str]] = defaultdict(list)
    for item in items.values():
        by_caption[item.text[0]].append(item.item_id)
    queries = []
    pairs = UniqueIds("query")
    for n, (lineno, line) in enumerate(read_lines(path, split=split)):
        where = f"{path}:{lineno}"
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{where}: expected '<source path> <target path>', got {line[:120]!r}")
        source, target = parts
        pairs.add((source, target), where, shown=f"'{source} {target}'")
        for role, name in (("source", source), ("target", target)):
            if name not in items:
                raise DataError(f"{where}: {role} image '{name}' is not in the '{split}' label files")
        source_caption, target_caption = items[source].text[0], items[target].text[0]
        if source_caption == target_caption:
            raise DataError(f"{where}: source and target have the same caption {source_caption!r}")
        queries.append(
            Query(
                query_id=f"{split}-{n}", image=source, text=[modification_text(source_caption, target_caption)],
                positives=by_caption[target_caption], exclude=[source], category=items[source].category,
            )
        )
    return queries


def training_triplets(items: dict[str, Item], per_image: int, rng: random.Random) -> list[Query]:
    """Per source image whose caption shares a parent (the caption minus one word) with another caption:
    ``per_image`` draws of (parent, other caption of that parent, image of that caption)."""
    by_caption: dict[str, list[str]] = defaultdict(list)
    for item in items.values():
        by_caption[item.text[0]].append(item.item_id)
    children: dict[str, set[str]] = defaultdict(set)
    for caption in by_caption:
        for parent in _parents(caption):
            children[parent].add(caption)
    siblings = {
        caption: [sorted(children[p] - {caption}) for p in sorted(_parents(caption)) if len(children[p]) > 1]
        for caption in by_caption
    }
    queries = []
    for item in items.values():
        options = siblings[item.text[0]]
        if not options:
            continue
        for _ in range(per_image):
            target_caption = rng.choice(rng.choice(options))
            target = rng.choice(by_caption[target_caption])
            queries.append(
                Query(
                    query_id=f"train-{len(queries)}", image=item.item_id,
                    text=[modification_text(item.text[0], target_caption)], positives=[target], category=item.category,
                )
            )
    return queries


def _parents(caption: str) -> set[str]:
    words = caption.split()
    return {" ".join(words[:i] + words[i + 1:]) for i in range(len(words))} if len(words) > 1 else set()


register(DatasetInfo("fashion200k", task="cir", protocol="fashion200k", loader=fashion200k_loader))
