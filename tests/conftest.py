"""Shared fixtures. ``fashion_bench`` is imported first: it sets offline defaults and the torchvision guard."""

from __future__ import annotations

import os

import fashion_bench  # noqa: F401  (must precede lightning / torchvision imports)
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The `tiny` synthetic world, generated once per test session."""
    from fashion_bench.data.synthetic import generate_world

    return generate_world(tmp_path_factory.mktemp("world") / "tiny-seed0", preset="tiny", seed=0, progress=False)


@pytest.fixture(scope="session")
def tiny_encoder():
    from fashion_bench.encoders import ClipEncoder

    return ClipEncoder("tiny-vit-64")
