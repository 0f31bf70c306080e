"""``fashion-bench kg build``: the concept knowledge graph of a dataset's training split (light until it runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def encoder_config(value: str) -> dict[str, Any]:
    """``--encoder``: an encoder config file (configs/encoder/*.yaml) or ``MODEL[:PRETRAINED]``."""
    import yaml

    if value.endswith((".yaml", ".yml")):
        try:
            config = yaml.safe_load(Path(value).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"--encoder {value}: cannot read the encoder config ({err})") from None
        if not isinstance(config, dict) or "model" not in config:
            raise ValueError(f"--encoder {value}: not an encoder config (expected a mapping with a 'model' key)")
        return config
    model, _, pretrained = value.partition(":")
    return {"model": model, "pretrained": pretrained or None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-bench kg", description="FashionKLIP's concept knowledge graph")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser(
        "build",
        help="mine concepts and is-a edges from the training texts, pick each concept's images",
        description="Mine noun phrases ending in a product noun from the training texts of a data config, link them "
        "by dropping modifiers, and keep 10 images per concept (prompt retrieval, top 20, MMR). Resumable: rerun "
        "the same command. Data keys may be overridden with --data.<key> <value>.",
    )
    build.add_argument("--config", required=True, help="a data config (configs/data/*.yaml) or an experiment config")
    build.add_argument("--out", required=True, help="output folder")
    build.add_argument("--encoder", default="configs/encoder/synth-pretrained.yaml",
                       help="encoder config file or MODEL[:PRETRAINED] (default: %(default)s)")
    build.add_argument("--chunker", default="auto", choices=("auto", "rule", "spacy"))
    build.add_argument("--min_count", type=int, default=2, help="keep phrases written at least this often")
    build.add_argument("--max_words", type=int, default=6)
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> int:
    from fashion_bench.data.verify import load_data_config, parse_overrides

    args, extra = build_parser().parse_known_args(argv)
    try:
        data = load_data_config(Path(args.config), parse_overrides(extra))
        encoder = encoder_config(args.encoder)
        from fashion_bench.kg.build import KgSettings, build_kg

        build_kg(data, Path(args.out), encoder, KgSettings(args.chunker, args.max_words, args.min_count), progress=not args.quiet)
    except ValueError as err:
        print(f"fashion-bench kg build: {err}", file=sys.stderr)
        return 2
    return 0
