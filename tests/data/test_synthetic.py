"""The synthetic world: determinism, splits, the three datasets' protocols, the concept tree, ensure_world."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from fashion_bench.data.schema import read_items, read_split
from fashion_bench.data.synthetic import PRESETS, SYNTHETIC_DATASETS, ensure_world, generate_world, is_current
from fashion_bench.data.synthetic import world as world_module
from fashion_bench.data.synthetic.text import length_direction, surface_forms
from fashion_bench.data.synthetic.vocab import CATEGORIES, PATTERN_BY_NAME, ROOT_CONCEPT, SUPER_CATEGORIES

SPLITS = ("train", "val", "test")
TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("synth") / "tiny", "tiny", seed=0, progress=False)


@pytest.fixture(scope="module")
def items(world):
    return read_items(world)


def _records(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "items.jsonl").read_text().splitlines()]


def _manifest_digests(root: Path) -> dict[str, str]:
    paths = [root / "items.jsonl", *sorted(root.glob("synth-*/*/*")), *sorted((root / "images").iterdir())]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_same_seed_same_files_with_a_process_pool(world, tmp_path, monkeypatch):
    monkeypatch.setattr(world_module, "_POOL_MIN_PRODUCTS", 0)
    again = generate_world(tmp_path / "again", "tiny", seed=0, workers=2, progress=False)
    assert _manifest_digests(again) == _manifest_digests(world)


def test_other_seed_other_world(world, tmp_path):
    other = generate_world(tmp_path / "other", "tiny", seed=1, progress=False)
    assert (other / "items.jsonl").read_bytes() != (world / "items.jsonl").read_bytes()


def test_unknown_preset_and_knob_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        generate_world(tmp_path / "w", "huge")
    with pytest.raises(ValueError, match="unknown world knob"):
        generate_world(tmp_path / "w", "tiny", clutterr=0.5)
    assert not any(tmp_path.iterdir())


def test_products_views_and_splits(world, items):
    record = json.loads((world / "world.json").read_text())
    assert record["preset"] == "tiny" and record["seed"] == 0 and (world / ".complete").exists()
    counts = record["counts"]["splits"]
    distractors = sum(c["distractors"] for c in counts.values())
    assert counts["train"]["distractors"] == 0 and distractors == TINY.cir_distractors * (
        counts["val"]["products"] + counts["test"]["products"]
    ) > 0
    assert len(items) == TINY.num_products * (1 + TINY.live_views) + distractors
    split_of_item = {r["item_id"]: r["split"] for r in _records(world)}
    views: dict[str, Counter] = defaultdict(Counter)
    product_splits: dict[str, set[str]] = defaultdict(set)
    family_splits: dict[str, set[str]] = defaultdict(set)
    for item in items.values():
        views[item.identity][item.domain] += 1
        product_splits[item.identity].add(split_of_item[item.item_id])
        family_splits[item.attributes["family"]].add(split_of_item[item.item_id])
        assert item.text and item.category == item.attributes["super_category"]
    assert len(views) == TINY.num_products + distractors
    assert Counter(v["live"] for v in views.values()) == {TINY.live_views: TINY.num_products, 0: distractors}
    assert all(v["shop"] == 1 for v in views.values())
    assert all(len(s) == 1 for s in product_splits.values()) and all(len(s) == 1 for s in family_splits.values())
    per_split = Counter(next(iter(s)) for i, s in product_splits.items() if views[i]["live"])
    assert set(per_split) == set(SPLITS) and per_split["train"] > per_split["val"]
    assert {s: c["products"] for s, c in counts.items()} == dict(per_split)
    supers_per_split = defaultdict(set)
    for item in items.values():
        supers_per_split[split_of_item[item.item_id]].add(item.attributes["super_category"])
    assert all(supers == set(SUPER_CATEGORIES) for supers in supers_per_split.values())


@pytest.mark.parametrize("dataset", SYNTHETIC_DATASETS)
def test_every_split_reads_and_validates(world, items, dataset):
    for split_name in SPLITS:
        split = read_split(world, dataset, split_name, items=items)
        ids = [q.query_id for q in split.queries]
        assert len(ids) == len(set(ids))
        assert len(split.gallery) == len(set(split.gallery)) > 0
        split_products = {split.items[i].identity for i in split.gallery}
        other = {r["identity"] for r in _records(world) if r["split"] != split_name}
        assert not split_products & other
        if split_name != "train" or dataset == "synth-cir":
            assert split.queries


def test_t2i_queries_are_held_out_paraphrases(world, items):
    for split_name in ("val", "test"):
        split = read_split(world, "synth-t2i", split_name, items=items)
        assert all(items[i].domain == "shop" for i in split.gallery)
        for q in split.queries:
            (target,) = q.positives
            assert q.image is None and len(q.text) == 1 and q.text[0] not in items[target].text


def test_id_queries_have_live_and_shop_positives(world, items):
    for split_name in ("val", "test"):
        split = read_split(world, "synth-id", split_name, items=items)
        assert split.queries
        for q in split.queries:
            query = items[q.image]
            assert query.domain == "live" and q.image not in split.gallery and not q.exclude
            assert {items[i].identity for i in q.positives} == {query.identity}
            assert {items[i].domain for i in q.positives} == {"live", "shop"}
            assert set(q.positives) == {i for i in split.gallery if items[i].identity == query.identity}
    train = read_split(world, "synth-id", "train", items=items)
    per_identity = Counter(items[i].identity for i in train.gallery)
    assert min(per_identity.values()) >= 4


def _mentions(caption: str, key: str, old: str, new: str, category: str) -> bool:
    if any(form in caption for form in surface_forms(key, new, category)):
        return True
    return key == "length" and length_direction(category, old, new) in caption


def test_cir_targets_differ_in_one_or_two_attributes_named_by_the_captions(world, items):
    categories = set()
    for split_name in SPLITS:
        split = read_split(world, "synth-cir", split_name, items=items)
        assert all(items[i].domain == "shop" for i in split.gallery)
        for q in split.queries:
            ref, (target,) = items[q.image].attributes, q.positives
            tgt = items[target].attributes
            assert ref["family"] == tgt["family"] and ref["category"] == tgt["category"]
            changed = [k for k in ("colour", "pattern", "length") if ref[k] != tgt[k]]
            assert 1 <= len(changed) <= 2
            assert len(q.text) == 2 and q.category == ref["super_category"]
            categories.add(q.category)
            if split_name != "train":  # training captions carry caption noise
                named = all(_mentions(c, k, ref[k], tgt[k], ref["category"]) for c in q.text for k in changed)
                assert named, (q.text, changed)
    assert categories == set(SUPER_CATEGORIES) and len(categories) == 3


def test_cir_distractors_share_a_target_style_in_its_group_gallery_only(world, items):
    """Distractors stand only in synth-cir's val / test galleries; every query's group gallery holds its
    reference, its target and, for every product, ``cir_distractors`` twins of its style under other signatures."""
    distractors = {i for i, item in items.items() if item.attributes["family"] not in _families_with_live_views(items)}
    for dataset in SYNTHETIC_DATASETS:
        for split_name in SPLITS:
            split = read_split(world, dataset, split_name, items=items)
            in_gallery = distractors & set(split.gallery)
            assert not in_gallery if (dataset != "synth-cir" or split_name == "train") else in_gallery
            assert not distractors & {i for q in split.queries for i in [q.image, *q.positives]}
    for split_name in ("val", "test"):
        split = read_split(world, "synth-cir", split_name, items=items)
        styles = Counter(_style(items[i]) for i in distractors & set(split.gallery))
        products = [items[i] for i in split.gallery if i not in distractors]
        assert styles == Counter({s: TINY.cir_distractors * n for s, n in Counter(map(_style, products)).items()})
        for q in split.queries:
            assert items[q.image].category == items[q.positives[0]].category == q.category


def _families_with_live_views(items) -> set[str]:
    return {item.attributes["family"] for item in items.values() if item.domain == "live"}


def _style(item) -> tuple[str, ...]:
    return tuple(item.attributes[k] for k in ("category", "colour", "pattern", "length"))


def test_distractors_leave_the_training_data_unchanged(world, tmp_path):
    """Pretraining and fine-tunes see the same data whatever ``cir_distractors`` is (it is calibrated alone)."""
    bare = generate_world(tmp_path / "bare", "tiny", seed=0, progress=False, cir_distractors=0)
    train = [r["item_id"] for r in _records(world) if r["split"] == "train"]
    digests, bare_digests = _manifest_digests(world), _manifest_digests(bare)
    splits = [f"{d}/train/{f}" for d in SYNTHETIC_DATASETS for f in ("gallery.txt", "queries.jsonl")]
    for name in [f"images/{i}.jpg" for i in train] + splits:
        assert digests[name] == bare_digests[name], name


def test_more_cir_evaluation_queries_per_reference_leave_training_unchanged(world, items, tmp_path):
    """``cir_eval_per_product`` adds val / test queries (distinct targets per reference); training is untouched."""
    more = generate_world(tmp_path / "more", "tiny", seed=0, progress=False, cir_eval_per_product=3)
    more_items = read_items(more)
    train = [f"synth-cir/train/{f}" for f in ("gallery.txt", "queries.jsonl")]
    digests, more_digests = _manifest_digests(world), _manifest_digests(more)
    assert all(digests[name] == more_digests[name] for name in train)
    for split_name in ("val", "test"):
        one = read_split(world, "synth-cir", split_name, items=items).queries
        queries = read_split(more, "synth-cir", split_name, items=more_items).queries
        per_reference = Counter(q.image for q in queries)
        assert max(per_reference.values()) <= 3 and len(queries) > len(one)
        assert set(per_reference) == {q.image for q in one}
        assert len({(q.image, q.positives[0]) for q in queries}) == len(queries)


def test_every_evaluation_query_is_grouped_by_its_product_family(world, items):
    """The bootstrap's resampling unit: a family's queries share references, targets and look-alikes."""
    for dataset in SYNTHETIC_DATASETS:
        for split_name in ("val", "test"):
            for q in read_split(world, dataset, split_name, items=items).queries:
                source = q.image if q.image is not None else q.positives[0]
                assert q.group == items[source].attributes["family"], (dataset, q.query_id)


def test_cir_queries_per_reference_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="cir_eval_per_product=0 must be >= 1"):
        generate_world(tmp_path / "w", "tiny", cir_eval_per_product=0)


def test_concept_hierarchy_is_a_tree_over_all_categories(world, items):
    edges = json.loads((world / "world.json").read_text())["concepts"]["edges"]
    parent = dict(edges)
    assert len(parent) == len(edges), "a concept with two parents"
    for concept in parent:
        seen = {concept}
        while concept != ROOT_CONCEPT:
            concept = parent[concept]
            assert concept not in seen, "cycle"
            seen.add(concept)
    for category in CATEGORIES:
        assert parent[category.name] == category.super_category and parent[category.super_category] == ROOT_CONCEPT
    for item in items.values():
        a = item.attributes
        pattern = PATTERN_BY_NAME[a["pattern"]].adjectives[0]
        leaf = f"{a['colour']} {pattern} {a['length']} {a['category']}"
        assert parent[leaf] == f"{pattern} {a['length']} {a['category']}"
        assert parent[parent[leaf]] == f"{a['length']} {a['category']}"


def test_images_decode_at_the_preset_size(world, items):
    for item in items.values():
        with Image.open(world / item.image) as image:
            assert image.size == (TINY.image_size, TINY.image_size) and image.mode == "RGB"


def test_ensure_world_is_idempotent_and_regenerates_stale_worlds(tmp_path, monkeypatch):
    root = ensure_world(tmp_path / "tiny-seed0", "tiny", 0)
    assert is_current(root, "tiny", 0)
    marker = (root / ".complete").stat().st_mtime_ns

    def forbidden(*args, **kwargs):
        raise AssertionError("regenerated a current world")

    monkeypatch.setattr(world_module, "generate_world", forbidden)
    assert ensure_world(root, "tiny", 0) == root
    monkeypatch.undo()
    record = json.loads((root / "world.json").read_text())
    record["config"]["clutter"] = 0.0
    (root / "world.json").write_text(json.dumps(record))
    assert not is_current(root, "tiny", 0)
    ensure_world(root, "tiny", 0)
    assert is_current(root, "tiny", 0) and (root / ".complete").stat().st_mtime_ns != marker
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny-seed0.lock", "tiny-seed0"]


def _ensure(root: str) -> None:
    ensure_world(Path(root), "tiny", 0)


def test_ensure_world_races(tmp_path):
    root = tmp_path / "race"
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_ensure, args=(str(root),)) for _ in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    assert [p.exitcode for p in processes] == [0, 0]
    assert is_current(root, "tiny", 0) and sorted(p.name for p in tmp_path.iterdir()) == [".race.lock", "race"]


def test_generate_world_refuses_to_replace_a_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_world(foreign, "tiny", progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_world_knobs_through_the_data_config_get_a_world_of_their_own(tmp_path):
    from fashion_bench.data.adapters import open_configured

    _, root, load = open_configured("synth-t2i", tmp_path, adapter_args={"knobs": {"image_size": 48}})
    plain = tmp_path / "tiny-seed0"
    worlds = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert len(worlds) == 1 and worlds[0].startswith("tiny-seed0-") and not plain.exists()
    knobbed = tmp_path / worlds[0]
    assert is_current(knobbed, "tiny", 0, image_size=48) and not is_current(knobbed, "tiny", 0)
    item = next(iter(load("train").items.values()))
    with Image.open(knobbed / "images" / Path(item.image).name) as image:
        assert image.size == (48, 48)
    with pytest.raises(ValueError, match=r"unknown world knob\(s\) \['image_sise'\]"):
        open_configured("synth-t2i", tmp_path, adapter_args={"knobs": {"image_sise": 48}})


def test_world_names_follow_the_world_not_the_spelling_of_its_knobs():
    from fashion_bench.data.adapters.canonical import synthetic_world_name

    assert synthetic_world_name("tiny", 0, {"image_size": TINY.image_size}) == synthetic_world_name("tiny", 0) == "tiny-seed0"
    assert synthetic_world_name("tiny", 0, {"clutter": 1}) == synthetic_world_name("tiny", 0, {"clutter": 1.0})
    assert synthetic_world_name("tiny", 0, {"family_size": [2, 4]}) == synthetic_world_name("tiny", 0, {"family_size": (2, 4)})
    assert synthetic_world_name("tiny", 0, {"clutter": 1}) != synthetic_world_name("tiny", 1, {"clutter": 1})


@pytest.mark.parametrize(("args", "message"), [
    ({"knobs": {"image_size": 64.5}}, r"world knob 'image_size' must be int \(like the preset's\), got 64.5"),
    ({"knobs": {"family_size": [2, "5"]}}, r"world knob 'family_size' must be int \(like the preset's\), got '5'"),
    ({"knobs": 400}, r"adapter_args.knobs must map world knobs to values \(e.g. \{image_size: 400\}\), got 400"),
    ({"knobs": {"clutter": 0.1}, "world_dir": "w"}, r"give world_dir \(an existing world\) or knobs"),
])
def test_bad_world_knobs_in_a_data_config_are_errors(tmp_path, args, message):
    from fashion_bench.data.adapters import open_configured

    with pytest.raises(ValueError, match=message):
        open_configured("synth-t2i", tmp_path, adapter_args=args)
    assert not any(p for p in tmp_path.iterdir() if not p.name.startswith("."))
