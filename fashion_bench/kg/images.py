"""Representative images of each concept: prompt retrieval ("a photo of {concept}") then maximal marginal relevance.

Exact inner-product search keeps the ``candidates`` best images per concept; MMR then keeps ``keep`` of them: first
the best match, then repeatedly the candidate maximising ``(1 - diversity) * sim(candidate, concept) - diversity *
max sim(candidate, already kept)``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

PROMPT = "a photo of {}"


def concept_prompts(phrases: Sequence[str], template: str = PROMPT) -> list[str]:
    return [template.format(p) for p in phrases]


@torch.no_grad()
def encode_prompts(
    phrases: Sequence[str], tokenize: Callable, encode_text: Callable, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    """L2-normalised text features [C, D] of the concepts' prompts."""
    prompts = concept_prompts(phrases)
    chunks = [encode_text(tokenize(prompts[i : i + batch_size]).to(device)).float() for i in range(0, len(prompts), batch_size)]
    return F.normalize(torch.cat(chunks), dim=-1)


def mmr(relevance: torch.Tensor, candidates: torch.Tensor, keep: int, diversity: float) -> torch.Tensor:
    """Positions [C, keep] (into each concept's ``candidates`` [C, K, D], relevance [C, K] to their concept) of the
    kept candidates, for all concepts at once: ``keep`` steps of batched arg-max instead of a loop per concept
    (which took minutes per epoch for the ~4,000 concepts of the small world)."""
    rows = torch.arange(len(candidates), device=candidates.device)
    mutual = candidates @ candidates.transpose(1, 2)  # [C, K, K]
    best = relevance.argmax(dim=1)
    chosen, redundancy = [best], mutual[rows, :, best]  # max similarity to the kept ones, [C, K]
    left = torch.ones_like(relevance, dtype=torch.bool)
    left[rows, best] = False
    for _ in range(1, min(keep, candidates.shape[1])):
        score = ((1 - diversity) * relevance - diversity * redundancy).masked_fill(~left, float("-inf"))
        best = score.argmax(dim=1)
        chosen.append(best)
        left[rows, best] = False
        redundancy = torch.maximum(redundancy, mutual[rows, :, best])
    return torch.stack(chosen, dim=1)


@torch.no_grad()
def concept_images(
    concepts: torch.Tensor, images: torch.Tensor, *, candidates: int = 20, keep: int = 10, diversity: float = 0.8,
    chunk: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image indices [C, keep], their similarity to the concept [C, keep]) for normalised ``concepts`` [C, D] and
    ``images`` [N, D]. With fewer than ``keep`` images, every image is kept."""
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"MMR diversity must be in [0, 1], got {diversity}")
    if keep < 1 or candidates < keep:
        raise ValueError(f"need 1 <= keep <= candidates, got keep={keep}, candidates={candidates}")
    images = F.normalize(images.float(), dim=-1)
    k = min(candidates, len(images))
    kept = min(keep, k)
    index = torch.empty(len(concepts), kept, dtype=torch.long, device=images.device)
    score = torch.empty(len(concepts), kept, device=images.device)
    for start in range(0, len(concepts), chunk):
        block = concepts[start : start + chunk].float()
        top_score, top_index = (block @ images.t()).topk(k, dim=1)
        chosen = mmr(top_score, images[top_index], kept, diversity)
        index[start : start + len(block)] = top_index.gather(1, chosen)
        score[start : start + len(block)] = top_score.gather(1, chosen)
    return index, score
