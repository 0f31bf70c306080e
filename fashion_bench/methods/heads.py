"""The ReID head shared by ``reid-baseline`` and multi-prompt stage 2: a BNNeck classifier (Luo et al., "Bag of
Tricks") with a label-smoothed ID loss and a batch-hard triplet loss.

The triplet loss sees the features before the BatchNorm, the classifier the features after it; the BatchNorm
has no learnt bias (its bias is fixed at zero), and the linear classifier has none either. Which of the two
features is the retrieval embedding is the ``embedding`` switch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fashion_bench.losses import batch_hard_triplet_loss

EMBEDDINGS = ("bn", "raw")


@dataclass
class ReIDHeadConfig:
    """Loss weights and switches of :class:`BNNeckHead` (defaults: CLIP-ReID's)."""

    id_weight: float = 0.25
    triplet_weight: float = 1.0
    margin: float = 0.3
    label_smoothing: float = 0.1
    embedding: str = "bn"  # retrieval embedding: "bn" after the BatchNorm, "raw" before it (both L2-normalised)

    def __post_init__(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"unknown head embedding '{self.embedding}'; expected one of {EMBEDDINGS}")


class BNNeckHead(nn.Module):
    def __init__(self, dim: int, num_identities: int, config: ReIDHeadConfig | None = None) -> None:
        super().__init__()
        self.config = config or ReIDHeadConfig()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_identities, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    @property
    def num_identities(self) -> int:
        return self.classifier.out_features

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """The L2-normalised retrieval embedding of raw features [B, D]."""
        return F.normalize(self.bn(features) if self.config.embedding == "bn" else features, dim=-1)

    def losses(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted ``id`` and ``triplet`` losses of a P x K batch of raw features [B, D]."""
        logits = self.classifier(self.bn(features))
        return {
            "id": F.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing),
            "triplet": batch_hard_triplet_loss(features, labels, self.config.margin),
        }

    def weighted(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.config.id_weight * losses["id"] + self.config.triplet_weight * losses["triplet"]


def resolve_identities(module: nn.Module, built: int | None, stage: str, source: str = "num_identities") -> int:
    """The identity count of a module's per-identity parameters: ``built`` if they exist, else the training
    identities of its Trainer's datamodule. When fitting, the two must agree (``source`` names where ``built``
    came from, for the error)."""
    trainer = getattr(module, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    found = int(datamodule.num_identities) if datamodule is not None and hasattr(datamodule, "num_identities") else None
    if built is None:
        if found is None:
            raise ValueError(f"{type(module).__name__} needs num_identities: no datamodule to count the training identities")
        return found
    if stage == "fit" and found is not None and found != built:
        raise ValueError(
            f"identity count mismatch: {source} gives {built} identities but the training split of dataset "
            f"'{datamodule.dataset}' has {found}"
        )
    return built
