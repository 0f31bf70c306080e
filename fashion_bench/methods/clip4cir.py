"""CLIP4Cir (Baldrati et al., ACM TOMM 2023): composed image retrieval in two stages, one experiment each.

* Stage 1, :class:`Clip4CirFinetune`: fine-tune the CLIP encoders (either can be frozen) so that the element-wise
  sum of raw features, normalise(image + text), retrieves the target. Its ``fit`` exports an open_clip checkpoint
  (``publish_to``) that stage 2 loads through ``encoder.pretrained``.
* Stage 2, :class:`Clip4CirCombiner`: both encoders frozen; a :class:`Combiner` network learns to fuse the raw
  reference-image and text features. Frozen encoders give fixed features, so they are cached (see
  :class:`FeatureCache`).

Both stages use the same loss: cross-entropy from each query to the in-batch targets (normalised), with a fixed
logit scale of 100 and targets of the same product counted as positives (``target_key``).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fashion_bench.losses import contrastive_loss
from fashion_bench.methods.base import ClipRetrievalMethod, EncoderConfig, OptimConfig
from fashion_bench.methods.clip import ClipMethod

LOGIT_SCALE = 100.0  # the paper's fixed scale (what OpenAI / LAION CLIPs have learnt: their scale saturates at 100)


class Clip4CirMethod(ClipRetrievalMethod):
    """What both stages share: triplet batches in, the fixed-scale query -> target cross-entropy out."""

    method_name = "clip4cir"
    supports = {"cir": ("image+text",)}
    logit_scale: float | None = LOGIT_SCALE

    def loss_scale(self) -> torch.Tensor | float:
        """The fixed scale, or (``logit_scale: null``) the CLIP's own learnt one, clamped at 100 like CLIP's."""
        if self.logit_scale is not None:
            return self.logit_scale
        return self.encoder.logit_scale.exp().clamp(max=LOGIT_SCALE)

    def query_and_target(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised composed queries [B, D] and raw target-image features [B, D] of a triplet batch."""
        raise NotImplementedError

    def composed_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "reference" not in batch:
            raise ValueError(
                f"{type(self).__name__} trains on composed triplets (task 'cir'); got a batch with keys {sorted(batch)}"
            )
        query, target = self.query_and_target(batch)
        labels = self.gather(batch["target_key"])
        return contrastive_loss(
            self.gather(query), self.gather(F.normalize(target, dim=-1)), self.loss_scale(),
            query_labels=labels, target_labels=labels, symmetric=False,
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.composed_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["text"].shape[0])
        return self.check_finite(loss)


class Clip4CirFinetune(Clip4CirMethod, ClipMethod):
    """Stage 1: task-oriented fine-tuning of CLIP with the element-wise sum as the composition.

    Evaluation and export come from :class:`ClipMethod`; only the composition and the loss differ.
    """

    def __init__(
        self,
        encoder: EncoderConfig | None = None,
        optim: OptimConfig | None = None,
        publish_to: str | None = None,
        logit_scale: float | None = LOGIT_SCALE,
    ) -> None:
        """
        Args:
            encoder: the CLIP to fine-tune; ``freeze_image`` / ``freeze_text`` choose which encoders train, and
                ``grad_checkpointing`` trades compute for memory when both do.
            logit_scale: the paper's fixed 100, or ``null`` for the CLIP's own temperature, trained from its
                pretrained value (a CLIP that learnt a much smaller scale than 100, like the synthetic one, then
                keeps it instead of being forced to 100).
            publish_to: also copy the published encoder (``published/encoder.pt`` in the run directory, which
                stage 2 names as ``run:clip4cir-stage1__<dataset>/encoder.pt``) to this stable path.
        """
        super().__init__(encoder, optim, learn_temperature=logit_scale is None, publish_to=publish_to)
        self.logit_scale = logit_scale
        self.save_config(encoder=self.encoder_config, optim=self.optim, publish_to=publish_to, logit_scale=logit_scale)

    def compose(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(image_features + text_features, dim=-1)

    def query_and_target(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        reference, target = self.encode_images(torch.cat([batch["reference"], batch["target"]])).chunk(2)
        return self.compose(reference, self.encoder.encode_text(batch["text"], normalize=False)), target


class Combiner(nn.Module):
    """CLIP4Cir's fusion network on raw CLIP features of dimension ``dim`` (projection 4d, hidden 8d).

    Each modality is projected (Linear, ReLU, Dropout); the concatenation feeds an MLP (the learnt residual) and a
    gate lambda in [0, 1]; output = MLP + lambda * text + (1 - lambda) * image, then L2-normalised.
    """

    def __init__(self, dim: int, projection_dim: int | None = None, hidden_dim: int | None = None, dropout: float = 0.5) -> None:
        super().__init__()
        projection_dim = projection_dim or 4 * dim
        hidden_dim = hidden_dim or 8 * dim
        self.image_projection = nn.Sequential(nn.Linear(dim, projection_dim), nn.ReLU(), nn.Dropout(dropout))
        self.text_projection = nn.Sequential(nn.Linear(dim, projection_dim), nn.ReLU(), nn.Dropout(dropout))
        self.mlp = nn.Sequential(
            nn.Linear(2 * projection_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim)
        )
        self.gate = nn.Sequential(
            nn.Linear(2 * projection_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, 1), nn.Sigmoid()
        )

    def combine(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unnormalised combination [B, dim] and the gate lambda [B, 1] (weight of the text)."""
        joint = torch.cat([self.text_projection(text), self.image_projection(image)], dim=-1)
        gate = self.gate(joint)
        return self.mlp(joint) + gate * text + (1 - gate) * image, gate

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.combine(image, text)[0], dim=-1)


class FeatureCache:
    """Outputs of a frozen encoder, keyed by a hash of the exact bytes of each input row.

    Content keys make the cache correct whatever the data pipeline does: the same captions joined in another
    order are other tokens (a miss, then a hit in later epochs), an augmented image is another input, and an
    image that is a reference in one triplet and a target in another is encoded once. The encoder must be
    deterministic (frozen and in eval mode) while the cache lives. With augmented training images every input is
    new, so the cache keeps at most ``capacity`` rows and drops the oldest first (its memory is bounded whatever
    the pipeline does: 100,000 rows of 512 floats are 205 MB on the model's device).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"FeatureCache capacity must be at least 1, got {capacity}")
        self.store: dict[bytes, torch.Tensor] = {}
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self.store)

    def clear(self) -> None:
        self.store.clear()

    @staticmethod
    def keys(inputs: torch.Tensor) -> list[bytes]:
        """One key per row: a hash of its exact bytes."""
        rows = inputs.detach().cpu().contiguous().flatten(1).view(torch.uint8).numpy()  # any dtype, bf16 too
        return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        keys = self.keys(inputs)
        missing: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self.store and key not in missing:
                missing[key] = i
        if missing:
            self.store.update(zip(missing, encode(inputs[list(missing.values())])))
        outputs = torch.stack([self.store[key] for key in keys])
        for key in list(itertools.islice(self.store, max(0, len(self.store) - self.capacity))):
            del self.store[key]
        return outputs


class Clip4CirCombiner(Clip4CirMethod):
    """Stage 2: a :class:`Combiner` trained on top of the frozen stage-1 CLIP (both encoders always frozen)."""

    def __init__(
        self,
        encoder: EncoderConfig | None = None,
        optim: OptimConfig | None = None,
        projection_dim: int | None = None,
        hidden_dim: int | None = None,
        dropout: float = 0.5,
        cache_features: bool = True,
        logit_scale: float | None = LOGIT_SCALE,
    ) -> None:
        """
        Args:
            encoder: the stage-1 CLIP (``pretrained``: the file stage 1 published); its freeze flags are forced on.
            logit_scale: the paper's fixed 100, or ``null`` for the frozen stage-1 CLIP's own (learnt) scale.
            projection_dim / hidden_dim: the Combiner's widths (default 4 x and 8 x the CLIP dimension).
            cache_features: compute each distinct training image / caption's features once per ``fit``.
        """
        encoder = replace(encoder or EncoderConfig(), freeze_image=True, freeze_text=True)
        super().__init__(encoder, optim)
        self.encoder.requires_grad_(False)  # the logit scale too (set_frozen leaves it alone)
        self.encoder.eval()
        self.combiner = Combiner(self.encoder.embed_dim, projection_dim, hidden_dim, dropout)
        self.cache_features = cache_features
        self.logit_scale = logit_scale
        self.image_cache, self.text_cache = FeatureCache(), FeatureCache()
        self.save_config(
            encoder=encoder, optim=self.optim, projection_dim=projection_dim, hidden_dim=hidden_dim, dropout=dropout, cache_features=cache_features,
            logit_scale=logit_scale,
        )

    def train(self, mode: bool = True) -> Clip4CirCombiner:
        """Train the Combiner only: the frozen encoders stay in eval mode (dropout off, fixed features)."""
        super().train(mode)
        self.encoder.eval()
        return self

    def on_fit_start(self) -> None:
        self.image_cache.clear()  # the encoder weights may have been loaded since the last fit
        self.text_cache.clear()

    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode_text(tokens, normalize=False)

    def encode_query(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "text" not in batch or "image_features" not in batch:
            raise ValueError(f"{type(self).__name__} embeds composed queries: a batch needs 'text' and 'image_features'")
        return self.combiner(batch["image_features"], self.encode_texts(batch["text"]))

    @torch.no_grad()
    def frozen_features(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw reference, text and target features of a triplet batch (from the caches when enabled)."""
        images = torch.cat([batch["reference"], batch["target"]])
        if self.cache_features:
            image_features, text = self.image_cache(images, self.encode_images), self.text_cache(batch["text"], self.encode_texts)
        else:
            image_features, text = self.encode_images(images), self.encode_texts(batch["text"])
        reference, target = image_features.chunk(2)
        return reference, text, target

    def query_and_target(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        reference, text, target = self.frozen_features(batch)
        return self.combiner(reference, text), target
