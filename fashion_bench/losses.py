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


def supcon_loss(
    anchors: torch.Tensor,
    contrasts: torch.Tensor,
    anchor_labels: torch.Tensor,
    contrast_labels: torch.Tensor,
    scale: torch.Tensor | float,
) -> torch.Tensor:
    """Supervised contrastive loss from ``anchors`` [B, D] to ``contrasts`` [N, D] (Khosla et al., the "out"
    form): for each anchor, minus the mean over its positives (contrasts with its label) of the log-softmax of
    ``scale * anchor . contrast`` over all contrasts. Anchors without a positive are left out of the mean.

    Features are used as given (normalise them first for cosine logits). With one positive per anchor this is
    the InfoNCE of :func:`contrastive_loss`.
    """
    positives = (anchor_labels[:, None] == contrast_labels[None, :]).to(anchors.dtype)
    counts = positives.sum(dim=1)
    log_prob = F.log_softmax(scale * anchors @ contrasts.t(), dim=1)
    per_anchor = -(positives * log_prob).sum(dim=1) / counts.clamp_min(1.0)
    valid = counts > 0
    if not bool(valid.any()):
        raise ValueError("supcon_loss: no anchor has a positive among the contrasts (labels never match)")
    return per_anchor[valid].mean()


def batch_hard_triplet_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al.): for each anchor, the farthest same-label and the closest
    other-label sample by Euclidean distance, hinge ``max(0, d_pos - d_neg + margin)``, mean over the anchors
    that have both (a P x K batch with K >= 2 gives every anchor both).
    """
    norms = features.pow(2).sum(dim=1)
    squared = norms[:, None] + norms[None, :] - 2 * features @ features.t()
    distances = squared.clamp_min(1e-12).sqrt()  # the clamp keeps the gradient finite at zero distance
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive, negative = same & ~eye, ~same
    valid = positive.any(dim=1) & negative.any(dim=1)
    if not bool(valid.any()):
        raise ValueError("batch_hard_triplet_loss: no anchor has both a positive and a negative (use a P x K batch with P, K >= 2)")
    hardest_positive = distances.masked_fill(~positive, float("-inf")).amax(dim=1)
    hardest_negative = distances.masked_fill(~negative, float("inf")).amin(dim=1)
    return F.relu(hardest_positive - hardest_negative + margin)[valid].mean()
