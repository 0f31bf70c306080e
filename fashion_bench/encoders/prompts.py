"""Prompt injection into open_clip towers.

* :class:`TextPrompts`: learnable context vectors substituted for placeholder words of one or more templates
  ("a photo of a X X X X product."), CoOp / CLIP-ReID style: per-identity tokens, optionally shared tokens. The
  text feature is read at the end-of-text token after the final LayerNorm and projection, as
  ``open_clip.CLIP.encode_text`` does (:func:`encode_text_embeddings` is that function on embeddings).
* :class:`VisualPrompts`: Visual Prompt Tuning (VPT) tokens in the ViT image tower, inserted after the class
  token (shallow) or replaced at the input of every block (deep). They are dropped again before pooling, so
  the pooling (class token, or the patch-token average) sees exactly the tokens it sees without prompts.

Both work on open_clip's ``CLIP`` class (the built-in ViT models and the shipped tiny ones); other towers (timm /
Hugging Face trunks, ``CustomTextCLIP``) raise a ``TypeError``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from fashion_bench._env import import_open_clip

PLACEHOLDER = "X"


def _require_clip_text(clip: nn.Module) -> None:
    if not hasattr(clip, "token_embedding") or not hasattr(clip, "text_pool_type"):
        raise TypeError(
            f"text prompts need an open_clip CLIP model with its own text transformer; got {type(clip).__name__}"
        )


def encode_text_embeddings(clip: nn.Module, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``clip.encode_text`` from token embeddings [B, L, W] (unnormalised [B, D]).

    ``tokens`` [B, L] are the token ids the embeddings stand for; they only locate the pooled position (the
    end-of-text token), so substituted rows may hold any id.
    """
    _require_clip_text(clip)
    text_global_pool = import_open_clip().transformer.text_global_pool
    cast = clip.transformer.get_cast_dtype()
    x = embeddings.to(cast) + clip.positional_embedding.to(cast)
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    x = clip.ln_final(x)
    x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    if clip.text_projection is None:
        return x
    return clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) else x @ clip.text_projection


class TextPrompts(nn.Module):
    """Learnable text prompts: per identity ``context_tokens`` vectors, plus ``shared_tokens`` vectors common to
    all identities, substituted (shared first) for the ``{}`` of every template.

    The feature of an identity is the mean over templates of the L2-normalised template features (one template:
    just its normalised feature), the usual CLIP prompt ensemble.
    """

    def __init__(
        self,
        clip: nn.Module,
        tokenize: Callable[[Sequence[str]], torch.Tensor],
        num_identities: int,
        context_tokens: int = 4,
        shared_tokens: int = 0,
        templates: Sequence[str] = ("a photo of a {} product.",),
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        _require_clip_text(clip)
        if num_identities < 1:
            raise ValueError(f"text prompts need at least one identity, got {num_identities}")
        if context_tokens < 0 or shared_tokens < 0:
            raise ValueError(f"token counts must be >= 0, got context_tokens={context_tokens} shared_tokens={shared_tokens}")
        if not templates or any(t.count("{}") != 1 for t in templates):
            raise ValueError(f"every template needs exactly one '{{}}' (where the learnable tokens go); got {list(templates)}")
        width = clip.token_embedding.weight.shape[1]
        count = shared_tokens + context_tokens
        placeholder_id = int(tokenize([PLACEHOLDER])[0, 1])
        tokens = tokenize([t.format(" ".join([PLACEHOLDER] * count)) for t in templates])
        slots = []
        for template, row in zip(templates, tokens):
            where = (row == placeholder_id).nonzero().flatten()
            if len(where) != count or (count and int(where[-1] - where[0]) != count - 1):
                raise ValueError(
                    f"template {template!r} with {count} prompt tokens does not fit the text context of "
                    f"{tokens.shape[1]} tokens, or contains the placeholder word '{PLACEHOLDER}' itself"
                )
            slots.append(where)
        self.shared_count, self.context_count = shared_tokens, context_tokens
        self.templates = list(templates)
        self.register_buffer("tokens", tokens, persistent=False)  # [T, L]
        self.register_buffer("slots", torch.stack(slots), persistent=False)  # [T, count]
        self.context_tokens = nn.Parameter(torch.randn(num_identities, context_tokens, width) * init_std)
        self.shared_tokens = nn.Parameter(torch.randn(shared_tokens, width) * init_std)

    @property
    def num_identities(self) -> int:
        return self.context_tokens.shape[0]

    def forward(self, clip: nn.Module, identities: torch.Tensor) -> torch.Tensor:
        """Features [B, D] of the identities [B] (see the class docstring for the template mean)."""
        n, t = identities.shape[0], self.tokens.shape[0]
        base = clip.token_embedding(self.tokens)  # [T, L, W]
        learned = torch.cat([self.shared_tokens.expand(n, -1, -1), self.context_tokens[identities]], dim=1)  # [B, C, W]
        embeddings = base.unsqueeze(0).repeat(n, 1, 1, 1)  # [B, T, L, W]
        index = self.slots.unsqueeze(0).unsqueeze(-1).expand(n, -1, -1, base.shape[-1])  # [B, T, C, W]
        embeddings = embeddings.scatter(2, index, learned.unsqueeze(1).expand(-1, t, -1, -1).to(base.dtype))
        features = encode_text_embeddings(clip, embeddings.flatten(0, 1), self.tokens.repeat(n, 1)).view(n, t, -1)
        return nn.functional.normalize(features, dim=-1).mean(dim=1)


class VisualPrompts(nn.Module):
    """VPT tokens for an open_clip ``VisionTransformer``: ``count`` tokens after the class token, for the first
    block only (shallow) or a fresh set at every block (deep). Initialised Xavier-uniform over the patch
    embedding's fan-in and the width, as VPT does."""

    def __init__(self, visual: nn.Module, count: int = 5, deep: bool = False) -> None:
        super().__init__()
        vit = import_open_clip().transformer.VisionTransformer
        if not isinstance(visual, vit):
            raise TypeError(f"visual prompts need an open_clip VisionTransformer image tower; got {type(visual).__name__}")
        if count < 0:
            raise ValueError(f"visual prompt count must be >= 0, got {count}")
        width = visual.conv1.out_channels
        depth = len(visual.transformer.resblocks) if deep else 1
        patch = visual.conv1.kernel_size
        bound = math.sqrt(6.0 / (visual.conv1.in_channels * patch[0] * patch[1] + width))
        self.deep = deep
        self.tokens = nn.Parameter(torch.empty(depth, count, width).uniform_(-bound, bound))

    @property
    def count(self) -> int:
        return self.tokens.shape[1]

    def forward(self, visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """``visual(images)`` with the prompts: unnormalised features [B, D]."""
        n = self.count
        x = visual._embeds(images)  # patch + class + positional embedding, patch dropout, ln_pre
        blocks = visual.transformer.resblocks
        checkpointing = visual.transformer.grad_checkpointing and torch.is_grad_enabled()
        for i, block in enumerate(blocks):
            if i < self.tokens.shape[0]:
                prompts = self.tokens[i].to(x.dtype).expand(x.shape[0], -1, -1)
                rest = x[:, 1:] if i == 0 else x[:, 1 + n:]  # insert before the first block, replace later
                x = torch.cat([x[:, :1], prompts, rest], dim=1)
            if not visual.transformer.batch_first:
                x = x.transpose(0, 1)
            x = checkpoint(block, x, None, None, None, use_reentrant=False) if checkpointing else block(x)
            if not visual.transformer.batch_first:
                x = x.transpose(0, 1)
        x = torch.cat([x[:, :1], x[:, 1 + n:]], dim=1)  # drop the prompts: pooling sees the usual tokens
        pooled, _ = visual._pool(x)
        return pooled @ visual.proj if visual.proj is not None else pooled
