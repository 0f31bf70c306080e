"""The canonical on-disk layout (see ``schema.py``), and the synthetic datasets generated into it on demand."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from fashion_bench.data.adapters import DatasetInfo, register
from fashion_bench.data.schema import Split, read_items, read_split


def canonical_loader(root: Path, dataset: str, *, subdir: str | None = None) -> Callable[[str], Split]:
    """Splits of ``root/<subdir or dataset>/<split>``; items.jsonl is parsed once and shared by the splits."""
    cache: dict[str, object] = {}

    def load(split: str) -> Split:
        if "items" not in cache:
            cache["items"] = read_items(root)
        return read_split(root, subdir or dataset, split, items=cache["items"])  # type: ignore[arg-type]

    load.image_root = root  # type: ignore[attr-defined]
    return load


def default_synthetic_root() -> str:
    return os.environ.get("FASHION_BENCH_DATA", str(Path.home() / ".cache" / "fashion_bench" / "synthetic"))


def synthetic_world_name(preset: str, seed: int, knobs: dict[str, Any] | None = None) -> str:
    """``<preset>-seed<seed>``, plus a digest of the knobs that differ from the preset's when any do: each world
    has one folder, whatever overrides (or spellings of a value: 1 or 1.0) produced it."""
    from fashion_bench.data.synthetic.world import world_config

    if knobs is not None and not isinstance(knobs, dict):
        raise ValueError(f"adapter_args.knobs must map world knobs to values (e.g. {{image_size: 400}}), got {knobs!r}")
    name = f"{preset}-seed{seed}"
    preset_knobs = world_config(preset).to_dict()
    changed = {k: v for k, v in world_config(preset, **(knobs or {})).to_dict().items() if v != preset_knobs[k]}
    if not changed:
        return name
    return f"{name}-{hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]}"


def synthetic_loader(
    root: Path, dataset: str, *, preset: str = "tiny", seed: int = 0, world_dir: str | None = None,
    knobs: dict[str, Any] | None = None,
) -> Callable[[str], Split]:
    """Generate the synthetic world under ``root/<preset>-seed<seed>`` on first use, then read it.

    ``knobs`` overrides the preset's world knobs (``WorldConfig``; e.g. ``{image_size: 400}`` for catalogue-size
    photos); such a world lives in a folder of its own, named by a digest of the overrides.
    """
    from fashion_bench.data.synthetic import ensure_world

    if world_dir and knobs:
        raise ValueError("adapter_args: give world_dir (an existing world) or knobs (a world generated under --data.root), "
                         "not both")
    world = Path(world_dir) if world_dir else root / synthetic_world_name(preset, seed, knobs)
    ensure_world(world, preset=preset, seed=seed, **(knobs or {}))  # regenerates a world of other knobs or version
    return canonical_loader(world, dataset)


def synthetic_colourways_loader(
    root: Path, dataset: str, *, preset: str = "tiny", seed: int = 0, world_dir: str | None = None,
    knobs: dict[str, Any] | None = None,
) -> Callable[[str], Split]:
    """synth-id's world and splits with each colourway family as one identity (``synthetic/colourways.py``)."""
    from fashion_bench.data.synthetic.colourways import colourway_split

    load_id = synthetic_loader(root, "synth-id", preset=preset, seed=seed, world_dir=world_dir, knobs=knobs)

    def load(split: str) -> Split:
        return colourway_split(load_id(split))

    load.image_root = load_id.image_root  # type: ignore[attr-defined]
    return load


register(DatasetInfo("canonical", task="t2i", protocol="t2i", loader=canonical_loader))
for _name, _task, _protocol in (("synth-t2i", "t2i", "t2i"), ("synth-id", "id", "id-intra-cross"), ("synth-cir", "cir", "fashioniq")):
    register(DatasetInfo(_name, task=_task, protocol=_protocol, loader=synthetic_loader, default_root=default_synthetic_root()))
register(DatasetInfo(
    "synth-id-colourways", task="id", protocol="id-intra-cross", loader=synthetic_colourways_loader,
    default_root=default_synthetic_root(),
))
