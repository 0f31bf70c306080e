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
