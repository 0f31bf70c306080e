"""Text encoding without the padding: exact for open_clip's causal text towers, and cheaper.

Token batches are always ``context_length`` wide (77 for the OpenAI tokenizer, 32 for the tiny models) while
product titles, captions and concept prompts are much shorter. In open_clip's ``CLIP`` text tower every
position attends only to earlier ones (a causal mask), and the pooled feature is read at a position inside the
text (the end-of-text token for ``argmax`` / ``eos`` pooling, the first token for ``first``), so the positions
after the batch's last non-padding token cannot change the result: cutting them off gives the same features
for a fraction of the work. Where either condition does not hold (no causal mask, ``last`` / ``none`` pooling,
a Hugging Face text tower) the full width is encoded.
"""

from __future__ import annotations

import torch
from torch import nn

from fashion_bench._env import import_open_clip

TRIMMABLE_POOLING = ("argmax", "eos", "first")
PAD_TOKEN = 0  # open_clip's tokenizers pad with 0; another padding id only makes the cut shorter or none


def trimmable(clip: nn.Module) -> bool:
    """Whether ``clip``'s text tower is open_clip's causal one with pooling inside the text."""
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_pool_type")
    return (
        all(hasattr(clip, name) for name in needed)
        and getattr(clip, "attn_mask", None) is not None
        and clip.text_pool_type in TRIMMABLE_POOLING
        and getattr(clip.transformer, "batch_first", False)
    )


def text_length(tokens: torch.Tensor) -> int:
    """One past the batch's last non-padding position (at least 1)."""
    used = (tokens != PAD_TOKEN).any(dim=0).nonzero()
    return int(used[-1]) + 1 if len(used) else 1


def encode_text_trimmed(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``clip.encode_text(tokens)`` (unnormalised) computed on ``tokens[:, :text_length(tokens)]``."""
    length = text_length(tokens)
    tokens = tokens[:, :length]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    pool = import_open_clip().transformer.text_global_pool
    x = pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    projection = getattr(clip, "text_projection", None)
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x if projection is None else x @ projection
