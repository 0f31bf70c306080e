"""``fashion-bench data ...``: data subcommands (light: no Lightning import)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _synth(args: argparse.Namespace) -> int:
    from fashion_bench.data.synthetic import PRESETS, generate_world

    if args.preset not in PRESETS:
        print(f"unknown preset '{args.preset}'; choose from {sorted(PRESETS)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    out = generate_world(Path(args.out), preset=args.preset, seed=args.seed, workers=args.workers, progress=not args.quiet)
    print(f"synthetic world '{args.preset}' (seed {args.seed}) written to {out} in {time.perf_counter() - started:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-bench data", description="Dataset tools")
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="generate the synthetic fashion world (deterministic by seed)")
    synth.add_argument("--preset", default="small", help="tiny | small | base (default: small)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_synth)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
