"""Text encoding without the padding (fashion_bench/encoders/text_trim.py) versus open_clip's full-width
encoding, side by side on the same product-title-like texts: forward + backward of the text tower, rounds
interleaved, medians; the features are checked equal first. Random weights (no download): the cost does not
depend on them.

    python tests/bench/bench_text_trim.py [--batch 64] [--rounds 3] [--models tiny-vit-64 ViT-B-32]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Callable

import fashion_bench  # noqa: F401  (torchvision guard)
import torch

from fashion_bench.encoders import ClipEncoder
from fashion_bench.encoders.text_trim import text_length

COLOURS = ["red", "navy blue", "off-white", "olive green", "black", "dusty pink", "mustard yellow"]
PATTERNS = ["", "striped", "floral print", "checked", "polka dot", "plain"]
GARMENTS = ["t-shirt", "midi dress", "slim fit jeans", "leather ankle boots", "hooded sweatshirt", "wrap skirt"]
DETAILS = ["", "with long sleeves", "with a round neck and short sleeves", "in organic cotton", "with side pockets"]


def titles(n: int, seed: int = 0) -> list[str]:
    """Catalogue-like product titles of 3 to about 15 words."""
    rng = random.Random(seed)
    return [" ".join(w for w in (rng.choice(["women's", "men's", ""]), rng.choice(COLOURS), rng.choice(PATTERNS),
                                 rng.choice(GARMENTS), rng.choice(DETAILS)) if w) for _ in range(n)]


def step_seconds(encoder: ClipEncoder, encode: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor) -> float:
    start = time.perf_counter()
    encoder.zero_grad(set_to_none=True)
    encode(tokens).sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["tiny-vit-64", "ViT-B-32"])
    args = parser.parse_args()
    for model in args.models:
        torch.manual_seed(0)
        encoder = ClipEncoder(model)
        tokens = encoder.tokenize(titles(args.batch))
        with torch.no_grad():
            torch.testing.assert_close(encoder.encode_text(tokens), encoder.clip.encode_text(tokens, normalize=True),
                                       atol=1e-5, rtol=1e-5)
        paths = {"full width": lambda t: encoder.clip.encode_text(t, normalize=True), "trimmed": encoder.encode_text}
        times: dict[str, list[float]] = {name: [] for name in paths}
        for name, encode in paths.items():  # warm-up
            step_seconds(encoder, encode, tokens)
        for _ in range(args.rounds):
            for name, encode in paths.items():
                times[name].append(step_seconds(encoder, encode, tokens))
        full, trimmed = (statistics.median(times[name]) for name in paths)
        print(f"{model}: {args.batch} titles, {tokens.shape[1]} token positions, {text_length(tokens)} used | text tower "
              f"forward + backward: full width {full * 1000:8.1f} ms, trimmed {trimmed * 1000:8.1f} ms "
              f"(ratio {trimmed / full:.3f})")


if __name__ == "__main__":
    main()
