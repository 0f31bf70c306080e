"""``FashionDataModule``: the one data layer for the three tasks.

Training loaders: image-text pairs (``t2i``), identity-balanced P x K batches (``id``, or any task with
``sampler: pk``), composed triplets (``cir``). Evaluation: separate gallery, query-text and reference-image
loaders per split, plus the metadata the evaluator needs (:meth:`eval_split`). The images' size and
normalisation and the tokenizer come from the method being trained (its encoder), via :meth:`setup`.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from fashion_bench.contracts import TASKS, Preprocessing, query_kind
from fashion_bench.data.adapters import open_configured
from fashion_bench.data.datasets import (
    EvalImageDataset,
    SampleLabels,
    ImageLoader,
    PairDataset,
    QueryTextDataset,
    TripletDataset,
)
from fashion_bench.data.samplers import EpochShuffleSampler, IdentityBatchSampler
from fashion_bench.data.schema import DataError, Split
from fashion_bench.data.store import arrow_rows
from fashion_bench.data.transforms import Degradation, build_image_transform, image_available
from fashion_bench.retrieval.protocols import PROTOCOLS, get_protocol

log = logging.getLogger(__name__)

STAGE_SPLIT_ATTR = {"fit": "val_split", "validate": "val_split", "test": "test_split", "predict": "test_split"}


@dataclass
class EvalSplit:
    """One evaluation split, ready for the evaluator: loaders plus the ids and relations between them."""

    name: str
    split: Split
    gallery_ids: list[str]
    gallery_loader: DataLoader
    query_loader: DataLoader
    reference_ids: list[str]  # query images that are not gallery items (encoded separately, once each)
    reference_loader: DataLoader | None

    @property
    def queries(self):
        return self.split.queries


class FashionDataModule(pl.LightningDataModule):
    def __init__(
        self,
        dataset: str = "synth-t2i",
        root: str | None = None,
        task: str | None = None,
        protocol: str | dict[str, Any] | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 2,
        sampler: str | None = None,
        pk_identities: int = 16,
        pk_instances: int = 4,
        synthetic_preset: str = "tiny",
        synthetic_seed: int = 0,
        skip_missing_images: bool = False,
        target_pad_ratio: float | None = None,
        train_augment: bool = False,
        cache_dir: str | None = None,
        adapter_args: dict[str, Any] | None = None,
        degrade: dict[str, Any] | None = None,
        degrade_on: str = "both",
        train_fraction: float = 1.0,
        max_train_items: int | None = None,
        seed: int = 0,
    ) -> None:
        """
        Args:
            dataset: registered dataset name (``synth-t2i``, ``synth-id``, ``synth-cir``, ``manifest``, ...).
            root: the dataset's folder (synthetic datasets default to a cache folder and are generated there).
            task: ``t2i`` | ``id`` | ``cir``; defaults to the dataset's task.
            protocol: a named protocol or a dict of protocol fields; defaults to the dataset's protocol.
            sampler: ``random`` or ``pk`` (P x K identity batches); default ``pk`` for ``id``, else ``random``.
            skip_missing_images: replace missing / corrupt images by a blank image and count them, instead of
                failing with the list of missing files.
            target_pad_ratio: TargetPad images whose aspect ratio exceeds this (CLIP4Cir uses 1.25).
            cache_dir: where manifests are cached as Arrow tables (default: memory only).
            degrade: low-quality images (``transforms.Degradation``: ``size: [60, 80]``, ``jpeg_quality``, ``blur``)
                applied on ``degrade_on``: ``train``, ``eval`` or ``both``.
            train_fraction / max_train_items: limited training data, a deterministic subset of the training split
                chosen by a hash of each identity (t2i / id; every image of a kept product stays) or query (cir).
            seed: seed of the training order and per-sample choices (set by the CLI from ``seed_everything``).
        """
        super().__init__()
        self.save_hyperparameters()
        self.dataset = dataset
        self.root = root
        self.info, self.resolved_root, self._load = self._open(dataset, root, task, synthetic_preset, synthetic_seed, adapter_args)
        self.task = task or self.info.task
        if self.task not in TASKS:
            raise ValueError(f"unknown task '{self.task}'; expected one of {TASKS}")
        self.protocol = self._check_protocol(protocol)
        self.sampler = sampler or ("pk" if self.task == "id" else "random")
        if self.sampler not in ("random", "pk"):
            raise ValueError(f"unknown sampler '{self.sampler}'; expected 'random' or 'pk'")
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.pk = (pk_identities, pk_instances)
        self.split_names = {"train": train_split, "val": val_split, "test": test_split}
        self.skip_missing_images = skip_missing_images
        self.target_pad_ratio, self.train_augment = target_pad_ratio, train_augment
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.degradation = Degradation(**{k: tuple(v) if isinstance(v, list) else v for k, v in (degrade or {}).items()}) if degrade else None
        if degrade_on not in DEGRADE_ON:
            raise ValueError(f"unknown degrade_on {degrade_on!r}; expected one of {DEGRADE_ON}")
        self.degrade_on = degrade_on
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
        if max_train_items is not None and max_train_items < 1:
            raise ValueError(f"max_train_items must be a positive integer, got {max_train_items!r}")
        self.train_fraction, self.max_train_items = train_fraction, max_train_items
        self.seed = seed
        self.preprocessing: Preprocessing | None = None
        self._splits: dict[str, Split] = {}
        self._eval: dict[str, EvalSplit] = {}
        self._train_rows = None
        self.failed_images: dict[str, int] = {}

    def _check_protocol(self, protocol: str | dict[str, Any] | None) -> str | dict[str, Any]:
        """The protocol spec to score with: the given one (its task must be this task), else the dataset's own
        when the task is the dataset's, else the task's default protocol (a bad name or field fails here)."""
        if protocol is None:
            protocol = self.info.protocol if self.task == self.info.task else self.task
        resolved = get_protocol(protocol)
        if resolved.task != self.task:
            raise ValueError(
                f"dataset '{self.dataset}': protocol '{resolved.name}' scores task '{resolved.task}', but the task is "
                f"'{self.task}'; pass a '{self.task}' protocol (e.g. --data.protocol {self.task}; registered: "
                f"{sorted(n for n, p in PROTOCOLS.items() if p.task == self.task)}) or leave --data.protocol unset"
            )
        return protocol

    @staticmethod
    def _open(dataset, root, task, preset, seed, adapter_args):
        return open_configured(
            dataset, root, task=task, synthetic_preset=preset, synthetic_seed=seed, adapter_args=adapter_args
        )

    # --- set-up ---------------------------------------------------------------------------------------------
    def split(self, role: str) -> Split:
        """The canonical split for ``role`` in {train, val, test} (loaded once)."""
        name = self.split_names[role]
        if name not in self._splits:
            split = self._load(name)
            if role == "train":
                split = limit_training(split, self.train_fraction, self.max_train_items)
            self._check_images(split)
            self._splits[name] = split
        return self._splits[name]

    def _check_images(self, split: Split) -> None:
        """Every image file (or HDF5 row, for image references) exists; see ``transforms.image_available``."""
        paths = ((i, self._image_path(it.image)) for i, it in split.items.items() if not isinstance(it.image, bytes))
        missing = [(i, p) for i, p in paths if not image_available(p)]
        if not missing:
            return
        listing = "; ".join(f"item '{i}': {p}" for i, p in missing[:10])
        if not self.skip_missing_images:
            raise DataError(
                f"split '{split.name}' of dataset '{self.dataset}': {len(missing)} of {len(split.items)} image files are "
                f"missing ({listing}{' ...' if len(missing) > 10 else ''}). Fix the copy, or pass "
                "--data.skip_missing_images true to replace them by blank images and count them."
            )
        log.warning("split '%s': %d missing images will be replaced by blank images (%s)", split.name, len(missing), listing)

    def _image_path(self, image: str) -> Path:
        path = Path(image)
        return path if path.is_absolute() else self.resolved_root_for_images / path

    @property
    def resolved_root_for_images(self) -> Path:
        """Relative image paths in a split resolve against the adapter's image root."""
        return Path(self._load.image_root)

    def attach_preprocessing(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing

    def setup(self, stage: str | None = None) -> None:
        module = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        if module is not None and hasattr(module, "check_supports"):
            module.check_supports(self.task, self.query_kinds(stage), self.dataset)
        if self.preprocessing is None:
            if module is None or not hasattr(module, "preprocessing"):
                raise RuntimeError("FashionDataModule needs preprocessing: attach it with attach_preprocessing() or train a RetrievalMethod")
            self.attach_preprocessing(module.preprocessing())

    def query_kinds(self, stage: str | None) -> set[str]:
        """The query kinds (contracts.QUERY_KINDS) a method must embed for ``stage``: those of its evaluation
        split, plus the composed queries of ``cir`` training."""
        split = self.split("test" if stage in ("test", "predict") else "val")
        kinds = {query_kind(bool(_joined(q.text)), q.image is not None) for q in split.queries}
        if stage in ("fit", None) and self.task == "cir":
            kinds.add("image+text")
        return kinds

    def count_failed_images(self, role: str, count: int) -> None:
        """Images that failed to load (replaced by blank ones with skip_missing_images), by where they were used."""
        self.failed_images[role] = self.failed_images.get(role, 0) + int(count)

    def _images(self, train: bool) -> ImageLoader:
        assert self.preprocessing is not None
        spec = self.preprocessing.image_spec
        transform = build_image_transform(spec, train=train, target_pad_ratio=self.target_pad_ratio, augment=self.train_augment)
        degrade = self.degradation if self.degrade_on in ("both", "train" if train else "eval") else None
        return ImageLoader(self.resolved_root_for_images, transform, image_size=spec.size,
                           skip_missing=self.skip_missing_images, degrade=degrade)

    def _rows(self, kind: str, rows: list[dict[str, Any]]):
        return arrow_rows(kind, rows, self.cache_dir)

    def _loader(self, dataset, *, batch_size: int, sampler=None, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=False,
            pin_memory=False,
        )

    # --- training -------------------------------------------------------------------------------------------
    def _progress(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.completed

    def train_dataset(self, *, train_transforms: bool = True, decode_images: bool = True):
        """The training dataset and, for image-text pairs, each row's identity. ``train_transforms=False`` gives
        the evaluation transforms (e.g. to extract features of the training images once); ``decode_images=False``
        leaves the pixels out of image-text pairs."""
        split = self.split("train")
        assert self.preprocessing is not None
        tokenize = self.preprocessing.tokenize
        if self.task == "cir":
            if not split.queries:
                raise DataError(f"dataset '{self.dataset}' split '{split.name}': composed training needs triplets (queries), found none")
            rows = self._rows("triplets", [_query_row(q) for q in split.queries])
            items = {i: {"image": it.image} for i, it in split.items.items()}
            return TripletDataset(rows, items, self._images(train=train_transforms), tokenize, seed=self.seed), None
        if not split.gallery:
            raise DataError(f"dataset '{self.dataset}' split '{split.name}' has no training images")
        records = [_item_row(split.items[i]) for i in split.gallery]
        labels = SampleLabels(
            identities=_vocabulary(r["identity"] for r in records),
            categories=self.categories,
            attributes=self.attribute_vocab,
        )
        rows = self._rows("pairs", records)
        images = self._images(train=train_transforms) if decode_images else None
        views = _identity_views(records) if self.preprocessing.views > 1 else None
        dataset = PairDataset(
            rows, images, tokenize, labels, seed=self.seed, views=self.preprocessing.views, view_candidates=views,
            fields=self.preprocessing.sample_fields,
        )
        return dataset, [r["identity"] for r in records]

    def image_dataset(self, role: str) -> tuple[list[str], EvalImageDataset]:
        """(item ids, dataset of their images with the evaluation transforms) of a split's gallery; for ``train``
        the training images, in the order of the training dataset's rows."""
        split = self.split(role)
        ids = list(split.gallery)
        if not ids:
            raise DataError(f"dataset '{self.dataset}' split '{split.name}' has no images to encode")
        rows = self._rows("images", [_item_row(split.items[i]) for i in ids])
        return ids, EvalImageDataset(rows, self._images(train=False))

    @property
    def categories(self) -> list[str]:
        """Sorted categories of the training images (``category`` labels of training samples index this)."""
        split = self.split("train")
        return _vocabulary(split.items[i].category for i in split.gallery)

    @property
    def attribute_vocab(self) -> dict[str, list[str]]:
        """Attribute name -> sorted values over the training images (``attributes`` labels index these; -1 when an
        item lacks the attribute)."""
        split = self.split("train")
        values: dict[str, set[str]] = {}
        for item_id in split.gallery:
            for name, value in split.items[item_id].attributes.items():
                values.setdefault(str(name), set()).add(str(value))
        return {name: sorted(values[name]) for name in sorted(values)}

    @property
    def num_identities(self) -> int:
        split = self.split("train")
        return len({split.items[i].identity for i in split.gallery})

    def train_dataloader(self) -> DataLoader:
        assert self.preprocessing is not None
        dataset, identities = self.train_dataset(decode_images=self.preprocessing.train_images)
        ranks = dict(num_replicas=self.trainer.world_size if self.trainer else 1, rank=self.trainer.global_rank if self.trainer else 0)
        if self.sampler == "pk":
            if identities is None:
                raise ValueError("sampler 'pk' needs identity-labelled training images (tasks t2i / id)")
            p, k = self.pk
            sampler = IdentityBatchSampler(identities, p, k, seed=self.seed, progress=self._progress, **ranks)
            batch_size = p * k
        else:
            batch_size = min(self.batch_size, len(dataset))
            sampler = EpochShuffleSampler(len(dataset), batch_size, seed=self.seed, progress=self._progress, **ranks)
        return self._loader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)

    # --- evaluation -----------------------------------------------------------------------------------------
    def eval_split(self, role: str) -> EvalSplit:
        """Loaders and metadata of the ``val`` or ``test`` split (built once)."""
        if role not in self._eval:
            split = self.split(role)
            if not split.queries:
                raise DataError(f"dataset '{self.dataset}' split '{split.name}' has no queries to evaluate")
            gallery = split.gallery
            in_gallery = set(gallery)
            references = sorted({q.image for q in split.queries if q.image is not None and q.image not in in_gallery})
            images = self._images(train=False)
            assert self.preprocessing is not None
            gallery_rows = self._rows("gallery", [_item_row(split.items[i]) for i in gallery])
            query_rows = self._rows("queries", [_query_row(q) for q in split.queries])
            self._eval[role] = EvalSplit(
                name=split.name,
                split=split,
                gallery_ids=gallery,
                gallery_loader=self._loader(EvalImageDataset(gallery_rows, images), batch_size=self.eval_batch_size),
                query_loader=self._loader(QueryTextDataset(query_rows, self.preprocessing.tokenize), batch_size=self.eval_batch_size),
                reference_ids=references,
                reference_loader=self._loader(
                    EvalImageDataset(self._rows("references", [_item_row(split.items[i]) for i in references]), images),
                    batch_size=self.eval_batch_size,
                )
                if references
                else None,
            )
        return self._eval[role]

    def val_dataloader(self) -> DataLoader:
        return self.eval_split("val").gallery_loader

    def test_dataloader(self) -> DataLoader:
        return self.eval_split("test").gallery_loader

    def predict_dataloader(self) -> DataLoader:
        return self.eval_split("test").gallery_loader


DEGRADE_ON = ("train", "eval", "both")


def limit_training(split: Split, fraction: float, max_items: int | None) -> Split:
    """A deterministic subset of a training split: identities (t2i / id) or queries (cir) ordered by a hash of
    their id, the first ``fraction`` of them, then at most ``max_items`` images (queries for cir)."""
    if fraction >= 1.0 and max_items is None:
        return split

    def rank(key: str) -> int:
        return zlib.crc32(key.encode())

    if split.queries:
        queries = sorted(split.queries, key=lambda q: rank(q.query_id))[: max(1, int(len(split.queries) * fraction))]
        position = {id(q): n for n, q in enumerate(split.queries)}
        queries = sorted(queries[:max_items], key=lambda q: position[id(q)])
        used = {i for q in queries for i in (*q.positives, *q.exclude, *q.subset, *([q.image] if q.image else []))}
        gallery = [i for i in split.gallery if i in used]
        return Split(split.name, {i: split.items[i] for i in used | set(gallery)}, gallery, queries)
    identities = sorted({split.items[i].identity for i in split.gallery}, key=rank)
    kept = set(identities[: max(1, int(len(identities) * fraction))])
    gallery = [i for i in split.gallery if split.items[i].identity in kept][:max_items]
    return Split(split.name, {i: split.items[i] for i in gallery}, gallery, [])


def _item_row(item) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "image": str(item.image),
        "text": list(item.text),
        "identity": item.identity,
        "domain": item.domain,
        "category": item.category,
        "attributes": json.dumps({str(k): str(v) for k, v in item.attributes.items()}, sort_keys=True),
    }


def _joined(texts: list[str]) -> str:
    return " ".join(t.strip() for t in texts if t and t.strip())


def _vocabulary(values) -> list[str]:
    return sorted(set(values))


def _identity_views(records: list[dict[str, Any]]) -> list[list[int]]:
    """Per training row, the other rows of the same identity (extra views of a sample)."""
    by_identity: dict[str, list[int]] = {}
    for n, r in enumerate(records):
        by_identity.setdefault(r["identity"], []).append(n)
    return [[m for m in by_identity[r["identity"]] if m != n] for n, r in enumerate(records)]


def _query_row(query) -> dict[str, Any]:
    return {"query_id": query.query_id, "image": query.image or "", "text": list(query.text), "positives": list(query.positives)}
