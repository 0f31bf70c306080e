"""Texts encoded without their padding give the features and gradients of the full-width encoding."""

from __future__ import annotations

import json

import pytest
import torch

from fashion_bench.encoders import ClipEncoder
from fashion_bench.encoders.clip import MODEL_CONFIG_DIR, open_clip_module
from fashion_bench.encoders.text_trim import encode_text_trimmed, length_buckets, row_lengths, text_length, trimmable

TEXTS = [
    "boot",
    "a red shirt",
    "crimson stripy long-sleeved tee with a small blue star on the chest, relaxed fit, cotton",
    "",
]


def tiny_clip(**text_overrides) -> torch.nn.Module:
    config = json.loads((MODEL_CONFIG_DIR / "tiny-vit-64.json").read_text())
    config["text_cfg"].update(text_overrides)
    return open_clip_module().model.CLIP(**config)


def test_text_length_is_one_past_the_last_token_of_the_batch():
    tokens = torch.tensor([[5, 7, 0, 0, 0], [5, 0, 9, 0, 0]])
    assert text_length(tokens) == 3
    assert row_lengths(tokens).tolist() == [2, 3]
    assert text_length(torch.zeros(2, 4, dtype=torch.long)) == 1
    assert text_length(torch.ones(2, 4, dtype=torch.long)) == 4


def bucket_cost(lengths: list[int], widths: list[int], overhead: int) -> int:
    """Row-positions encoded when each row goes to the narrowest bucket that holds it, plus the overhead."""
    return sum(min(w for w in widths if w >= n) for n in lengths) + overhead * len(widths)


@pytest.mark.parametrize("seed", range(40))
def test_length_buckets_are_the_cheapest_of_all_bucketings(seed):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 30, (int(torch.randint(1, 40, (1,), generator=generator)),), generator=generator).tolist()
    overhead = [0, 8, 64, 10**6][seed % 4]
    distinct = sorted(set(lengths))
    chosen = length_buckets(lengths, overhead)
    assert chosen == sorted(chosen) and chosen[-1] == max(lengths) and set(chosen) <= set(distinct)
    cheapest = min(  # every bucketing: any subset of the distinct lengths that holds the longest one
        bucket_cost(lengths, [w for k, w in enumerate(distinct[:-1]) if mask >> k & 1] + [distinct[-1]], overhead)
        for mask in range(2 ** (len(distinct) - 1))
    ) if len(distinct) <= 14 else None
    if cheapest is not None:
        assert bucket_cost(lengths, chosen, overhead) == cheapest
    if overhead == 0:
        assert chosen == distinct
    if overhead == 10**6:
        assert chosen == [max(lengths)]


def assert_same_features_and_gradients(encoder: ClipEncoder, tokens: torch.Tensor, encode) -> None:
    """``encode(tokens)`` (unnormalised) against open_clip's full-width ``encode_text``: features and gradients."""
    trimmed = encode(tokens)
    probe = torch.randn_like(trimmed)
    encoder.zero_grad()
    (trimmed * probe).sum().backward()
    trimmed_grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    encoder.zero_grad()
    full = encoder.clip.encode_text(tokens)
    (full * probe).sum().backward()
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)
    assert trimmed_grads.keys() == {n for n, p in encoder.named_parameters() if p.grad is not None}
    for name, grad in trimmed_grads.items():
        scale = float(grad.abs().max()) + 1e-12  # float32 sums in another order: compare relative to the largest
        torch.testing.assert_close(grad / scale, dict(encoder.named_parameters())[name].grad / scale,
                                   atol=1e-5, rtol=0, msg=name)


def transformer_widths(encoder: ClipEncoder, encode, tokens: torch.Tensor) -> list[int]:
    """The widths of the text transformer's passes in ``encode(tokens)``."""
    widths: list[int] = []
    hook = encoder.clip.transformer.register_forward_hook(lambda _m, args, _out: widths.append(args[0].shape[1]))
    encode(tokens)
    hook.remove()
    return widths


@pytest.mark.parametrize("model", ["tiny-vit-64", "ViT-B-32"])
def test_trimmed_features_and_gradients_equal_the_full_width_ones(model):
    torch.manual_seed(0)
    encoder = ClipEncoder(model)
    assert encoder.trim_text
    tokens = encoder.tokenize(TEXTS)
    assert text_length(tokens) < tokens.shape[1]  # the test trims something
    encode = lambda t: encoder.encode_text(t, normalize=False)  # noqa: E731
    assert_same_features_and_gradients(encoder, tokens, encode)
    assert transformer_widths(encoder, encode, tokens) == [text_length(tokens)]  # four texts: too few rows for a second bucket to pay off
    full = encoder.clip.encode_text(tokens)
    torch.testing.assert_close(encoder.encode_text(tokens), torch.nn.functional.normalize(full, dim=-1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("model", ["tiny-vit-64", "ViT-B-32"])
def test_length_buckets_give_the_full_width_features_and_gradients_in_the_batch_order(model):
    torch.manual_seed(0)
    encoder = ClipEncoder(model)
    tokens = encoder.tokenize(TEXTS + ["a photo of a leather boot", "shirt"] + TEXTS[::-1])
    encode = lambda t: encode_text_trimmed(encoder.clip, t, overhead=0)  # noqa: E731
    assert_same_features_and_gradients(encoder, tokens, encode)
    assert transformer_widths(encoder, encode, tokens) == sorted(set(row_lengths(tokens).tolist()))  # one pass per distinct length at no overhead


@pytest.mark.parametrize(
    "overrides, why",
    [({"no_causal_mask": True}, "padding is attended to"), ({"pool_type": "last"}, "pooled at the padded end")],
)
def test_text_towers_where_the_padding_counts_are_encoded_at_full_width(overrides, why):
    assert trimmable(tiny_clip())
    assert not trimmable(tiny_clip(**overrides)), why


def test_a_tower_of_unknown_layout_is_encoded_at_full_width():
    class NoTextTower(torch.nn.Module):
        text_pool_type = "argmax"

    assert not trimmable(NoTextTower())
