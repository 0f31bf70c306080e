"""Dataset adapters: each turns a dataset's files into canonical :class:`~fashion_bench.data.schema.Split`s.

An adapter is registered under the dataset names it serves, with the task and named evaluation protocol
that the dataset uses by default. Adapters never know which method consumes their data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fashion_bench.data.schema import Split


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str
    protocol: str
    loader: Callable[..., Callable[[str], Split]]  # (root, dataset, **args) -> load(split); load.image_root set
    default_root: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> None:
    REGISTRY[info.name] = info


def dataset_info(name: str) -> DatasetInfo:
    _load_builtin_adapters()
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset '{name}'; known datasets: {sorted(REGISTRY)}")
    return REGISTRY[name]


def open_dataset(name: str, root: str | Path | None, **kwargs: Any) -> tuple[DatasetInfo, Path, Callable[[str], Split]]:
    """Resolve a dataset's root and return (info, root, load_split)."""
    info = dataset_info(name)
    resolved = Path(root or info.default_root or "").expanduser()
    if not str(resolved):
        raise ValueError(f"dataset '{name}' needs --data.root (the folder holding its files)")
    return info, resolved, info.loader(resolved, name, **{**info.defaults, **kwargs})


def open_configured(
    dataset: str,
    root: str | Path | None,
    *,
    task: str | None = None,
    synthetic_preset: str = "tiny",
    synthetic_seed: int = 0,
    adapter_args: dict[str, Any] | None = None,
) -> tuple[DatasetInfo, Path, Callable[[str], Split]]:
    """:func:`open_dataset` from the data section of a config (``FashionDataModule`` and ``data verify``):
    the synthetic preset / seed and the task go to adapters that take them; unknown adapter_args are an error."""
    import inspect

    info = dataset_info(dataset)
    kwargs = dict(adapter_args or {})
    params = inspect.signature(info.loader).parameters
    if "preset" in params:
        kwargs.setdefault("preset", synthetic_preset)
        kwargs.setdefault("seed", synthetic_seed)
    if "task" in params and task:
        kwargs.setdefault("task", task)
    unknown = set(kwargs) - set(params)
    if unknown:
        raise ValueError(
            f"dataset '{dataset}' does not take adapter_args {sorted(unknown)}; it takes {sorted(set(params) - {'root', 'dataset'})}"
        )
    return open_dataset(dataset, root, **kwargs)


def _load_builtin_adapters() -> None:
    """Import every module of this package once: each registers the datasets it serves."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
