"""Retrieval losses shared by the methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def same_label_targets(row_labels: torch.Tensor, col_labels: torch.Tensor) -> torch.Tensor:
    """Row-normalised target distribution over columns that share the row's label."""
    match = (row_labels[:, None] == col_labels[None, :]).float()
    return match / match.sum(dim=1, keepdim=True).clamp_min(1.0)


def contrastive_loss(
    queries: torch.Tensor,
    targets: torch.Tensor,
    scale: torch.Tensor | float,
    *,
    query_labels: torch.Tensor | None = None,
    target_labels: torch.Tensor | None = None,
    symmetric: bool = True,
) -> torch.Tensor:
    """InfoNCE between L2-normalised ``queries`` [B, D] and ``targets`` [N, D] (N >= B, in-batch negatives).

    Without labels, query i's positive is target i. With labels, every target sharing the query's label is a
    positive (soft targets), so duplicates of one product in a batch are not pushed apart. ``symmetric`` adds the
    target -> query direction (CLIP); CLIP4Cir uses the query -> target direction only.
    """
    logits = scale * queries @ targets.t()
    if query_labels is None or target_labels is None:
        index = torch.arange(queries.shape[0], device=queries.device)
        loss = F.cross_entropy(logits, index)
        if symmetric:
            loss = (loss + F.cross_entropy(logits.t()[: queries.shape[0]], index)) / 2
        return loss
    loss = torch.sum(-same_label_targets(query_labels, target_labels) * F.log_softmax(logits, dim=1), dim=1).mean()
    if symmetric:
        reverse = torch.sum(-same_label_targets(target_labels, query_labels) * F.log_softmax(logits.t(), dim=1), dim=1).mean()
        loss = (loss + reverse) / 2
    return loss
