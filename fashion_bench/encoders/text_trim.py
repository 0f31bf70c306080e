"""Text encoding without the padding: exact for open_clip's causal text towers, and cheaper.

Token batches are always ``context_length`` wide (77 for the OpenAI tokenizer, 32 for the tiny models) while
product titles, captions and concept prompts are much shorter. In open_clip's ``CLIP`` text tower every
position attends only to earlier ones (a causal mask), and the pooled feature is read at a position inside the
text (the end-of-text token for ``argmax`` / ``eos`` pooling, the first token for ``first``), so the positions
after a row's last non-padding token cannot change its result: cutting them off gives the same features for a
fraction of the work. Rows of very different lengths are grouped into length buckets, each cut at its own longest
row (:func:`length_buckets`). Where either condition does not hold (no causal mask, ``last`` / ``none`` pooling,
a Hugging Face text tower) the full width is encoded.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from fashion_bench._env import import_open_clip

TRIMMABLE_POOLING = ("argmax", "eos", "first")
PAD_TOKEN = 0  # open_clip's tokenizers pad with 0; another padding id only makes the cut shorter or none
# A bucket costs one more pass through the transformer's layers (kernel launches, the attention mask, framework
# overhead): a split is only worth it when it saves at least this many row-positions of padding.
BUCKET_OVERHEAD_POSITIONS = 256


def trimmable(clip: nn.Module) -> bool:
    """Whether ``clip``'s text tower is open_clip's causal one with pooling inside the text."""
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_pool_type")
    return (
        all(hasattr(clip, name) for name in needed)
        and getattr(clip, "attn_mask", None) is not None
        and clip.text_pool_type in TRIMMABLE_POOLING
        and getattr(clip.transformer, "batch_first", False)
    )


def row_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """One past each row's last non-padding position (at least 1), [N]."""
    positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
    return ((tokens != PAD_TOKEN) * positions).amax(dim=1).clamp_min(1)


def text_length(tokens: torch.Tensor) -> int:
    """One past the batch's last non-padding position (at least 1)."""
    return int(row_lengths(tokens).max()) if len(tokens) else 1


def length_buckets(lengths: list[int], overhead: int = BUCKET_OVERHEAD_POSITIONS) -> list[int]:
    """Bucket widths (ascending) that minimise the encoded row-positions plus ``overhead`` per bucket: every row
    goes to the narrowest bucket at least as wide as it. Dynamic programming over the distinct lengths."""
    per_width = Counter(lengths)
    widths = sorted(per_width)
    counts = [per_width[w] for w in widths]
    best = [0.0] + [float("inf")] * len(widths)  # best[j]: cost of the rows of the j shortest widths
    cut = [0] * (len(widths) + 1)
    for j in range(1, len(widths) + 1):
        rows = 0
        for i in range(j, 0, -1):  # the last bucket holds widths i-1 .. j-1 and is widths[j-1] wide
            rows += counts[i - 1]
            cost = best[i - 1] + rows * widths[j - 1] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i - 1
    chosen, j = [], len(widths)
    while j > 0:
        chosen.append(widths[j - 1])
        j = cut[j]
    return chosen[::-1]


def encode_text_trimmed(clip: nn.Module, tokens: torch.Tensor, overhead: int = BUCKET_OVERHEAD_POSITIONS) -> torch.Tensor:
    """``clip.encode_text(tokens)`` (unnormalised), each length bucket cut at its own width (one token embedding
    for the batch, one transformer pass per bucket)."""
    lengths = row_lengths(tokens)
    width = int(lengths.max()) if len(tokens) else 1
    tokens = tokens[:, :width]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[:width].to(cast_dtype)
    pool = import_open_clip().transformer.text_global_pool
    eos = getattr(clip, "text_eos_id", None)
    buckets = length_buckets(lengths.tolist(), overhead) if len(tokens) else [width]
    pooled, order, lower = [], [], 0
    for bucket in buckets:
        rows = ((lengths > lower) & (lengths <= bucket)).nonzero().squeeze(1)
        lower = bucket
        h = x if len(rows) == len(tokens) else x[rows]
        h = clip.transformer(h[:, :bucket], attn_mask=clip.attn_mask[:bucket, :bucket])
        pooled.append(pool(clip.ln_final(h), tokens[rows, :bucket], clip.text_pool_type, eos_token_id=eos))
        order.append(rows)
    features = pooled[0] if len(pooled) == 1 else torch.cat(pooled)[torch.argsort(torch.cat(order))]
    projection = getattr(clip, "text_projection", None)
    if isinstance(projection, nn.Linear):
        return projection(features)
    return features if projection is None else features @ projection
