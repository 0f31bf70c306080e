import math

import torch
import torch.nn.functional as F

from fashion_bench.losses import contrastive_loss


def test_contrastive_loss_matches_definition():
    torch.manual_seed(0)
    q, t = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    logits = 10 * q @ t.T
    expected = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5))) / 2
    torch.testing.assert_close(contrastive_loss(q, t, 10.0), expected)
    labels = torch.arange(5)
    torch.testing.assert_close(contrastive_loss(q, t, 10.0, query_labels=labels, target_labels=labels), expected)


def test_duplicate_labels_share_the_target_mass():
    q = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), dim=-1)
    labels = torch.tensor([7, 7])
    loss = contrastive_loss(q, q, 1.0, query_labels=labels, target_labels=labels, symmetric=False)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)  # two identical positives: uniform target


def test_supcon_loss_matches_hand_computed_oracle():
    from fashion_bench.losses import supcon_loss

    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    contrasts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # anchor 0: logits (1, 0, 1), positives 0 and 2; anchor 1: logits (0, 1, 0), positive 1; anchor 2 has no
    # positive (label 5) and is left out of the mean
    expected = ((math.log(2 * math.e + 1) - 1) + (math.log(math.e + 2) - 1)) / 2
    loss = supcon_loss(anchors, contrasts, torch.tensor([0, 1, 5]), torch.tensor([0, 1, 0]), 1.0)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    # a scale multiplies the logits: anchor 0 with scale 2 -> log(2e^2 + 1) - 2
    scaled = supcon_loss(anchors[:1], contrasts, torch.tensor([0]), torch.tensor([0, 1, 0]), 2.0)
    assert math.isclose(scaled.item(), math.log(2 * math.e**2 + 1) - 2, rel_tol=1e-6)


def test_supcon_loss_without_any_positive_is_an_error():
    import pytest

    from fashion_bench.losses import supcon_loss

    x = F.normalize(torch.randn(3, 4), dim=-1)
    with pytest.raises(ValueError, match="no anchor has a positive"):
        supcon_loss(x, x, torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), 1.0)


def test_batch_hard_triplet_loss_matches_hand_computed_oracle():
    from fashion_bench.losses import batch_hard_triplet_loss

    points = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # hardest (positive, negative) distances per anchor: (1, 3), (1, 2), (2, 2), (2, 4)
    assert math.isclose(batch_hard_triplet_loss(points, labels, margin=0.3).item(), 0.3 / 4, rel_tol=1e-5)
    assert math.isclose(batch_hard_triplet_loss(points, labels, margin=1.5).item(), (0.5 + 1.5) / 4, rel_tol=1e-5)
    # an anchor without a positive (label 2) is left out
    lone = batch_hard_triplet_loss(torch.cat([points, torch.tensor([[9.0]])]), torch.cat([labels, torch.tensor([2])]), margin=0.3)
    assert math.isclose(lone.item(), 0.3 / 4, rel_tol=1e-5)


def test_batch_hard_triplet_loss_gradient_is_finite_for_duplicate_features():
    from fashion_bench.losses import batch_hard_triplet_loss

    features = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [0.5, 0.5]], requires_grad=True)
    loss = batch_hard_triplet_loss(features, torch.tensor([0, 0, 1, 1]), margin=3.0)  # every anchor active
    loss.backward()
    assert torch.isfinite(features.grad).all() and loss.item() > 0


def test_batch_hard_triplet_loss_needs_positives_and_negatives():
    import pytest

    from fashion_bench.losses import batch_hard_triplet_loss

    with pytest.raises(ValueError, match="no anchor has both a positive and a negative"):
        batch_hard_triplet_loss(torch.randn(3, 2), torch.tensor([0, 1, 2]))
