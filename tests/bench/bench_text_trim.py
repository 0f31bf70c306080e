"""Text encoding without the padding (fashion_bench/encoders/text_trim.py) versus open_clip's full-width
encoding, side by side on the same texts: forward + backward of the text tower, rounds interleaved, medians; the
features are checked equal first. Three ways: full width; one cut at the batch's longest row (length buckets off);
length buckets (the default). Two batches: product-title-like texts alone, and the same titles with 2.5 x as many
concept prompts ("a photo of {phrase}", FashionKLIP's one text pass per step). Random weights (no download): the
cost does not depend on them.

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
from fashion_bench.encoders.text_trim import encode_text_trimmed, length_buckets, row_lengths, text_length

COLOURS = ["red", "navy blue", "off-white", "olive green", "black", "dusty pink", "mustard yellow"]
PATTERNS = ["", "striped", "floral print", "checked", "polka dot", "plain"]
GARMENTS = ["t-shirt", "midi dress", "slim fit jeans", "leather ankle boots", "hooded sweatshirt", "wrap skirt"]
DETAILS = ["", "with long sleeves", "with a round neck and short sleeves", "in organic cotton", "with side pockets"]


def titles(n: int, seed: int = 0) -> list[str]:
    """Catalogue-like product titles of 3 to about 15 words."""
    rng = random.Random(seed)
    return [" ".join(w for w in (rng.choice(["women's", "men's", ""]), rng.choice(COLOURS), rng.choice(PATTERNS),
                                 rng.choice(GARMENTS), rng.choice(DETAILS)) if w) for _ in range(n)]


def concept_prompts(n: int, seed: int = 1) -> list[str]:
    """FashionKLIP-like concept prompts: "a photo of" a noun phrase of 1 to 4 words."""
    rng = random.Random(seed)
    phrases = [" ".join(w for w in (rng.choice(COLOURS + [""]), rng.choice(PATTERNS), rng.choice(GARMENTS)) if w)
               for _ in range(n)]
    return [f"a photo of {p}" for p in phrases]


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
        one_cut = lambda t: torch.nn.functional.normalize(encode_text_trimmed(encoder.clip, t, overhead=10**9), dim=-1)  # noqa: E731
        paths = {"full width": lambda t: encoder.clip.encode_text(t, normalize=True), "one cut": one_cut,
                 "buckets": encoder.encode_text}
        batches = {"titles": titles(args.batch),
                   "titles + prompts": titles(args.batch) + concept_prompts(int(2.5 * args.batch))}
        for batch_name, texts in batches.items():
            tokens = encoder.tokenize(texts)
            with torch.no_grad():
                full = encoder.clip.encode_text(tokens, normalize=True)
                for encode in paths.values():
                    torch.testing.assert_close(encode(tokens), full, atol=1e-5, rtol=1e-5)
            times: dict[str, list[float]] = {name: [] for name in paths}
            for name, encode in paths.items():  # warm-up
                step_seconds(encoder, encode, tokens)
            for _ in range(args.rounds):
                for name, encode in paths.items():
                    times[name].append(step_seconds(encoder, encode, tokens))
            median = {name: statistics.median(times[name]) for name in paths}
            lengths = row_lengths(tokens).tolist()
            print(f"{model}, {batch_name}: {len(texts)} texts, {tokens.shape[1]} token positions, {text_length(tokens)} "
                  f"used, buckets {length_buckets(lengths)} | text tower forward + backward: "
                  + ", ".join(f"{name} {median[name] * 1000:8.1f} ms" for name in paths)
                  + f" | ratio to full width: one cut {median['one cut'] / median['full width']:.3f}, buckets "
                  f"{median['buckets'] / median['full width']:.3f}; buckets / one cut "
                  f"{median['buckets'] / median['one cut']:.3f}")

if __name__ == "__main__":
    main()
