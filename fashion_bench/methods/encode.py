""""Encode this split with the current model": the one service every method uses for features of a split's images
(multi-prompt's frozen training features, ENCLIP's clustering, FashionKLIP's concept prototypes).

Each image is encoded once: ranks take interleaved shares of the split, and the shares are gathered so that
every rank ends with all features in split order. The data layer is reached through the Trainer's datamodule
(duck-typed: anything with ``image_dataset(role)`` and the loader settings), so methods never import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

if TYPE_CHECKING:
    import lightning.pytorch as pl


def gather_objects(trainer: pl.Trainer, obj: object) -> list:
    """Every rank's ``obj`` in rank order (picklable objects of any size); ``[obj]`` in one process."""
    if trainer.world_size == 1:
        return [obj]
    import torch.distributed as dist

    shares: list = [None] * trainer.world_size
    dist.all_gather_object(shares, obj)
    return shares


def all_gather_rows(trainer: pl.Trainer, index: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, values) of every rank concatenated (shares may differ in size); identity in one process."""
    if trainer.world_size == 1:
        return index, values
    shares = [s for s in gather_objects(trainer, (index.cpu(), values.cpu())) if len(s[0])]  # a rank may have none
    return torch.cat([s[0] for s in shares]), torch.cat([s[1] for s in shares])


def rank_share(size: int, trainer: pl.Trainer | None) -> list[int]:
    """The positions of ``range(size)`` this rank handles (interleaved, so shares differ by at most one)."""
    if trainer is None or trainer.world_size == 1:
        return list(range(size))
    return list(range(trainer.global_rank, size, trainer.world_size))


@torch.no_grad()
def encode_split(
    module: pl.LightningModule, role: str, encode: Callable[[torch.Tensor], torch.Tensor], *, desc: str | None = None
) -> tuple[list[str], torch.Tensor]:
    """(item ids, float32 features [N, D] on the module's device) of the images of split ``role``."""
    trainer = module.trainer
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not hasattr(datamodule, "image_dataset"):
        raise ValueError(f"{type(module).__name__} encodes a split of the data: run it with a FashionDataModule")
    ids, dataset = datamodule.image_dataset(role)
    loader = DataLoader(
        Subset(dataset, rank_share(len(dataset), trainer)),
        batch_size=datamodule.eval_batch_size,
        num_workers=datamodule.num_workers,
    )
    was_training = module.training
    module.eval()
    index_chunks, feature_chunks, failed = [], [], 0
    bar = tqdm(loader, desc=desc or f"encoding {len(ids)} {role} images", leave=False, disable=trainer.global_rank != 0)
    with trainer.precision_plugin.forward_context():
        for batch in bar:
            feature_chunks.append(encode(batch["image"].to(module.device)).float())
            index_chunks.append(batch["index"].to(module.device))
            failed += int((~batch["image_ok"].bool()).sum())
    module.train(was_training)
    index = torch.cat(index_chunks) if index_chunks else torch.zeros(0, dtype=torch.long, device=module.device)
    features = torch.cat(feature_chunks) if feature_chunks else torch.zeros(0, device=module.device)
    index, features = all_gather_rows(trainer, index, features)
    out = torch.empty(len(ids), features.shape[-1], device=module.device)
    out[index.to(module.device)] = features.to(module.device)
    failed = sum(gather_objects(trainer, failed))
    if failed and hasattr(datamodule, "count_failed_images"):
        datamodule.count_failed_images(role, failed)
    return ids, out
