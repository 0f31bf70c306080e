"""Ensemble building blocks (torch and faiss only, no Lightning): fusing member embeddings into one vector whose
inner products fuse the members' scores, cluster routing as an appended embedding block, k-means over
normalised features, per-member training-row weights (bootstrap, cluster partition) and seed-specific batch
augmentation.

Fusion rules (``FUSIONS``), each applied alike to queries and gallery so that one inner product scores a pair:

* ``mean``: normalise(mean_k e_k) of the normalised member embeddings e_k: the cosine of the averaged
  embeddings. Its score has cross-member terms e_k . f_l; it is NOT the mean of the members' cosines.
* ``concat``: [e_1, ..., e_K] / sqrt(K): its inner product is exactly (1/K) sum_k e_k . f_k, the mean of the
  members' cosines (score averaging), at K times the dimension.
* ``max``: normalise(element-wise max_k e_k): max pooling of the embeddings (the members start from one
  pretrained CLIP, so their coordinates stay roughly aligned). It is NOT the max of the members' cosines.

The max of the members' scores and reciprocal-rank fusion are not inner products of any per-item vectors
(the max is not bilinear; RRF needs each member's ranks over the whole gallery), so they cannot be expressed
through ``encode_query`` / ``encode_gallery`` without changing the evaluator: they are left out.

Routing (:func:`routing_block`): the gallery gets ``sqrt(boost) * onehot(its cluster)`` appended, a query
``sqrt(boost) * multihot(its nearest c clusters)``; the inner product of the appended blocks is ``boost`` when
the gallery item's cluster is among the query's nearest c and 0 otherwise. Scores are boosted, never masked: no
gallery item (and no positive) is ever removed.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F

FUSIONS = ("mean", "concat", "max")


def fuse(embeddings: list[torch.Tensor], how: str) -> torch.Tensor:
    """One embedding per row from the members' embeddings [N, D] each (normalised here first)."""
    if how not in FUSIONS:
        raise ValueError(f"unknown fusion '{how}'; expected one of {FUSIONS}")
    if not embeddings:
        raise ValueError("fuse needs at least one member embedding")
    normed = [F.normalize(e, dim=-1) for e in embeddings]
    if how == "concat":
        return torch.cat(normed, dim=-1) / math.sqrt(len(normed))
    stacked = torch.stack(normed)
    pooled = stacked.mean(dim=0) if how == "mean" else stacked.amax(dim=0)
    return F.normalize(pooled, dim=-1)


def nearest_clusters(features: torch.Tensor, centroids: torch.Tensor, count: int) -> torch.Tensor:
    """[N, count] indices of the ``count`` centroids most similar (inner product) to each normalised row."""
    scores = F.normalize(features, dim=-1) @ centroids.to(features.dtype).t()
    return scores.topk(min(count, centroids.shape[0]), dim=-1).indices


def routing_block(features: torch.Tensor, centroids: torch.Tensor, count: int, boost: float) -> torch.Tensor:
    """[N, k] block ``sqrt(boost)`` at each row's nearest ``count`` clusters, 0 elsewhere (see the module doc)."""
    if boost < 0:
        raise ValueError(f"routing boost must be >= 0, got {boost}")
    block = features.new_zeros(features.shape[0], centroids.shape[0])
    block.scatter_(1, nearest_clusters(features, centroids, count), math.sqrt(boost))
    return block


def kmeans(features: torch.Tensor, k: int, *, seed: int = 0, iterations: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical faiss k-means over L2-normalised ``features`` [N, D]: (centroids [k, D] normalised, cluster of each
    row [N]), deterministic for a seed."""
    import faiss

    if k < 1:
        raise ValueError(f"k-means needs k >= 1 clusters, got {k}")
    n = features.shape[0]
    if n < k:
        raise ValueError(f"k-means with k={k} needs at least {k} training images, found {n}")
    x = np.ascontiguousarray(F.normalize(features.detach().float(), dim=-1).cpu().numpy())
    model = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=int(seed) % (2**31), spherical=True, verbose=False,
                         max_points_per_centroid=max(256, math.ceil(n / k)))
    model.train(x)
    centroids = F.normalize(torch.from_numpy(np.array(model.centroids)).float(), dim=-1)
    assignment = (torch.from_numpy(x) @ centroids.t()).argmax(dim=1)
    return centroids.to(features.device), assignment.to(features.device)


def member_generator(seed: int, member: int, *salt: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, member id, salt): member k draws the same numbers whether it is
    trained alone or beside other members."""
    key = f"{seed}/{member}/" + "/".join(str(int(s)) for s in salt)
    value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return torch.Generator().manual_seed(value % (2**63))


def bootstrap_weights(n: int, member: int, seed: int) -> torch.Tensor:
    """[n] how often each training row is drawn in member ``member``'s bootstrap sample of size n (with
    replacement): 0 = out of bag (about 37 % of rows)."""
    draws = torch.randint(0, n, (n,), generator=member_generator(seed, member, 0))
    return torch.bincount(draws, minlength=n).float()


def cluster_weights(assignment: torch.Tensor, member: int, k: int, share: float, seed: int) -> torch.Tensor:
    """[n] 1 for the rows of image cluster ``member % k``, plus a seeded random ``share`` of the other rows."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"cluster share must be in [0, 1], got {share}")
    assignment = assignment.cpu()
    own = assignment == (member % k)
    extra = torch.rand(assignment.shape[0], generator=member_generator(seed, member, 1)) < share
    return (own | extra).float()


def augment_batch(images: torch.Tensor, generator: torch.Generator, min_area: float) -> torch.Tensor:
    """A random resized crop per image (area fraction in [min_area, 1], square, anywhere inside), resampled
    bilinearly to the input size, drawn from ``generator``; ``min_area >= 1`` returns the images unchanged."""
    if min_area >= 1.0:
        return images
    if not 0.0 < min_area:
        raise ValueError(f"member augmentation min_area must be in (0, 1], got {min_area}")
    b = images.shape[0]
    area = min_area + (1.0 - min_area) * torch.rand(b, generator=generator)
    side = area.sqrt()
    shift = (1.0 - side)[:, None] * (2 * torch.rand(b, 2, generator=generator) - 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = side, side, shift
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
