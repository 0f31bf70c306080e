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
    from fashion_bench.data import verify, wab_frames

    parser = argparse.ArgumentParser(prog="fashion-bench data", description="Dataset tools")
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="generate the synthetic fashion world (deterministic by seed)")
    synth.add_argument("--preset", default="small", help="tiny | small | base (default: small)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_synth)
    wab_frames.add_parser(sub)
    verify.add_parser(sub)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "takes_extra", False):  # subcommands taking dotted config overrides (verify)
        return args.func(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args)
