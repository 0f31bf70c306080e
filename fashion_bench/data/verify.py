"""``fashion-bench data verify``: check a dataset on disk before training or evaluating on it.

Loads each split the data config names (train / val / test, those present on disk) through the dataset's
adapter, prints per split the numbers of queries (training triplets for ``cir`` train splits), gallery images
and images in all, per category where queries have one, and as warnings the queries kept with an empty caption
(the complete FashionIQ and CIRR files hold some), then checks every image: present and with a readable
header, or fully decoded with ``--decode``. Malformed annotation files and records, and duplicate ids, are
reported with the adapter's message (file and record). Exits non-zero on any error; with ``skip_missing_images: true`` in the
config missing or unreadable images are warnings, as fit / validate then skip and count them.

Light on purpose: no Lightning and no torch import, so it runs in seconds on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from fashion_bench.data.schema import DataError, Split, SplitNotFound

SPLIT_ROLES = (("train", "train_split"), ("val", "val_split"), ("test", "test_split"))
OPEN_KEYS = ("task", "synthetic_preset", "synthetic_seed", "adapter_args")
LISTED = 10  # problems named in full per kind; the rest are counted


@dataclass
class Report:
    """What ``verify`` found; ``split_warnings`` counts per split what is kept but worth knowing (e.g.
    ``{"val": {"empty_captions": 3}}``), each count also being one line of ``warnings``."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    split_warnings: dict[str, dict[str, int]] = field(default_factory=dict)


TEXT_WARNINGS = {
    "empty_captions": "queries with an empty caption (kept: it adds nothing to the joined text)",
    "no_text": "queries without a target and with no text at all (kept: ranked by their reference image alone)",
}


def text_warnings(split: Split) -> dict[str, int]:
    """Counts of the queries whose published text has an empty caption, and of those whose every caption is
    empty (adapters accept these only in splits without targets); zero counts are left out."""
    counts = {
        "empty_captions": sum(1 for q in split.queries if any(not t.strip() for t in q.text)),
        "no_text": sum(1 for q in split.queries if q.text and not any(t.strip() for t in q.text)),
    }
    return {key: n for key, n in counts.items() if n}


def load_data_config(path: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The data section of a data config (``configs/data/*.yaml``) or of an experiment config (its ``data:``
    entry, inline or a path relative to the config file), with dotted overrides applied."""
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"{path}: cannot read the config ({err})") from None
    if "data" in config:
        data = config["data"]
        if isinstance(data, str):
            return load_data_config(path.parent / data, overrides)
        config = data
    if not isinstance(config, dict) or "dataset" not in config:
        raise DataError(f"{path}: not a data config (expected a mapping with a 'dataset' key)")
    for dotted, value in overrides.items():
        node = config
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise DataError(f"--data.{dotted}: '{key}' is not a mapping in {path}")
        node[last] = value
    return config


def split_names(config: dict[str, Any]) -> dict[str, list[str]]:
    """Split name -> the roles it serves (a dataset may evaluate val and test on one split)."""
    names: dict[str, list[str]] = {}
    for role, key in SPLIT_ROLES:
        names.setdefault(str(config.get(key) or role), []).append(role)
    return names


def verify(config: dict[str, Any], *, decode: bool = False, progress: bool = True, out: TextIO | None = None) -> Report:
    """Check the dataset a data config describes; prints (to ``out``, default stdout) as it goes and returns the
    errors and warnings."""
    from fashion_bench.data.adapters import open_configured
    from fashion_bench.retrieval.protocols import get_protocol

    out = out or sys.stdout
    report = Report()
    kwargs = {k: config[k] for k in OPEN_KEYS if config.get(k) is not None}
    try:
        info, root, load = open_configured(config["dataset"], config.get("root"), **kwargs)
        protocol = get_protocol(config.get("protocol") or info.protocol)
    except (DataError, ValueError) as err:
        report.errors.append(str(err))
        print(f"error: {err}", file=out)
        return report
    task = config.get("task") or info.task
    print(f"dataset '{info.name}' (task {task}, protocol {protocol.name}) at {root}", file=out)
    splits: dict[str, Split] = {}
    for name, roles in split_names(config).items():
        try:
            splits[name] = load(name)
        except SplitNotFound as err:
            print(f"  split '{name}' ({', '.join(roles)}): not present ({err})", file=out)
            continue
        except DataError as err:
            report.errors.append(str(err))
            print(f"  split '{name}' ({', '.join(roles)}): error: {err}", file=out)
            continue
        _print_counts(splits[name], roles, task, protocol.per_category, out)
        _note_text_warnings(splits[name], report, out)
    if not splits and not report.errors:
        report.errors.append(f"{root}: no split of dataset '{info.name}' found ({', '.join(split_names(config))})")
        print(f"error: {report.errors[-1]}", file=out)
    problems, checked = check_images(splits, Path(load.image_root), decode=decode, progress=progress)  # type: ignore[attr-defined]
    target = report.warnings if config.get("skip_missing_images") else report.errors
    for kind, found in problems.items():
        if not found:
            continue
        target.append(f"{len(found)} {kind} images")
        print(f"  {len(found)} {kind} images:", file=out)
        for line in found[:LISTED]:
            print(f"    {line}", file=out)
        if len(found) > LISTED:
            print(f"    ... and {len(found) - LISTED} more", file=out)
    if splits and not any(problems.values()):
        print(f"  images: all {checked} distinct images {'decoded' if decode else 'present with a readable header'}", file=out)
    verdict = "FAILED" if report.errors else "ok"
    print(f"{verdict}: {len(report.errors)} errors, {len(report.warnings)} warnings", file=out)
    return report


def _print_counts(split: Split, roles: list[str], task: str, per_category: bool, out: TextIO) -> None:
    training = roles == ["train"]
    with_targets = sum(1 for q in split.queries if q.positives)
    if training and task == "cir":
        head = f"{len(split.queries)} training triplets"
    elif training:
        head = f"{len(split.gallery)} training images"
    else:
        head = f"{len(split.queries)} queries ({with_targets} with targets)"
    print(
        f"  split '{split.name}' ({', '.join(roles)}): {head}, gallery {len(split.gallery)} images, "
        f"{len(split.items)} images in all",
        file=out,
    )
    categories = Counter(q.category for q in split.queries if q.category)
    if per_category and not training:
        gallery = Counter(split.items[i].category for i in split.gallery)
        for category, count in sorted(categories.items()):
            print(f"    {category}: {count} queries, gallery {gallery.get(category, 0)} images", file=out)


def _note_text_warnings(split: Split, report: Report, out: TextIO) -> None:
    counts = text_warnings(split)
    if counts:
        report.split_warnings[split.name] = counts
    for key, n in counts.items():
        report.warnings.append(f"split '{split.name}': {n} {TEXT_WARNINGS[key]}")
        print(f"    warning: {n} {TEXT_WARNINGS[key]}", file=out)


def check_images(
    splits: dict[str, Split], image_root: Path, *, decode: bool, progress: bool
) -> tuple[dict[str, list[str]], int]:
    """(``{"missing": [...], "unreadable": [...]}``, number of images checked): one line per problem naming the
    split, item and path. Each distinct path is checked once."""
    from tqdm.auto import tqdm

    seen: set[object] = set()
    todo: list[tuple[str | bytes, str, str]] = []
    for name, split in splits.items():
        for item_id, item in split.items.items():
            source = item.image if isinstance(item.image, bytes) else _resolve(item.image, image_root)
            key = (name, item_id) if isinstance(source, bytes) else source
            if key not in seen:
                seen.add(key)
                todo.append((source, name, item_id))
    found: dict[str, list[str]] = {"missing": [], "unreadable": []}
    for source, split, item_id in tqdm(todo, desc="checking images", unit="img", disable=not progress, leave=False):
        problem = image_problem(source, decode=decode)
        if problem is not None:
            kind, detail = problem
            found[kind].append(f"split '{split}' item '{item_id}': {detail}")
    return found, len(todo)


def _resolve(image: str, image_root: Path) -> str:
    path = Path(image)
    return str(path if path.is_absolute() else image_root / path)


def image_problem(source: str | bytes, *, decode: bool) -> tuple[str, str] | None:
    """None for a good image, else ("missing" | "unreadable", detail). Without ``decode`` a plain image file
    is only opened for its header (fast, but a truncated file passes)."""
    from PIL import Image, UnidentifiedImageError

    from fashion_bench.data.transforms import ImageRef, decode_image, image_available

    label = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        if not isinstance(source, bytes) and not image_available(source):
            return "missing", f"{label} not found"
        ref = None if isinstance(source, bytes) else ImageRef.parse(source)
        if decode or ref is None:
            decode_image(source, where=label)
        elif ref.h5_dataset is None:
            with Image.open(ref.path) as image:
                image.size  # noqa: B018  (the header is parsed on open; size proves it)
    except DataError as err:
        return "unreadable", str(err)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        return "unreadable", f"{label}: unreadable image header ({err})"
    return None


def parse_overrides(extra: list[str]) -> dict[str, Any]:
    """``--data.key value`` / ``--data.key=value`` pairs; values are YAML (``true``, ``3``, ``{a: 1}``)."""
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--data."):
            raise ValueError(f"unexpected argument {arg!r}: data keys are given as --data.<key> <value>")
        if "=" in arg:
            key, value = arg[len("--data."):].split("=", 1)
            i += 1
        elif i + 1 < len(extra):
            key, value = arg[len("--data."):], extra[i + 1]
            i += 2
        else:
            raise ValueError(f"{arg} needs a value")
        overrides[key] = yaml.safe_load(value)
    return overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "verify",
        help="check a dataset on disk: split counts, malformed records, missing or unreadable images",
        description="Load each split of the dataset a data config describes, print its counts and check every "
        "image. Other data keys (--data.<key> <value>, e.g. --data.root DIR, --data.adapter_args '{gallery: "
        "val-split}') override the config; keys that only matter for training are ignored. Exit status 1 on errors.",
    )
    parser.add_argument("--config", required=True, help="a data config (configs/data/*.yaml) or an experiment config")
    parser.add_argument("--decode", action="store_true", help="fully decode every image (slower; catches truncated files)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run, takes_extra=True)


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    try:
        config = load_data_config(Path(args.config), parse_overrides(extra))
    except (DataError, ValueError) as err:
        print(f"fashion-bench data verify: {err}", file=sys.stderr)
        return 2
    report = verify(config, decode=args.decode, progress=not args.quiet)
    return 1 if report.errors else 0
