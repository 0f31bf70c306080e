"""The data layer: canonical records, adapters, the synthetic world and ``FashionDataModule``.

``FashionDataModule`` is exported lazily so that light commands (``fashion-bench data synth``) do not import
Lightning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FashionDataModule"]


def __getattr__(name: str) -> Any:
    if name == "FashionDataModule":
        from fashion_bench.data.datamodule import FashionDataModule

        return FashionDataModule
    raise AttributeError(name)
