"""Generating a world on disk: atomic (temporary folder, then rename) and safe when processes race."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from fashion_bench.data.schema import Split, item_record, write_jsonl, write_split
from fashion_bench.data.synthetic.catalogue import SPLITS, Product, build_catalogue, concept_edges
from fashion_bench.data.synthetic.config import GENERATOR_VERSION, PRESETS, WorldConfig
from fashion_bench.data.synthetic.datasets import BUILDERS, World, build_items
from fashion_bench.data.synthetic.render import View, render_product
from fashion_bench.data.synthetic.vocab import CATEGORIES, COLOURS, EMBLEM_SHAPES, PATTERNS, ROOT_CONCEPT

COMPLETE = ".complete"
_POOL_MIN_PRODUCTS = 200  # below this a process pool costs more than it saves


def world_config(preset: str, **overrides: Any) -> WorldConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset '{preset}'; choose from {sorted(PRESETS)}")
    return PRESETS[preset].with_overrides(**overrides)


def _render_all(
    products: list[Product], cfg: WorldConfig, seed: int, image_dir: Path, workers: int | None, progress: bool
) -> list[list[View]]:
    """Render every product, in a process pool for large worlds; results come back in product order."""
    render = partial(render_product, cfg=cfg, seed=seed, image_dir=image_dir)
    workers = min(workers or os.cpu_count() or 1, len(products))
    bar = tqdm(total=len(products), desc="rendering products", unit="product", disable=not progress)
    views: list[list[View]] = []

    def collect(results: Iterator[list[View]]) -> None:
        for result in results:
            views.append(result)
            bar.update()

    if workers > 1 and len(products) >= _POOL_MIN_PRODUCTS:
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with context.Pool(workers) as pool:
            collect(pool.imap(render, products, chunksize=max(1, len(products) // (workers * 20))))
    else:
        collect(map(render, products))
    bar.close()
    return views


def _counts(world: World, splits: dict[str, dict[str, Split]]) -> dict[str, Any]:
    per_split = {}
    for s in SPLITS:
        domains = Counter(item.domain for item in world.split_items[s].values())
        per_split[s] = {
            "products": len(world.products[s]),
            "distractors": len(world.distractors[s]),
            "families": len({p.family for p in world.products[s]}),
            "items": len(world.split_items[s]),
            "shop": domains["shop"],
            "live": domains["live"],
            "low_quality": sum(bool(i.attributes["low_quality"]) for i in world.split_items[s].values()),
        }
    datasets = {
        name: {s: {"gallery": len(split.gallery), "queries": len(split.queries)} for s, split in by_split.items()}
        for name, by_split in splits.items()
    }
    return {"splits": per_split, "datasets": datasets}


def _vocabulary() -> dict[str, Any]:
    return {
        "categories": {
            c.name: {"super_category": c.super_category, "lengths": [spec.name for spec in c.lengths]} for c in CATEGORIES
        },
        "colours": {c.name: list(c.rgb) for c in COLOURS},
        "patterns": [p.name for p in PATTERNS],
        "emblem_shapes": list(EMBLEM_SHAPES),
    }


def _world_record(preset: str, seed: int, cfg: WorldConfig) -> dict[str, Any]:
    """The fields that identify a world: a cached world is reused only when all of them match."""
    return {"preset": preset, "seed": seed, "generator_version": GENERATOR_VERSION, "config": cfg.to_dict()}


def _write_world(tmp: Path, preset: str, seed: int, cfg: WorldConfig, workers: int | None, progress: bool) -> None:
    products = build_catalogue(cfg, seed)
    image_dir = tmp / "images"
    image_dir.mkdir(parents=True)
    views = _render_all(products, cfg, seed, image_dir, workers, progress)
    items = build_items(products, views)
    world = World(products, items, cfg, seed)
    write_jsonl(tmp / "items.jsonl", (item_record(items[i], p.split) for p in products for i in world.views[p.product_id]))
    splits = {name: {s: build(world, s) for s in SPLITS} for name, build in BUILDERS.items()}
    for name, by_split in splits.items():
        for split in by_split.values():
            split.validate(f"{name}/{split.name}")
            write_split(tmp, name, split)
    record = {
        "name": "fashion-bench synthetic world",
        **_world_record(preset, seed, cfg),
        "counts": _counts(world, splits),
        "vocabulary": _vocabulary(),
        "concepts": {"root": ROOT_CONCEPT, "edges": concept_edges(products)},
    }
    (tmp / "world.json").write_text(json.dumps(record, indent=1) + "\n")
    (tmp / COMPLETE).write_text(f"{GENERATOR_VERSION}\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers(out: Path) -> None:
    """Temporary folders of generations whose process died (``<out>.tmp-<pid>``, ``<out>.old-<pid>``)."""
    for path in out.parent.glob(f"{out.name}.*-*"):
        kind, _, pid = path.name[len(out.name) + 1 :].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished world into place; an existing folder is replaced only if it holds a world (or nothing)."""
    if out.exists():
        if not out.is_dir() or not ((out / "world.json").exists() or (out / COMPLETE).exists() or not any(out.iterdir())):
            raise FileExistsError(f"{out} exists and is not a synthetic world; refusing to replace it")
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def generate_world(
    out: Path, preset: str = "tiny", seed: int = 0, *, workers: int | None = None, progress: bool = True, **overrides: Any
) -> Path:
    """Generate the synthetic world ``preset`` (knobs overridable) into ``out``; returns ``out``.

    The world is written into ``<out>.tmp-<pid>`` and renamed into place when complete, so readers never see a
    partial world. The same preset, knobs and seed give identical files whatever the number of ``workers``.
    """
    cfg = world_config(preset, **overrides)
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_world(tmp, preset, seed, cfg, workers, progress)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def is_current(root: Path, preset: str, seed: int = 0, **overrides: Any) -> bool:
    """Whether ``root`` holds a finished world of this preset, knobs and seed made by this generator version."""
    try:
        record = json.loads((Path(root) / "world.json").read_text())
    except (OSError, ValueError):
        return False
    expected = _world_record(preset, seed, world_config(preset, **overrides))
    return (Path(root) / COMPLETE).exists() and all(record.get(k) == v for k, v in expected.items())


def ensure_world(root: Path, preset: str, seed: int = 0, **overrides: Any) -> Path:
    """Generate the world (``preset``, knobs overridden by ``overrides``) into ``root`` unless a current one is
    there; concurrent callers wait on a file lock.

    A world made with other knobs or by another generator version is regenerated.
    """
    import fcntl

    root = Path(root).absolute()
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(f".{root.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not is_current(root, preset, seed, **overrides):
                generate_world(root, preset, seed, **overrides)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return root
